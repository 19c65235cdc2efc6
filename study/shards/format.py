"""The on-disk shard format of a prepared data set: what `study prepare` writes and training reads.

A shard set is a folder holding, per split (`train`, `heldout`), shards of at most `shard_size` samples
    NAME.latents.npy   float16 [n, C, H, W]  (memory-mappable)
    NAME.tokens.npy    int32 [n, T]          (each caption's token ids, -1 where the encoder masks; data.captions
                                             = tokens, the default: the training step runs the text encoder)
 or NAME.context.npy   float16 [n, T, D]     (the text encoder's hidden states of each caption; data.captions = states)
    NAME.meta.jsonl    one {"key", "caption", "label"} object per sample
    NAME.images.npy    uint8 [n, C, H, W]    (optional: heldout shards, for FID statistics)
    NAME.done.json     the shard's record, written last: its presence marks the shard complete
and `index.json`, written last of all (its "captions" says which caption file the shards have). A
streamed set's shards belong to one source each (a tar, a parquet file: NAME = {split}-{source:06d}-{k:05d})
and hold its samples in the order they were read;
every shard of a source but its last holds exactly `shard_size` samples. Embedded sets are one source
(NAME = {split}-{k:06d}). The shards are a function of the data set, whatever the number of workers
that wrote them; the training reader shuffles across them (trainers/data.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.atomic import write_atomic, write_json
from study.identity import sha256_file

VERSION = 2  # 2: shards in arrival order, one source each (1: one global key-hash order)
SPLITS = ("train", "heldout")
INDEX = "index.json"
UNCOND = "uncond.npy"
FILES = ("latents", "meta")  # every shard has these and its caption file; "images" is optional
CAPTION_FILE = {"states": "context", "tokens": "tokens"}  # data.captions -> the caption file's kind
SUFFIX = {"latents": ".latents.npy", "context": ".context.npy", "tokens": ".tokens.npy", "meta": ".meta.jsonl",
          "images": ".images.npy", "done": ".done.json"}


def caption_storage(context: np.ndarray) -> str:
    """"tokens" for integer token ids, "states" for hidden states."""
    return "tokens" if np.issubdtype(np.asarray(context).dtype, np.integer) else "states"


def shard_name(split: str, k: int, source: int | None = None) -> str:
    """The name of shard k of a split (train-000003), or of a source's split (train-000012-00003)."""
    return f"{split}-{k:06d}" if source is None else f"{split}-{source:06d}-{k:05d}"


def shard_paths(folder: str | Path, name: str) -> dict[str, Path]:
    """The paths of one shard's files, by kind (latents, context, meta, images, done)."""
    folder = Path(folder)
    return {kind: folder / f"{name}{suffix}" for kind, suffix in SUFFIX.items()}


def _key_digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def sample_order(key: str) -> tuple[int, str]:
    """The sort key of an embedded set's samples inside a split: a stable hash of its key (ties broken by the key)."""
    return _key_digest(key), key


def split_of(key: str, eval_fraction: float, seed: int) -> str:
    """"heldout" for a stable-hash fraction `eval_fraction` of the keys, else "train" (no state needed)."""
    return "heldout" if _key_digest(f"{seed}:{key}") / 2.0**64 < eval_fraction else "train"


def _save_npy(path: Path, arr: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, arr))


def write_shard(folder: str | Path, name: str, latents: np.ndarray, context: np.ndarray, meta: list[dict],
                images: np.ndarray | None = None, extra: dict | None = None) -> dict:
    """Write one shard, each file atomically, then its done record; returns {"name", "n", "sha256"}.

    `context` is the captions' token ids (integers: written as NAME.tokens.npy, int32) or their hidden states
    (floats: NAME.context.npy, float16). The done record (written last) carries the SHA-256 of the latents
    file: a shard counts as done only when every file exists and the latents match it (see `shard_done`)."""
    n = len(latents)
    if len(context) != n or len(meta) != n or (images is not None and len(images) != n):
        raise ValueError(f"shard {name}: latents ({n}), context ({len(context)}), meta ({len(meta)})"
                         + ("" if images is None else f", images ({len(images)})") + " differ in length")
    for row in meta:
        if set(row) - {"key", "caption", "label"} or "key" not in row or "caption" not in row:
            raise ValueError(f"shard {name}: meta rows need exactly key, caption, label; got {sorted(row)}")
    paths = shard_paths(folder, name)
    Path(folder).mkdir(parents=True, exist_ok=True)
    captions = caption_storage(context)
    kind = CAPTION_FILE[captions]
    _save_npy(paths[kind], np.ascontiguousarray(context, dtype=np.int32 if captions == "tokens" else np.float16))
    for other in set(CAPTION_FILE.values()) - {kind}:
        paths[other].unlink(missing_ok=True)  # a stale file from an earlier write with the other storage
    lines = "".join(json.dumps({"key": str(r["key"]), "caption": str(r["caption"]),
                                "label": None if r.get("label") is None else int(r["label"])},
                               ensure_ascii=False) + "\n" for r in meta)
    write_atomic(paths["meta"], lambda f: f.write(lines), binary=False)
    if images is not None:
        _save_npy(paths["images"], np.ascontiguousarray(images, dtype=np.uint8))
    elif paths["images"].exists():
        paths["images"].unlink()  # a stale file from an earlier, different write
    _save_npy(paths["latents"], np.ascontiguousarray(latents, dtype=np.float16))
    record = {"name": name, "n": n, "sha256": sha256_file(paths["latents"]), "images": images is not None,
              "captions": captions}
    write_json(paths["done"], {**record, **(extra or {})})
    return {k: record[k] for k in ("name", "n", "sha256")}


def shard_done(folder: str | Path, name: str, sha256: str | None = None) -> dict | None:
    """The shard's done record if it is complete (all files there, latents hash as recorded), else None."""
    paths = shard_paths(folder, name)
    if not paths["done"].exists():
        return None
    try:
        record = json.loads(paths["done"].read_text())
    except json.JSONDecodeError:
        return None
    need = [*FILES, CAPTION_FILE[record.get("captions", "states")]] + (["images"] if record.get("images") else [])
    if any(not paths[k].exists() for k in need):
        return None
    if sha256 is not None and record.get("sha256") != sha256:
        return None
    if sha256_file(paths["latents"]) != record.get("sha256"):
        return None
    return record


def write_index(folder: str | Path, shard_size: int, latent_shape, context_shape, splits: dict[str, list[dict]],
                bad_samples: int, captions: str = "states", **extra) -> None:
    """Write index.json (atomically, after every shard): the shard list of each split with its hashes.
    context_shape is the text encoder's output [T, D] whichever caption file the shards keep (`captions`)."""
    index = {"version": VERSION, "shard_size": int(shard_size), "latent_shape": [int(v) for v in latent_shape],
             "context_shape": [int(v) for v in context_shape], "captions": captions,
             "splits": {s: {"n": int(sum(r["n"] for r in recs)), "shards": [dict(r) for r in recs]}
                        for s, recs in splits.items()},
             "uncond": UNCOND, "bad_samples": int(bad_samples), **extra}
    write_json(Path(folder) / INDEX, index)


@dataclass
class ShardIndex:
    """A validated index.json: the shards of each split, their sizes and shapes."""

    folder: Path
    raw: dict

    @classmethod
    def load(cls, folder: str | Path, verify_hashes: bool = False) -> "ShardIndex":
        """Read and check index.json and the shards it names; `verify_hashes` also re-hashes each latents file."""
        folder = Path(folder)
        path = folder / INDEX
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: the shard set is incomplete (index.json is written "
                                    f"last); rerun `study prepare` with the same config")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}); rerun `study prepare`") from None
        if raw.get("version") != VERSION:
            raise ValueError(f"{path}: shard format version {raw.get('version')!r}, this code reads {VERSION}: "
                             f"rerun `study prepare` to rewrite the shards")
        missing = [k for k in ("shard_size", "latent_shape", "context_shape", "splits", "uncond") if k not in raw]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}; rerun `study prepare`")
        index = cls(folder, raw)
        index._check(verify_hashes)
        return index

    def _check(self, verify_hashes: bool) -> None:
        size = self.shard_size
        if not (self.folder / self.raw["uncond"]).exists():
            raise FileNotFoundError(f"{self.folder / self.raw['uncond']} not found: rerun `study prepare`")
        for split, entry in self.raw["splits"].items():
            shards = entry["shards"]
            if sum(s["n"] for s in shards) != entry["n"]:
                raise ValueError(f"{self.folder / INDEX}: split {split} says n={entry['n']} but its shards hold "
                                 f"{sum(s['n'] for s in shards)}; rerun `study prepare`")
            for i, s in enumerate(shards):
                # a shard may be short only where its source ends (the next shard is another source's, or none)
                last = i == len(shards) - 1 or shards[i + 1].get("source") != s.get("source")
                if (not last and s["n"] != size) or not 0 < s["n"] <= size:
                    raise ValueError(f"{self.folder / INDEX}: shard {s['name']} holds {s['n']} samples; every "
                                     f"shard but the last of its source must hold shard_size={size}; rerun "
                                     f"`study prepare`")
                paths = shard_paths(self.folder, s["name"])
                gone = [str(paths[k]) for k in (*FILES, self.caption_file) if not paths[k].exists()]
                if gone:
                    raise FileNotFoundError(f"shard {s['name']} lacks {', '.join(gone)}: rerun `study prepare`")
                if verify_hashes and sha256_file(paths["latents"]) != s["sha256"]:
                    raise ValueError(f"{paths['latents']} does not match the sha256 in index.json: the file "
                                     f"changed after prepare; rerun `study prepare`")

    @property
    def shard_size(self) -> int:
        return int(self.raw["shard_size"])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.raw["latent_shape"])

    @property
    def context_shape(self) -> tuple[int, ...]:
        """The text encoder's hidden states of one caption, [T, D] (what the UNet's cross-attention reads)."""
        return tuple(self.raw["context_shape"])

    @property
    def captions(self) -> str:
        """What the shards keep of each caption: "tokens" (token ids) or "states" (hidden states; sets written
        before the choice existed)."""
        return self.raw.get("captions", "states")

    @property
    def caption_file(self) -> str:
        return CAPTION_FILE[self.captions]

    @property
    def caption_shape(self) -> tuple[int, ...]:
        """One sample's row of the caption file: [T] token ids or [T, D] hidden states."""
        return self.context_shape[:1] if self.captions == "tokens" else self.context_shape

    def splits(self) -> list[str]:
        return list(self.raw["splits"])

    def n(self, split: str) -> int:
        """Samples in a split."""
        return int(self.raw["splits"][split]["n"]) if split in self.raw["splits"] else 0

    def shards(self, split: str) -> list[dict]:
        """The shard records ({"name", "n", "sha256"[, "source"]}) of a split, in the order written."""
        return list(self.raw["splits"].get(split, {}).get("shards", []))

    def paths(self, name: str) -> dict[str, Path]:
        return shard_paths(self.folder, name)

    def latents(self, name: str) -> np.ndarray:
        """A shard's latents, memory-mapped."""
        return np.load(self.paths(name)["latents"], mmap_mode="r")

    def context(self, name: str) -> np.ndarray:
        """A shard's captions, memory-mapped: int32 token ids [n, T] or float16 hidden states [n, T, D] (`captions`)."""
        return np.load(self.paths(name)[self.caption_file], mmap_mode="r")

    def images(self, name: str) -> np.ndarray | None:
        """A shard's uint8 images (memory-mapped) where it has them, else None."""
        p = self.paths(name)["images"]
        return np.load(p, mmap_mode="r") if p.exists() else None

    def meta(self, name: str) -> list[dict]:
        """A shard's per-sample {"key", "caption", "label"} rows."""
        lines = self.paths(name)["meta"].read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def uncond(self) -> np.ndarray:
        """The empty prompt's hidden states [1, T, D]."""
        return np.load(self.folder / self.raw["uncond"])
