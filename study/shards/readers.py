"""Streaming readers of image-caption sets: WebDataset tar shards (as img2dataset writes them), parquet
with an image-bytes column, and the HF image folder, from local or shared paths or `s3://`, one code path
through fsspec. A data set is a list of sources (a tar, a parquet file, a slice of an image folder), each
read on its own as a stream of records, so memory never depends on the data-set size.

For `s3://`, credentials and the endpoint come from the usual AWS environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for an S3-compatible store), as every AWS client reads them.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
import time
from dataclasses import dataclass
from typing import Iterator

import fsspec

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
LAYOUTS = ("webdataset", "parquet", "imagefolder")
FOLDER_SLICE = 1000  # rows of an image folder per source: small enough to spread over workers


@dataclass(frozen=True)
class Source:
    """One independently readable piece of a data set."""

    id: str  # stable name, used in the prepare report and the resume markers
    layout: str
    path: str  # a file (tar, parquet) or the image folder's root
    start: int = 0  # imagefolder: the slice of metadata.jsonl rows
    stop: int = 0


@dataclass
class Record:
    """One sample as read: image bytes and caption, or the reason it cannot be used."""

    key: str
    image: bytes | None
    caption: str | None
    label: int | None = None
    problem: str | None = None  # set for a bad sample: why it is skipped


def _fs(path: str):
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root


def _url(fs, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def check_exists(path: str, what: str = "data.root") -> None:
    """Fail with one line, before any work, when a data path does not exist."""
    try:
        fs, p = _fs(path)
        ok = fs.exists(p)
    except Exception as err:  # noqa: BLE001 - a bad URL or credentials: one line naming the path
        raise ValueError(f"{what}={path}: cannot be read ({type(err).__name__}: {err})") from None
    if not ok:
        raise ValueError(f"{what}={path} does not exist: point it at the folder of the data set")


def list_sources(layout: str, root: str) -> list[Source]:
    """The sources of a data set, in a stable order (sorted paths)."""
    if layout not in LAYOUTS:
        raise ValueError(f"data.layout={layout!r}: expected one of {', '.join(LAYOUTS)}")
    check_exists(root)
    fs, base = _fs(root)
    if layout == "imagefolder":
        n = sum(1 for line in _read_lines(fs, posixpath.join(base, "metadata.jsonl"), root) if line.strip())
        return [Source(f"rows-{a:09d}", layout, root, a, min(a + FOLDER_SLICE, n))
                for a in range(0, n, FOLDER_SLICE)]
    ext = ".tar" if layout == "webdataset" else ".parquet"
    # a single file, or the files under a folder (over HTTP a folder's listing page is itself a "file")
    files = [base] if base.endswith(ext) and fs.isfile(base) else sorted(p for p in fs.find(base) if p.endswith(ext))
    if not files:
        raise ValueError(f"data.root={root}: no {ext} files there (data.layout={layout})")
    return [Source(posixpath.relpath(p, base) if p != base else posixpath.basename(p), layout, _url(fs, p))
            for p in files]


def _read_lines(fs, path: str, root: str) -> list[str]:
    if not fs.exists(path):
        raise ValueError(f"{root}: no metadata.jsonl: an image folder needs one "
                         '{"file_name": ..., "text": ...} object per line (the HF imagefolder layout)')
    with fs.open(path, "rb") as f:
        return f.read().decode("utf-8").splitlines()


def _caption(raw) -> tuple[str | None, str | None]:
    """(caption, problem): a caption must be present, UTF-8 and not blank."""
    if raw is None:
        return None, "missing caption"
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None, "caption is not UTF-8"
    text = str(raw).strip()
    return (text, None) if text else (None, "empty caption")


def _label(raw) -> int | None:
    try:
        return None if raw is None else int(raw)
    except (TypeError, ValueError):
        return None


def read_source(src: Source, image_column: str = "jpg", caption_column: str = "txt",
                key_column: str = "key", label_column: str = "label") -> Iterator[Record]:
    """Stream the records of one source."""
    if src.layout == "webdataset":
        yield from _read_tar(src)
    elif src.layout == "parquet":
        yield from _read_parquet(src, image_column, caption_column, key_column, label_column)
    else:
        yield from _read_folder(src, label_column)


# Errors that say the data or the config is wrong, not that the connection failed: never retried.
_NOT_TRANSIENT = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotImplementedError)


def read_source_retrying(src: Source, retries: int, backoff_s: float, image_column: str = "jpg",
                         caption_column: str = "txt", key_column: str = "key") -> Iterator[Record]:
    """`read_source` with up to `retries` more tries after a read error (a dropped S3 or HTTP connection),
    waiting backoff_s, 2 backoff_s, 4 backoff_s, ... between them. A retry reads the source again from its
    start and skips the records already given, so the records are those of one clean read. When every try
    fails, the last record is a bad one named by the source (`problem` starts with "read failed"): the
    prepare report lists it as a bad source."""
    given, failures = 0, 0
    while True:
        try:
            for i, rec in enumerate(read_source(src, image_column, caption_column, key_column)):
                if i >= given:
                    given += 1
                    yield rec
            return
        except _NOT_TRANSIENT:
            raise
        except Exception as err:  # noqa: BLE001 - fsspec's backends raise their own types (botocore, aiohttp)
            failures += 1
            if failures > retries:
                yield Record(src.id, None, None, problem=f"read failed after {failures} tries "
                                                         f"({type(err).__name__}: {str(err)[:200]})")
                return
            time.sleep(backoff_s * 2 ** (failures - 1))


def _tar_record(key: str, parts: dict[str, bytes]) -> Record:
    image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
    meta = {}
    if "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
    caption, problem = _caption(parts.get("txt"))
    if image is None:
        problem = f"no image ({'/'.join(IMAGE_EXTS)})"
    return Record(key, image, caption, _label(meta.get("label")) if isinstance(meta, dict) else None, problem)


def _read_tar(src: Source) -> Iterator[Record]:
    """WebDataset convention: members `KEY.EXT`, a sample's members contiguous, KEY up to the first dot.

    A tar cut short (img2dataset sets on object stores hold some) gives its readable samples, then one bad
    record for the unreadable rest, so the prepare report counts it by tar within data.max_bad_fraction."""
    fs, path = _fs(src.path)
    key, parts = None, {}
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:  # r|: streaming, no seeks
            for member in tar:
                if not member.isfile():
                    continue
                dirname, base = posixpath.split(member.name)
                stem, _, ext = base.partition(".")
                k = posixpath.join(dirname, stem)
                if k != key and key is not None:
                    yield _tar_record(key, parts)
                    parts = {}
                key = k
                parts[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.ReadError, EOFError) as err:  # EOFError: a compressed tar cut short
        if parts:  # the sample being read: its members read in full decide (a cut member is not among them)
            yield _tar_record(key, parts)
        yield Record(src.id, None, None, problem=f"tar cut short ({err}): the rest of it is unreadable")
        return
    if key is not None:
        yield _tar_record(key, parts)


def _read_parquet(src: Source, image_column: str, caption_column: str, key_column: str,
                  label_column: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    fs, path = _fs(src.path)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        missing = [c for c in (image_column, caption_column) if c not in names]
        if missing:
            raise ValueError(f"{src.path}: no column {', '.join(missing)} (has {', '.join(sorted(names))}): set "
                             f"data.image_column / data.caption_column")
        cols = [c for c in (image_column, caption_column, key_column, label_column) if c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=cols):  # a row group at a time, streaming
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                key = str(data[key_column][i]) if key_column in data else f"{src.id}/{row}"
                image = data[image_column][i]
                if isinstance(image, dict):  # HF datasets' Image feature: {"bytes": ..., "path": ...}
                    image = image.get("bytes")
                caption, problem = _caption(data[caption_column][i])
                if image is None:
                    problem = "missing image"
                yield Record(key, image, caption, _label(data.get(label_column, [None] * (i + 1))[i]), problem)
                row += 1


def _read_folder(src: Source, label_column: str) -> Iterator[Record]:
    fs, root = _fs(src.path)
    lines = [line for line in _read_lines(fs, posixpath.join(root, "metadata.jsonl"), src.path) if line.strip()]
    for n in range(src.start, src.stop):
        try:
            row = json.loads(lines[n])
        except json.JSONDecodeError:
            yield Record(f"metadata.jsonl:{n + 1}", None, None, None, "metadata line is not valid JSON")
            continue
        key = str(row.get("file_name", f"metadata.jsonl:{n + 1}"))
        caption, problem = _caption(row.get("text"))
        image = None
        try:
            with fs.open(posixpath.join(root, key), "rb") as f:
                image = f.read()
        except (FileNotFoundError, IsADirectoryError):
            problem = "image file not found"
        yield Record(key, image, caption, _label(row.get(label_column)), problem)


def decode_image(data: bytes, resolution: int, channels: int = 3):
    """Decode, resize the short side to `resolution` and centre-crop, as SD's training pipelines do:
    uint8 [C, H, W]. Raises ValueError for bytes that are not an image."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"undecodable image ({type(err).__name__})") from None
    im = Compose([Resize(resolution, interpolation=InterpolationMode.BICUBIC, antialias=True),
                  CenterCrop(resolution)])(im)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
