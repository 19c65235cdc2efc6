"""`study prepare` for real data: a Ray Data pipeline from source files to fixed-size shards.

    sources -> read chunks, decode, resize, centre-crop (flat_map: a task per source)
            -> encode latents and captions (map_batches, an actor pool; GPUs from the config)
            -> chunk files under parts/ -> index rows sorted by key hash (driver, or Ray Data's sort)
            -> final shards (Ray tasks, spread over nodes)

Memory is bounded by a chunk (`data.prepare_chunk` samples) per worker plus one shard per writer task,
which reads exactly its rows from the part files (`read_rows`). Up to `data.prepare_driver_sort_max`
samples the driver sorts the index; above, it holds one row per chunk and streams the sorted index one
shard's entries at a time. The chunks of a source are a function of the source alone and each is
encoded in fixed batches (`data.prepare_encode_batch`), so the bytes do not depend on the number of
workers. Resume: a source with its done marker is not re-read, a shard with its done record is not
rewritten.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from study.atomic import write_atomic, write_json
from study.shards.format import (SPLITS, UNCOND, _key_digest, sample_order, shard_done, shard_name, split_of,
                                 write_index, write_shard)
from study.shards.readers import Source, decode_image, list_sources, read_source

PARTS = "parts"
REPORT = "prepare_report.json"
FAIL_AFTER_ENV = "STUDY_PREPARE_FAIL_AFTER_SHARDS"  # test hook: stop after this many shards, as a kill would
FLOOR_FILE = "floor_images.npy"


def _safe(source_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", source_id)


def keeps_image(key: str, split: str, data_cfg) -> bool:
    """Held-out images are kept for the FID reference; a same-sized hash-chosen pool of training
    images for the real-vs-real noise floor."""
    return split == "heldout" or _key_digest(f"floor:{data_cfg.split_seed}:{key}") / 2.0**64 < data_cfg.eval_fraction


def read_chunks(row: dict, data_cfg):
    """flat_map: one source -> chunks of up to `prepare_chunk` raw records (bad ones carry their reason).

    Each chunk travels as one pickled payload, so Ray Data moves plain bytes, whatever the records hold."""
    d, src = data_cfg, Source(**row["source"])
    held, chunk = None, []
    emit = lambda k, recs, last: {"payload": pickle.dumps(  # noqa: E731
        {"source": src.id, "chunk": k, "records": recs, "last": last})}
    for rec in read_source(src, d.image_column, d.caption_column, d.key_column):
        chunk.append(asdict(rec))
        if len(chunk) == d.prepare_chunk:
            if held is not None:
                yield emit(*held, False)
            held, chunk = ((held[0] + 1 if held else 0), chunk), []
    if chunk:
        if held is not None:
            yield emit(*held, False)
        held = ((held[0] + 1 if held else 0), chunk)
    if held is None:  # an empty source is itself a bad sample, listed under the source's name
        held = (0, [{"key": src.id, "image": None, "caption": None, "label": None, "problem": "empty shard"}])
    yield emit(*held, True)


def decode_chunk(row: dict, data_cfg, channels: int) -> dict:
    """map: decode, resize, centre-crop every good record of a chunk; undecodable images become bad."""
    c = pickle.loads(row["payload"])
    good, images, bad = [], [], []
    for rec in c["records"]:
        if rec["problem"] is None:
            try:
                images.append(decode_image(rec["image"], data_cfg.resolution, channels))
            except ValueError as err:
                rec["problem"] = str(err)
        if rec["problem"] is None:
            split = split_of(rec["key"], data_cfg.eval_fraction, data_cfg.split_seed)
            good.append({"key": rec["key"], "caption": rec["caption"], "label": rec["label"], "split": split})
        else:
            bad.append([rec["key"], rec["problem"]])
    shape = (0, channels, data_cfg.resolution, data_cfg.resolution)
    return {"payload": pickle.dumps({"source": c["source"], "chunk": c["chunk"], "last": c["last"], "good": good,
                                     "bad": bad,
                                     "images": np.stack(images) if images else np.zeros(shape, np.uint8)})}


def read_decoded_chunks(row: dict, data_cfg, channels: int):
    """flat_map: one source -> its chunks, decoded (`read_chunks`, then `decode_chunk` on each)."""
    for chunk in read_chunks(row, data_cfg):
        yield decode_chunk(chunk, data_cfg, channels)


class EncodeChunks:
    """map_batches actor: encode latents and captions of a chunk (one call each) and write its part files."""

    def __init__(self, cfg_dict: dict, autoencoder_dir: str, parts_dir: str):
        import torch

        from study.autoencoder import load_latent_space
        from study.config import from_dict
        from study.text import load_text_encoder

        cfg = from_dict(cfg_dict)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.space = load_latent_space(cfg.autoencoder, autoencoder_dir).to(self.device)
        self.text = load_text_encoder(cfg.text_encoder)
        self.text.model.to(self.device)
        self.d, self.parts = cfg.data, Path(parts_dir)

    def __call__(self, batch: dict) -> dict:
        import torch

        out = {"source": [], "chunk": [], "last": []}
        for payload in batch["payload"]:
            c = pickle.loads(payload)
            good, images = c["good"], c["images"]
            base = self.parts / _safe(c["source"]) / f"{c['chunk']:06d}"
            with torch.no_grad():
                # Fixed batches, not the whole chunk in one call: a 256-image chunk of 512 px through SD's VAE
                # would hold on the order of 100 GB of activations. The batches do not depend on the workers.
                b = self.d.prepare_encode_batch
                if good:
                    lat = self.space.encode(torch.from_numpy(images), batch_size=b).half().cpu().numpy()
                    ctx = self.text.encode([g["caption"] for g in good], batch_size=b).half().cpu().numpy()
                else:  # every sample of the chunk was bad: nothing to encode, and nothing reads these files
                    lat = ctx = np.zeros((0,), np.float16)
            keep = [j for j, g in enumerate(good) if keeps_image(g["key"], g["split"], self.d)]
            rows = {j: r for r, j in enumerate(keep)}
            for j, g in enumerate(good):
                g["image_row"] = rows.get(j, -1)
            base.parent.mkdir(parents=True, exist_ok=True)
            for kind, arr in (("latents", lat), ("context", ctx), ("images", images[keep])):
                write_atomic(f"{base}.{kind}.npy", lambda f, a=arr: np.save(f, a))
            write_json(f"{base}.json", {"good": good, "bad": c["bad"]})  # last: marks the chunk written
            out["source"].append(c["source"])
            out["chunk"].append(c["chunk"])
            out["last"].append(c["last"])
        return out


def encode_sources(cfg, sources: list[Source], parts: Path, autoencoder_dir: Path, channels: int,
                   progress: bool) -> None:
    """Stage 1, the Ray Data pipeline: every source not yet done -> part files of encoded chunks."""
    import ray

    from study.config import to_dict

    todo = [s for s in sources if not (parts / f"{_safe(s.id)}.done.json").exists()]
    if not todo:
        return
    d = cfg.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ds = ray.data.from_items([{"source": asdict(s)} for s in todo], override_num_blocks=len(todo))
    # Reading and decoding are one task per source; encoding is the actor pool that holds the models. As a
    # separate map, decoding was fused into the encoder actors whenever they asked for no GPU (Ray Data fuses
    # a task map into an actor map with equal resources), so on CPUs it ran serially with encoding.
    ds = ds.flat_map(read_decoded_chunks, fn_kwargs={"data_cfg": d, "channels": channels})
    ds = ds.map_batches(EncodeChunks, batch_size=1, concurrency=d.prepare_actors,
                        num_gpus=d.prepare_gpus_per_actor,
                        fn_constructor_kwargs={"cfg_dict": to_dict(cfg), "autoencoder_dir": str(autoencoder_dir),
                                               "parts_dir": str(parts)})
    # Bound what reading may hold ahead of encoding. Unbounded, the decoded chunks waiting for the encoders
    # grew until Ray Data's share of the object store was full (measured: 0.9 GB in the store after 30K of a
    # 100K-image run at 64 px), so the node's memory grew with the set up to that cap.
    budget = d.prepare_readahead * d.prepare_actors * d.prepare_chunk * channels * d.resolution ** 2
    ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(object_store_memory=budget)
    got: dict[str, set[int]] = {}
    n_chunks: dict[str, int] = {}
    for row in ds.iter_rows():  # streaming: rows are small summaries; the data stays in the workers
        src = row["source"]
        got.setdefault(src, set()).add(int(row["chunk"]))
        if row["last"]:
            n_chunks[src] = int(row["chunk"]) + 1
        if len(got[src]) == n_chunks.get(src, -1):  # every chunk of the source written: never re-read it
            write_json(parts / f"{_safe(src)}.done.json", {"chunks": n_chunks.pop(src)})
            del got[src]  # the driver keeps only the sources in flight


def _scan_parts(parts: Path, sources: list[Source]) -> tuple[list[dict], dict[str, int], list]:
    """Pass 1 over the part records: each chunk's part file, the good samples per split, the bad ones.

    Memory: one small row per chunk (not per sample) and the bad samples' keys (at most
    data.max_bad_fraction of the set, or prepare stops)."""
    chunks, counts, bad = [], {s: 0 for s in SPLITS}, []
    for i, s in enumerate(sources):
        n = json.loads((parts / f"{_safe(s.id)}.done.json").read_text())["chunks"]
        for c in range(n):
            base = parts / _safe(s.id) / f"{c:06d}"
            part = json.loads(Path(f"{base}.json").read_text())
            bad += part["bad"]
            for g in part["good"]:
                counts[g["split"]] += 1
            if part["good"]:
                chunks.append({"base": str(base), "source": i, "chunk": c})
    return chunks, counts, bad


def index_rows(row: dict) -> list[dict]:
    """flat_map: one chunk's part record -> one small index row per good sample (no latents)."""
    part = json.loads(Path(f"{row['base']}.json").read_text())
    return [{"split": g["split"], "order": f"{sample_order(g['key'])[0]:016x}", "key": g["key"],
             "caption": g["caption"], "label": -1 if g["label"] is None else int(g["label"]),
             "source": row["source"], "chunk": row["chunk"], "row": r, "image_row": g["image_row"],
             "base": row["base"]} for r, g in enumerate(part["good"])]


# The total order of a split's samples: the key hash, then the key, then where the sample was read
# (duplicate keys keep their source order), so the shards' bytes are one function of the data set.
SORT_KEYS = ["split", "order", "key", "source", "chunk", "row"]


def _entry(r: dict) -> tuple:
    label = None if r["label"] < 0 else r["label"]
    return r["order"], r["key"], r["caption"], label, r["base"], r["row"], r["image_row"]


def sorted_entries(chunks: list[dict], n_samples: int, driver_max: int, batch: int = 4096):
    """Every good sample's (split, entry) in shard order; an entry is (order, key, caption, label, part file
    base, row, image row).

    Up to `driver_max` samples the driver sorts the index itself (about 0.5 KB a sample). Above it the
    driver never holds the whole index: Ray Data's distributed sort range-partitions the index rows over
    the cluster (spilling to disk past the object store) and this iterates the result a batch at a time.
    Both give the same order (SORT_KEYS is a total order); the sort's fixed cost (about 7 s on one
    machine) is why small sets do not use it."""
    if n_samples <= driver_max:
        rows = sorted(((tuple(r[k] for k in SORT_KEYS), r["split"], _entry(r)) for c in chunks for r in index_rows(c)),
                      key=lambda x: x[0])
        for _, split, e in rows:
            yield split, e
        return
    import ray

    ds = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 200)))
    for b in ds.flat_map(index_rows).sort(SORT_KEYS).iter_batches(batch_size=batch, batch_format="pyarrow"):
        for r in b.to_pylist():
            yield r["split"], _entry(r)


def read_rows(files: list[str], rows: list[int]) -> np.ndarray:
    """Row rows[i] of the .npy file files[i], for every i, stacked in that order.

    Each row is one positioned read of exactly its bytes, and every file is opened once. The final
    shards are in key-hash order, so one shard draws a few rows from every part file of its split;
    memory-mapping the part files instead (as this did first) let the kernel's readahead pull in
    most of each file for those few rows: a shard writer's resident set and its reads grew with the
    data set (measured: 1.4 GB of mapped part-file pages in one writer at 100K images, for 40 MB of
    rows). Now a writer holds one shard, and the pipeline reads each sample's bytes once."""
    by_file: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_file.setdefault(f, []).append(i)
    out = None
    for f, idx in by_file.items():
        with open(f, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            if fortran:
                raise ValueError(f"{f}: Fortran-ordered array; part files are written C-ordered by study prepare")
            start, size = fh.tell(), int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            if out is None:
                out = np.empty((len(files), *shape[1:]), dtype)
            for i in sorted(idx, key=lambda i: rows[i]):  # ascending offsets within the file
                if not 0 <= rows[i] < shape[0]:
                    raise IndexError(f"{f}: row {rows[i]} of {shape[0]}")
                buf = os.pread(fh.fileno(), size, start + rows[i] * size)
                if len(buf) != size:
                    raise ValueError(f"{f}: truncated at row {rows[i]} (rerun study prepare: the part is redone)")
                out[i] = np.frombuffer(buf, dtype).reshape(shape[1:])
    if out is None:
        raise ValueError("read_rows: no rows asked for")
    return out


def _write_final(folder: str, name: str, entries: list, with_images: bool) -> dict:
    """Ray task: gather a shard's samples from the part files (positioned reads) and write it."""
    import ray

    files = [e[4] for e in entries]
    lat = read_rows([f"{b}.latents.npy" for b in files], [e[5] for e in entries])
    ctx = read_rows([f"{b}.context.npy" for b in files], [e[5] for e in entries])
    imgs = read_rows([f"{b}.images.npy" for b in files], [e[6] for e in entries]) if with_images else None
    meta = [{"key": e[1], "caption": e[2], "label": e[3]} for e in entries]
    node = ray.get_runtime_context().get_node_id()
    return {**write_shard(folder, name, lat, ctx, meta, images=imgs, extra={"node": node}), "node": node}


def write_final_shards(folder: Path, entries, shard_size: int, parallel: int, floor_n: int) -> tuple[dict, list]:
    """Stage 3: cut the sorted stream of (split, entry) into each split's shards; done shards are kept,
    the rest written by Ray tasks (at most `parallel` in flight). Returns the shard records by split and
    the first `floor_n` training entries that kept their image (the noise floor's pool)."""
    import ray

    fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0") or 0)
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_write_final)
    records: dict[str, list] = {s: [] for s in SPLITS}
    pending, written, floor = {}, 0, []

    def submit(split: str, part: list) -> None:
        nonlocal written
        k = len(records[split])
        name = shard_name(split, k)
        done = shard_done(folder, name)
        if done and done["n"] == len(part):
            records[split].append({"name": name, "n": done["n"], "sha256": done["sha256"]})
            return
        records[split].append(None)
        while len(pending) >= parallel:
            written += _finish(pending, records, fail_after, written)
        pending[task.remote(str(folder), name, part, split == "heldout")] = (split, k)

    split_now, part = None, []
    for split, e in entries:
        if split != split_now and part:
            submit(split_now, part)
            part = []
        split_now = split
        part.append(e)
        if split == "train" and e[6] >= 0 and len(floor) < floor_n:
            floor.append(e)
        if len(part) == shard_size:
            submit(split, part)
            part = []
    if part:
        submit(split_now, part)
    while pending:
        written += _finish(pending, records, fail_after, written)
    return records, floor


def _finish(pending: dict, records: dict, fail_after: int, written: int) -> int:
    import ray

    [ref], _ = ray.wait(list(pending), num_returns=1)
    split, k = pending.pop(ref)
    rec = ray.get(ref)
    records[split][k] = {x: rec[x] for x in ("name", "n", "sha256")}
    if fail_after and written + 1 >= fail_after:
        raise RuntimeError(f"{FAIL_AFTER_ENV}={fail_after}: stopping after {written + 1} shards (test hook)")
    return 1


def prepare_shards(cfg, folder: Path, autoencoder_dir: Path, uncond: np.ndarray, channels: int,
                   progress: bool = True) -> dict:
    """Read, encode and shard the configured data set into `folder`; returns the prepare report."""
    from study.raycluster import ensure_ray

    d = cfg.data
    sources = list_sources(d.name, d.root)  # fails on a missing path before any work
    folder.mkdir(parents=True, exist_ok=True)
    parts = folder.parent / PARTS
    import ray

    local = ensure_ray(cfg) or os.environ.get("RAY_ADDRESS") is None and not cfg.resources.ray_address
    cpus = ray.cluster_resources().get("CPU", 0)
    if local and d.prepare_actors >= cpus:
        # Each encoder actor holds a CPU for its lifetime; the read-and-decode tasks need one more.
        raise ValueError(f"data.prepare_actors={d.prepare_actors} leaves no CPU for reading on this {cpus:g}-CPU "
                         f"Ray: set data.prepare_actors to at most {max(1, int(cpus) - 1)}")
    if local and d.prepare_gpus_per_actor * d.prepare_actors > ray.cluster_resources().get("GPU", 0):
        # A local Ray is a fixed machine: actors asking for GPUs it lacks would wait forever.
        raise ValueError(f"data.prepare_actors={d.prepare_actors} x data.prepare_gpus_per_actor="
                         f"{d.prepare_gpus_per_actor} GPUs, this machine has {ray.cluster_resources().get('GPU', 0):g}:"
                         f" set data.prepare_gpus_per_actor=0 (CPU) or fewer actors")
    encode_sources(cfg, sources, parts, autoencoder_dir, channels, progress)
    chunks, counts, bad = _scan_parts(parts, sources)
    n_good = sum(counts.values())
    total = n_good + len(bad)
    report = {"sources": len(sources), "samples": total, "good": n_good, "bad": len(bad),
              "bad_fraction": len(bad) / max(1, total), "max_bad_fraction": d.max_bad_fraction,
              "bad_samples": [{"key": k, "problem": p} for k, p in bad]}
    write_json(folder.parent / REPORT, report)
    if report["bad_fraction"] > d.max_bad_fraction or not counts["train"]:
        raise ValueError(f"{len(bad)} of {total} samples of {d.root} are unusable ({report['bad_fraction']:.1%} > "
                         f"data.max_bad_fraction={d.max_bad_fraction}): see {folder.parent / REPORT}")
    entries = sorted_entries(chunks, n_good, d.prepare_driver_sort_max)
    records, picks = write_final_shards(folder, entries, d.shard_size, max(1, d.prepare_writers), cfg.eval.num_samples)
    if picks:
        floor = read_rows([f"{e[4]}.images.npy" for e in picks], [e[6] for e in picks])
        write_atomic(folder / FLOOR_FILE, lambda f: np.save(f, floor))
    write_atomic(folder / UNCOND, lambda f: np.save(f, uncond))
    first = next(r for r in records["train"])
    lat = np.load(folder / f"{first['name']}.latents.npy", mmap_mode="r")
    ctx = np.load(folder / f"{first['name']}.context.npy", mmap_mode="r")
    write_index(folder, d.shard_size, lat.shape[1:], ctx.shape[1:], records, len(bad),
                **({"floor_images": FLOOR_FILE} if picks else {}))
    if not d.keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return report
