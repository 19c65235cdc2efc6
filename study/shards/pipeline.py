"""`study prepare` for real data: a Ray Data pipeline from source files to shards, in arrival order.

    sources -> read chunks, decode, resize, centre-crop (flat_map: a task per source)
            -> encode latents and captions (map_batches, an actor pool; GPUs from the config)
            -> chunk files under parts/SOURCE/ (only the sources in flight)
            -> the source's own shards, its chunks streamed in order (a Ray task per source, spread over nodes)

No global order is built: a shard holds consecutive samples of one source, and the training reader
shuffles across shards at read time (trainers/data.py), as WebDataset and mosaicml-streaming do. So no
step reads single rows across part files, and the set is never on disk twice: a source's chunk files
are deleted as soon as its shards are written. Memory is bounded by a chunk (`data.prepare_chunk`
samples) per worker plus one shard per split per writer task. The chunks of a source are a function of
the source alone and each is encoded in fixed batches (`data.prepare_encode_batch`), so the bytes do not
depend on the number of workers. Resume: a source with its done record (parts/ID.done.json) is not
re-read; one whose chunks are all encoded (parts/ID.chunks.json) is only re-sharded. index.json is
written last; the staging folder is deleted after it, and again by any rerun that finds it.
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
from study.shards.format import INDEX, SPLITS, UNCOND, _key_digest, shard_name, split_of, write_index, write_shard
from study.shards.readers import Source, decode_image, list_sources, read_source_retrying

PARTS = "parts"
REPORT = "prepare_report.json"
FAIL_AFTER_ENV = "STUDY_PREPARE_FAIL_AFTER_SOURCES"  # test hook: stop after this many sources, as a kill would
FLOOR_FILE = "floor_images.npy"
KILL_AT_ENV = "STUDY_PREPARE_KILL_AT"  # test hook: SIGKILL this process at a stage (encoded, sharded, indexed)


def _kill_point(stage: str) -> None:
    if os.environ.get(KILL_AT_ENV) == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


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
    for rec in read_source_retrying(src, d.read_retries, d.read_retry_backoff_s, d.image_column, d.caption_column,
                                    d.key_column):
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
        # token ids need only the tokenizer: no text model in the actor's memory or on its GPU
        self.text = load_text_encoder(cfg.text_encoder, tokenizer_only=cfg.data.captions == "tokens")
        if self.text.model is not None:
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
                    texts = [g["caption"] for g in good]
                    ctx = (self.text.tokenize(texts) if self.d.captions == "tokens"
                           else self.text.encode(texts, batch_size=b).half().cpu().numpy())
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


def encode_sources(cfg, todo: list[Source], parts: Path, autoencoder_dir: Path, channels: int, progress: bool,
                   on_source) -> None:
    """Stage 1, the Ray Data pipeline: each source in `todo` -> part files of its encoded chunks;
    `on_source(id)` is called as soon as every chunk of a source is written (stage 2 starts on it)."""
    import ray

    from study.config import to_dict

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
        if len(got[src]) == n_chunks.get(src, -1):  # every chunk of the source written
            write_json(parts / f"{_safe(src)}.chunks.json", {"chunks": n_chunks.pop(src)})
            del got[src]  # the driver keeps only the sources in flight
            _kill_point("encoded")
            on_source(src)


def assemble_source(folder: str, parts: str, source_id: str, index: int, shard_size: int, keep_floor: bool) -> dict:
    """Stage 2 (a Ray task): stream one source's encoded chunks, in order, into its own shards, then
    delete the chunks. Returns the source's record (its shards by split, bad samples, floor images).

    Each chunk file is read whole, once, in sequence; a shard holds samples of one source in the order
    they were read, so it is a function of the source alone (not of which worker encoded what). The
    training reader shuffles across shards (trainers/data.py). A source's train images chosen for the
    noise floor (`keeps_image`) go to parts/ID.floor.npy when `keep_floor`."""
    parts, safe = Path(parts), _safe(source_id)
    n_chunks = json.loads((parts / f"{safe}.chunks.json").read_text())["chunks"]
    buf = {s: {"latents": [], "context": [], "images": [], "meta": []} for s in SPLITS}
    shards: dict[str, list] = {s: [] for s in SPLITS}
    bad, floor, n_floor, node = [], [], 0, _node()

    def flush(split: str, final: bool) -> None:
        b = buf[split]
        while len(b["meta"]) >= shard_size or (final and b["meta"]):
            arrays = {k: np.concatenate(b[k]) for k in ("latents", "context", "images") if b[k]}
            n = min(shard_size, len(b["meta"]))
            name = shard_name(split, len(shards[split]), source=index)
            rec = write_shard(folder, name, arrays["latents"][:n], arrays["context"][:n], b["meta"][:n],
                              images=arrays["images"][:n] if split == "heldout" else None, extra={"node": node})
            shards[split].append(rec)
            for k in ("latents", "context", "images"):
                b[k] = [arrays[k][n:].copy()] if k in arrays and len(arrays[k]) > n else []  # not a view of all
            b["meta"] = b["meta"][n:]

    for c in range(n_chunks):
        base = parts / safe / f"{c:06d}"
        part = json.loads(Path(f"{base}.json").read_text())
        bad += part["bad"]
        if not part["good"]:
            continue
        lat, ctx, imgs = (np.load(f"{base}.{k}.npy") for k in ("latents", "context", "images"))
        for split in SPLITS:
            rows = [j for j, g in enumerate(part["good"]) if g["split"] == split]
            if not rows:
                continue
            b = buf[split]
            b["latents"].append(lat[rows])
            b["context"].append(ctx[rows])
            b["meta"] += [{k: part["good"][j][k] for k in ("key", "caption", "label")} for j in rows]
            if split == "heldout":  # every held-out sample kept its image (keeps_image)
                b["images"].append(imgs[[part["good"][j]["image_row"] for j in rows]])
            else:
                kept = [part["good"][j]["image_row"] for j in rows if part["good"][j]["image_row"] >= 0]
                n_floor += len(kept)
                if keep_floor and kept:
                    floor.append(imgs[kept])
        for split in SPLITS:
            flush(split, final=False)
    for split in SPLITS:
        flush(split, final=True)
    if floor:
        write_atomic(parts / f"{safe}.floor.npy", lambda f: np.save(f, np.concatenate(floor)))
    record = {"source": source_id, "index": index, "shards": shards, "bad": bad, "floor": n_floor,
              "node": node}
    if any(problem.startswith("read failed") for _, problem in bad):
        # no done record: a rerun (the storage back) reads the source again and rewrites its shards
        (parts / f"{safe}.chunks.json").unlink(missing_ok=True)
    else:
        write_json(parts / f"{safe}.done.json", record)  # last: the source is in its shards
    shutil.rmtree(parts / safe, ignore_errors=True)
    return record


def _node() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _sweep_temp_files(folder: Path) -> None:
    """Remove the temp files of atomic writes a SIGKILL interrupted (`study.atomic`: `.NAME.*.tmp`)."""
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def finish_staging(folder: Path, keep_parts: bool = False) -> None:
    """After index.json: delete the staging folder (parts/) and any interrupted writes' temp files.
    Also run by a rerun that finds index.json, so a kill during the deletion leaves nothing behind."""
    if not keep_parts:
        shutil.rmtree(folder.parent / PARTS, ignore_errors=True)
    _sweep_temp_files(folder)
    _sweep_temp_files(folder.parent)  # prepare_report.json's


def prepare_shards(cfg, folder: Path, autoencoder_dir: Path, uncond: np.ndarray, channels: int,
                   progress: bool = True) -> dict:
    """Read, encode and shard the configured data set into `folder`; returns the prepare report."""
    from study.raycluster import ensure_ray

    d = cfg.data
    sources = list_sources(d.name, d.root)  # fails on a missing path before any work
    if (folder / INDEX).exists():  # done before: only the clean-up a kill may have cut short
        finish_staging(folder, d.keep_parts)
        return json.loads((folder.parent / REPORT).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    parts = folder.parent / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    _sweep_temp_files(folder)
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
    records = _run_stages(cfg, sources, folder, parts, autoencoder_dir, channels, progress)
    bad = [b for r in records for b in r["bad"]]
    counts = {s: sum(x["n"] for r in records for x in r["shards"][s]) for s in SPLITS}
    n_good = sum(counts.values())
    total = n_good + len(bad)
    failed = [{"source": k, "problem": p} for k, p in bad if p.startswith("read failed")]
    report = {"sources": len(sources), "samples": total, "good": n_good, "bad": len(bad),
              "bad_fraction": len(bad) / max(1, total), "max_bad_fraction": d.max_bad_fraction,
              "bad_sources": failed, "bad_source_fraction": len(failed) / len(sources),
              "bad_samples": [{"key": k, "problem": p} for k, p in bad]}
    write_json(folder.parent / REPORT, report)
    # The shards written stay: a rerun (a higher data.max_bad_fraction, the storage back) reuses them and
    # reads again only the sources that failed.
    if report["bad_source_fraction"] > d.max_bad_fraction:
        raise ValueError(f"{len(failed)} of {len(sources)} sources of {d.root} could not be read after "
                         f"{d.read_retries} retries ({report['bad_source_fraction']:.1%} > data.max_bad_fraction="
                         f"{d.max_bad_fraction}), first {failed[0]['source']}: {failed[0]['problem']}; see "
                         f"{folder.parent / REPORT}")
    if report["bad_fraction"] > d.max_bad_fraction or not counts["train"]:
        raise ValueError(f"{len(bad)} of {total} samples of {d.root} are unusable ({report['bad_fraction']:.1%} > "
                         f"data.max_bad_fraction={d.max_bad_fraction}): see {folder.parent / REPORT}")
    if not (folder / FLOOR_FILE).exists():
        floor = _floor_images(parts, records, cfg.eval.num_samples)
        if floor is not None:
            write_atomic(folder / FLOOR_FILE, lambda f: np.save(f, floor))
    write_atomic(folder / UNCOND, lambda f: np.save(f, uncond))
    by_split = {s: [{k: x[k] for k in ("name", "n", "sha256")} | {"source": r["index"]}
                    for r in records for x in r["shards"][s]] for s in SPLITS}
    first = by_split["train"][0]["name"]
    lat = np.load(folder / f"{first}.latents.npy", mmap_mode="r")
    # the encoder's output shape is the empty prompt's, whichever caption file the shards keep
    write_index(folder, d.shard_size, lat.shape[1:], uncond.shape[1:], by_split, len(bad), captions=d.captions,
                **({"floor_images": FLOOR_FILE} if (folder / FLOOR_FILE).exists() else {}))
    _kill_point("indexed")
    finish_staging(folder, d.keep_parts)
    return report


def _run_stages(cfg, sources: list[Source], folder: Path, parts: Path, autoencoder_dir: Path, channels: int,
                progress: bool) -> list[dict]:
    """Stages 1 and 2 together: a source's shards are written (a Ray task, at most `data.prepare_writers`
    in flight, spread over the nodes) as soon as its chunks are encoded, so parts/ holds only the sources
    in flight. Returns every source's record, in source order."""
    import ray

    d = cfg.data
    fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0") or 0)
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(assemble_source)
    position = {s.id: i for i, s in enumerate(sources)}
    records: dict[int, dict] = {}
    for s in sources:
        done = parts / f"{_safe(s.id)}.done.json"
        if done.exists():
            records[position[s.id]] = json.loads(done.read_text())
    pending: dict = {}

    def finish_one() -> None:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        pending.pop(ref)
        rec = ray.get(ref)
        records[rec["index"]] = rec
        _kill_point("sharded")
        if fail_after and len(records) >= fail_after:
            raise RuntimeError(f"{FAIL_AFTER_ENV}={fail_after}: stopping after {len(records)} sources (test hook)")
        _drop_unneeded_floor(parts, sources, records, cfg.eval.num_samples)

    def submit(source_id: str) -> None:
        while len(pending) >= max(1, d.prepare_writers):
            finish_one()
        i = position[source_id]
        keep = _floor_prefix(records, cfg.eval.num_samples) is None
        pending[task.remote(str(folder), str(parts), source_id, i, d.shard_size, keep)] = i

    for s in sources:  # encoded before a kill, not yet in shards
        if position[s.id] not in records and (parts / f"{_safe(s.id)}.chunks.json").exists():
            submit(s.id)
    todo = [s for s in sources if position[s.id] not in records and not (parts / f"{_safe(s.id)}.chunks.json").exists()]
    encode_sources(cfg, todo, parts, autoencoder_dir, channels, progress, submit)
    while pending:
        finish_one()
    return [records[i] for i in range(len(sources))]


def _floor_prefix(records: dict[int, dict], floor_n: int) -> int | None:
    """The last source the noise floor draws from (its first `floor_n` kept training images, in source
    order), once the sources up to it are done; None while it is not known."""
    have, i = 0, 0
    while i in records:
        have += records[i]["floor"]
        if have >= floor_n:
            return i
        i += 1
    return None


def _drop_unneeded_floor(parts: Path, sources: list[Source], records: dict[int, dict], floor_n: int) -> None:
    """Delete the floor images of done sources past the floor's prefix: parts/ never holds them all."""
    last = _floor_prefix(records, floor_n)
    if last is not None:
        for i in records:
            if i > last:
                (parts / f"{_safe(sources[i].id)}.floor.npy").unlink(missing_ok=True)


def _floor_images(parts: Path, records: list[dict], floor_n: int) -> np.ndarray | None:
    """The noise floor's pool: the first `floor_n` kept training images, in source order."""
    out, have = [], 0
    for r in records:
        if have >= floor_n:
            break
        if r["floor"]:
            arr = np.load(parts / f"{_safe(r['source'])}.floor.npy")
            out.append(arr[: floor_n - have])
            have += len(out[-1])
    return np.concatenate(out) if out else None
