"""Read an offline W&B run back: the records of its .wandb file, decoded with wandb's own protobuf schema.

wandb 0.31 ships no Python reader (its writer is the wandb-core binary). The file is LevelDB's log format, as
wandb writes it: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with
a CRC32C (4 bytes), a length (2), a type (1: full, 2: first, 3: middle, 4: last) and its bytes; a block tail
too short for a chunk header is zero padding.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every record of a .wandb file as wandb.proto.wandb_internal_pb2.Record, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:7] == HEADER, f"{path}: not a W&B run file (header {data[:7]!r})"
    out, pos, parts = [], 7, []
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += room
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
    return out


def history_keys(recs) -> dict[str, object]:
    """Every key logged with run.log and its last value; a media or table value (which the file stores one
    field per item, under nested keys) comes back as one dict."""
    import json

    out: dict[str, object] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                value = json.loads(item.value_json)
                if item.key:
                    out[item.key] = value
                else:
                    *head, field = item.nested_key
                    out.setdefault("/".join(head), {})[field] = value
    return out


def artifacts(recs) -> dict[str, dict]:
    """Every artifact the run logged: name -> {"type", "files"}."""
    return {r.artifact.name: {"type": r.artifact.type, "files": [m.path for m in r.artifact.manifest.contents]}
            for r in recs if r.WhichOneof("record_type") == "artifact"}
