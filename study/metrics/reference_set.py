"""FID reference statistics of a set of real images too large for one process: a folder of images (COCO
val2014 for the paper), WebDataset .tar shards, or the prepared held-out shards. The set is listed as parts
(files), split into shards of consecutive parts, and each shard is one Ray task that streams its images
through the extractor into `ReferenceSums`; the driver merges the shards' sums exactly. Nothing holds the
set's images or features at once; a finished shard's sums are kept on disk, so a killed run redoes only the
shards in flight, and the merged statistics are cached by the set's identity (its parts' names, sizes and
modification times, or the held-out shards' hashes) and the extractor.

Images are read as clean-fid's `get_folder_features` reads them (PIL, converted to RGB, at their own size),
then each goes through the extractor's own per-image step (`prepare`: clean-fid's clean resize to 299 x 299)
and the model in batches.
"""

from __future__ import annotations

import glob
import io
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from study.config import HELDOUT
from study.errors import ConfigError
from study.identity import stable_hash
from study.metrics.reference import (ReferenceStats, ReferenceSums, cached_reference, merged, reference_key,
                                      reference_stats, save_reference)
from study.shards.format import _key_digest
from study.shards.readers import IMAGE_EXTS


@dataclass(frozen=True)
class Part:
    """One file of a reference set: an image, a .tar of images, or a prepared held-out shard."""

    kind: str  # "image" | "tar" | "shard" | "rows" (rows start:stop of a uint8 N x C x H x W .npy)
    path: str
    key: str  # name inside the set (relative path; the shard's name)
    stamp: str  # what changes when the content does: size and mtime, or the shard's sha256
    start: int = 0  # rows only
    stop: int = 0


class ReferenceSetError(ConfigError):
    """eval.reference names no readable set of images."""


def file_stamp(p: Path) -> str:
    """Size and modification time of a file: what changes when it does, without reading it."""
    st = p.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _files(reference: str, what: str) -> tuple[Path, Iterator[Path]]:
    """(base, the image and .tar files of the set, lazily): a folder (recursive), one file, or a glob."""
    if "://" in reference:
        raise ReferenceSetError(f"{what}={reference}: a reference set must be local (stage it under /mnt/shared)")
    pattern = os.path.expanduser(reference)
    if glob.has_magic(pattern):
        base, files = Path(pattern.split("*")[0]).parent, (Path(p) for p in glob.iglob(pattern, recursive=True))
    else:
        base = Path(pattern)
        if not base.exists():
            raise ReferenceSetError(f"{what}={reference}: the path does not exist; point it at the local folder of "
                                    f"reference images (COCO val2014 for the paper) or set {what}={HELDOUT}")
        files = iter([base]) if base.is_file() else base.rglob("*")
        base = base.parent if base.is_file() else base
    suffixes = {f".{e}" for e in IMAGE_EXTS} | {".tar"}
    return base, (p for p in files if p.suffix.lower() in suffixes and p.is_file())


def _none_there(reference: str, what: str) -> ReferenceSetError:
    return ReferenceSetError(f"{what}={reference}: no images ({', '.join(IMAGE_EXTS)}) or .tar shards there; "
                             f"point it at the reference images or set {what}={HELDOUT}")


def check_reference(reference: str, what: str = "eval.reference") -> None:
    """Fail in one line unless the set exists and holds an image or a .tar (stops at the first one found)."""
    if next(_files(reference, what)[1], None) is None:
        raise _none_there(reference, what)


def list_reference(reference: str, what: str = "eval.reference") -> list[Part]:
    """The images and .tar files of a folder (recursive), one file, or a glob, sorted by path inside the set."""
    base, files = _files(reference, what)
    parts = [Part("tar" if p.suffix.lower() == ".tar" else "image", str(p), p.relative_to(base).as_posix(),
                  file_stamp(p)) for p in files]
    if not parts:
        raise _none_there(reference, what)
    return sorted(parts, key=lambda p: p.key)


def heldout_parts(shards_folder: str | Path) -> list[Part]:
    """The prepared held-out shards (their uint8 images at the training resolution), in sample order."""
    from study.shards.format import ShardIndex

    index = ShardIndex.load(shards_folder)
    return [Part("shard", str(Path(shards_folder)), s["name"], s["sha256"]) for s in index.shards("heldout")]


def array_parts(path: str | Path, rows_per_part: int = 1024) -> list[Part]:
    """A uint8 N x C x H x W .npy (the noise floor's training images) in parts of consecutive rows."""
    path = Path(path)
    n = len(np.load(path, mmap_mode="r"))
    return [Part("rows", str(path), path.name, file_stamp(path), a, min(a + rows_per_part, n))
            for a in range(0, n, rows_per_part)]


def set_identity(parts: list[Part]) -> str:
    """A hash of the set's part names and stamps: the cache key of its statistics."""
    return stable_hash([[p.kind, p.key, p.stamp, p.start, p.stop] for p in parts], 16)


def _decode(data) -> np.ndarray:
    """As clean-fid's ResizeDataset: PIL, converted to RGB, as a uint8 H x W x 3 array."""
    from PIL import Image

    with Image.open(data) as im:
        return np.array(im.convert("RGB"))


def _images(part: Part) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(key, load) of each image of a part; load gives H x W x C (images, tars) or C x H x W (shards) uint8."""
    if part.kind == "image":
        yield part.key, lambda: _decode(part.path)
    elif part.kind == "tar":
        from study.shards.readers import Source, read_source

        for rec in read_source(Source(part.key, "webdataset", part.path)):
            if rec.image is not None:  # a caption is not needed here: only its absence of an image skips a record
                yield f"{part.key}/{rec.key}", (lambda b=rec.image: _decode(io.BytesIO(b)))
    elif part.kind == "rows":
        images = np.load(part.path, mmap_mode="r")
        for i in range(part.start, part.stop):
            yield f"{part.key}/{i}", (lambda i=i: np.asarray(images[i]))
    else:
        from study.shards.format import ShardIndex

        index = ShardIndex.load(part.path)
        images = index.images(part.key)
        for i, row in enumerate(index.meta(part.key)):
            yield row["key"], (lambda i=i: np.asarray(images[i]))


def _tensor(image: np.ndarray, kind: str) -> torch.Tensor:
    chw = image.transpose(2, 0, 1) if kind in ("image", "tar") else image
    return torch.from_numpy(np.ascontiguousarray(chw)).float()[None]


def shard_sums(parts: list[Part], first: int, make_extractor: Callable, batch_size: int,
               threads: int = 1) -> ReferenceSums:
    """The sums of one shard's images (parts numbered from `first` in the whole set), read and decoded by
    `threads` threads, through the extractor made by make_extractor(device)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    extractor = make_extractor(device=device)
    # the per-image step (clean-fid's resize) lets images of any size share a batch; an extractor without one
    # gets the images as they are, which must then share one size
    prepare = getattr(extractor, "prepare", None)
    embed = extractor.embed if prepare is not None else extractor.features

    def load(item):
        key, fetch, kind = item
        try:
            x = _tensor(fetch(), kind)
        except (OSError, ValueError) as err:
            raise ReferenceSetError(f"reference image {key} cannot be read ({type(err).__name__}: {err}): "
                                    f"remove it from the reference set") from None
        return prepare(x) if prepare is not None else x

    items = ((key, fetch, p.kind, (first + j) << 32 | i)
             for j, p in enumerate(parts) for i, (key, fetch) in enumerate(_images(p)))
    acc = ReferenceSums()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        while chunk := list(islice(items, batch_size)):
            images = list(pool.map(load, [c[:3] for c in chunk]))
            if len({tuple(x.shape) for x in images}) > 1:
                raise ReferenceSetError(f"reference images of different sizes near {chunk[0][0]}: the "
                                        f"{type(extractor).__name__} does not resize them; use eval.feature_extractor="
                                        f"inception")
            feats = embed(torch.cat(images)).detach().cpu().double().numpy()
            acc.update(feats, [_key_digest(f"kid:{c[0]}") for c in chunk], [c[3] for c in chunk])
    return acc


def _run_shard(parts, first, make_extractor, batch_size, threads, out: str) -> str:
    torch.set_num_threads(max(1, threads))
    shard_sums(parts, first, make_extractor, batch_size, threads).save(out)  # empty .tar files: an empty record
    return out


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Parts [a, b) of each shard: min(shards, n) runs of consecutive parts, sizes differing by at most one."""
    k = max(1, min(shards, n))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def accumulate(parts: list[Part], make_extractor: Callable, done_dir: str | Path, batch_size: int = 256,
               shards: int = 1, workers: int = 1, resources: dict | None = None, desc: str = "reference",
               progress: bool = False) -> ReferenceSums:
    """The merged sums of a set's parts: shards of consecutive parts as Ray tasks (at most `workers` at once,
    each reserving `resources`); a finished shard's sums stay in done_dir, so a rerun redoes only the rest."""
    bounds = shard_bounds(len(parts), shards)
    done_dir = Path(done_dir)
    done_dir.mkdir(parents=True, exist_ok=True)
    outs = [done_dir / f"shard-{i:05d}-of-{len(bounds):05d}.npz" for i in range(len(bounds))]
    todo = [i for i, out in enumerate(outs) if not out.is_file()]
    if todo:
        import ray
        from tqdm.auto import tqdm

        res = resources or {"num_cpus": 1}
        threads = max(1, int(res.get("num_cpus", 1)))
        task = ray.remote(_run_shard).options(**res)
        queue, pending = list(todo), []
        with tqdm(total=len(outs), initial=len(outs) - len(todo), unit="shard", desc=desc,
                  disable=not progress) as bar:
            while queue or pending:
                while queue and len(pending) < max(1, workers):
                    i = queue.pop(0)
                    a, b = bounds[i]
                    pending.append(task.remote(parts[a:b], a, make_extractor, batch_size, threads, str(outs[i])))
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready)  # a failed shard raises here; the finished ones stay on disk
                bar.update(1)
    # merged shard by shard, in order: the driver holds one shard's sums and the KID pool at a time
    return merged(ReferenceSums.load(out) for out in outs)


def compute_set_reference(parts: list[Part], make_extractor: Callable, name: str, cache_dir: str | Path,
                          key_parts: dict, batch_size: int = 256, shards: int = 1, workers: int = 1,
                          resources: dict | None = None, progress: bool = False) -> ReferenceStats:
    """Reference statistics of a listed set (see `accumulate`), cached by the set's identity and the extractor."""
    key_parts = {**key_parts, "set": set_identity(parts)}
    key = reference_key(name, key_parts)
    cache_dir = Path(cache_dir)
    hit = cached_reference(cache_dir, key)
    if hit is not None:
        return hit
    done_dir = cache_dir / f"{key}.shards"
    acc = accumulate(parts, make_extractor, done_dir, batch_size, shards, workers, resources,
                     f"reference statistics ({len(parts)} files)", progress)
    ref = reference_stats(acc, name, key, {**key_parts, "parts": len(parts)})
    save_reference(ref, cache_dir)
    shutil.rmtree(done_dir, ignore_errors=True)  # the merged entry is the cache now
    return ref
