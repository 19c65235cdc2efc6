"""`study prepare`: encode the data once into shards (latents, caption hidden states; format in
study/shards/format.py) and build the evaluator and its reference statistics; everything is cached on
disk, keyed by what it depends on, and reused. The embedded digits are written from memory; real data
sets stream through the Ray Data pipeline of study/shards/pipeline.py."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study import __version__
from study.atomic import write_atomic, write_json
from study.config import StudyConfig
from study.datasets import dataset
from study.identity import data_identity, stable_hash

# Bump when the on-disk layout of a prepared folder changes, so old caches are not misread.
LAYOUT = 3  # 2: shards/; 3: streamed shards in arrival order (format version 2)


@dataclass
class Prepared:
    """Where the prepared artefacts of a config live."""

    dir: Path  # latents, text embeddings, evaluation prompts (keyed by data, text encoder, autoencoder)
    data_dir: Path  # evaluator and reference statistics (keyed by data and evaluation features only)

    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

    @property
    def shards_dir(self) -> Path:
        return self.dir / "shards"

    def array(self, name: str) -> np.ndarray:
        return np.load(self.dir / f"{name}.npy", mmap_mode="r")

    @property
    def autoencoder_dir(self) -> Path:
        return self.dir / "autoencoder"

    @property
    def evaluator_dir(self) -> Path:
        return self.data_dir / "classifier"

    def reference_path(self) -> Path:
        return self.data_dir / "reference.json"


def prepared_paths(cfg: StudyConfig) -> Prepared:
    """The cache folders of a config (nothing is computed)."""
    root = Path(cfg.cache_dir).expanduser()
    key = stable_hash({"data": _data_identity(cfg), "text_encoder": _section(cfg, "text_encoder"),
                       "autoencoder": _section(cfg, "autoencoder")})
    # The reference set depends on the data and the features, and on the sample count through the
    # noise floor; not on the text encoder or the latent space.
    from study.paths import reference_folder

    folder = reference_folder(cfg)  # a reference set of its own: keyed in (the held-out default keeps its old keys)
    dkey = stable_hash({"data": _data_identity(cfg), "extractor": cfg.eval.feature_extractor,
                        "inception": cfg.eval.inception_path, "n": cfg.eval.num_samples, "layout": LAYOUT,
                        **({"reference": folder} if folder else {})})
    return Prepared(dir=root / f"prepared-{key}-v{LAYOUT}", data_dir=root / f"data-{dkey}")


def _section(cfg, name):
    from study.config import to_dict

    return to_dict(cfg)[name]


def _data_identity(cfg) -> dict:
    """The data section without its operational keys (study.identity.OPERATIONAL_DATA_KEYS): a rerun with
    more prepare actors reuses the prepared folder, since the shards are the same bytes."""
    return data_identity(_section(cfg, "data"))


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic .npy write: a killed write never leaves a file that looks complete."""
    write_atomic(path, lambda f: np.save(f, arr))


def save_json(path: Path, obj) -> None:
    """Atomic JSON write."""
    write_json(path, obj, indent=2)


def _say(msg: str, progress: bool) -> None:
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]prepare[/]: {msg}")


@dataclass
class _Sets:
    """What the text and evaluator stages need from the data, bounded in size for streamed sets."""

    held_captions: list[str]
    held_labels: np.ndarray | None
    held_images: np.ndarray | None  # the embedded set's FID reference (a streamed set's stays in its shards)
    floor_images: np.ndarray | None  # training images for the real-vs-real noise floor (memory-mapped if streamed)
    train_images: np.ndarray | None = None  # embedded sets only: the domain classifier trains on them
    train_labels: np.ndarray | None = None


def _train_small_vae(cfg: StudyConfig, prep: Prepared, images: np.ndarray, progress: bool) -> None:
    from study.autoencoder import train_small_vae

    if cfg.autoencoder.kind != "train" or (prep.autoencoder_dir / "config.json").exists():
        return
    _say(f"training the small autoencoder on {len(images)} images", progress)
    vae = train_small_vae(cfg.autoencoder, images, seed=cfg.data.split_seed, progress=progress)
    tmp = Path(tempfile.mkdtemp(dir=prep.dir, prefix=".ae-"))
    vae.save_pretrained(tmp, safe_serialization=True)
    if prep.autoencoder_dir.exists():
        shutil.rmtree(prep.autoencoder_dir)
    os.replace(tmp, prep.autoencoder_dir)


def _write_embedded(cfg: StudyConfig, prep: Prepared, progress: bool) -> _Sets:
    """An embedded set (the digits, the photographs): split in memory, then written through the same shards as
    real data."""
    from study.autoencoder import load_latent_space
    from study.datasets import load_splits
    from study.shards.format import UNCOND, sample_order, shard_done, shard_name, write_index, write_shard
    from study.text import embed_captions, load_text_encoder

    d = cfg.data
    train, held = load_splits(d)
    _train_small_vae(cfg, prep, np.asarray(train.images), progress)
    folder = prep.shards_dir
    n = cfg.eval.num_samples
    floor = np.asarray(train.images[np.random.default_rng(0).permutation(len(train))[: min(n, len(train))]])
    sets = _Sets(held.captions, held.labels, np.asarray(held.images), floor, np.asarray(train.images), train.labels)
    if (folder / "index.json").exists():
        return sets
    space = load_latent_space(cfg.autoencoder, prep.autoencoder_dir)
    encoder = load_text_encoder(cfg.text_encoder)
    _say(f"encoding {len(train)} training images ({space.name}) and captions ({encoder.name})", progress)
    records = {}
    for split, s in (("train", train), ("heldout", held)):
        order = (sorted(range(len(s)), key=lambda i: sample_order(s.keys[i])) if dataset(d.name).hash_order
                 else list(range(len(s))))
        lat = space.encode(torch.from_numpy(np.asarray(s.images)[order])).half().numpy()
        texts = [s.captions[i] for i in order]
        if d.captions == "tokens":  # token ids: the training step runs the encoder
            context = encoder.tokenize(texts)
        else:  # each distinct caption's hidden states, once
            table, index, _ = embed_captions(encoder, texts)
            context = table[index]
        records[split] = []
        for k, a in enumerate(range(0, len(order), d.shard_size)):
            rows, name = order[a:a + d.shard_size], shard_name(split, k)
            done = shard_done(folder, name)
            if done is None:
                meta = [{"key": s.keys[i], "caption": s.captions[i], "label": int(s.labels[i])} for i in rows]
                sl = slice(a, a + len(rows))
                done = write_shard(folder, name, lat[sl], context[sl], meta,
                                   images=np.asarray(s.images)[rows] if split == "heldout" else None)
            records[split].append({k2: done[k2] for k2 in ("name", "n", "sha256")})
    write_atomic(folder / UNCOND, lambda f: np.save(f, encoder.encode([""]).half().numpy()))
    write_index(folder, d.shard_size, lat.shape[1:], (encoder.max_length, encoder.dim), records, bad_samples=0,
                captions=d.captions)
    return sets


def _sample_images(cfg: StudyConfig, limit: int) -> np.ndarray:
    """Up to `limit` decoded training images, streamed from the first sources (the small VAE's training set)."""
    from study.datasets import dataset
    from study.shards.format import split_of
    from study.shards.readers import decode_image, list_sources, read_source

    d, out = cfg.data, []
    for src in list_sources(dataset(d.name).layout, d.root):
        for rec in read_source(src, d.image_column, d.caption_column, d.key_column):
            if rec.problem is None and split_of(rec.key, d.eval_fraction, d.split_seed) == "train":
                try:
                    out.append(decode_image(rec.image, d.resolution, dataset(d.name).channels))
                except ValueError:
                    continue
                if len(out) >= limit:
                    return np.stack(out)
    return np.stack(out)


def _write_streamed(cfg: StudyConfig, prep: Prepared, progress: bool) -> _Sets:
    """A real data set: the Ray Data pipeline writes the shards; only held-out captions are read back (the
    held-out images are read a shard at a time by the reference statistics' tasks)."""
    from study.shards.format import ShardIndex
    from study.shards.pipeline import FLOOR_FILE, finish_staging, prepare_shards
    from study.shards.readers import list_sources
    from study.text import load_text_encoder

    d, entry = cfg.data, dataset(cfg.data.name)
    folder = prep.shards_dir
    if not (folder / "index.json").exists():
        list_sources(entry.layout, d.root)  # a missing path fails here, before any model is loaded
        if cfg.autoencoder.kind == "train" and not (prep.autoencoder_dir / "config.json").exists():
            _train_small_vae(cfg, prep, _sample_images(cfg, SMALL_VAE_IMAGES), progress)
        uncond = load_text_encoder(cfg.text_encoder).encode([""]).half().numpy()
        _say(f"reading {d.root} ({d.name}) into shards of {d.shard_size}", progress)
        report = prepare_shards(cfg, folder, prep.autoencoder_dir, uncond, entry.channels, progress)
        _say(f"{report['good']} samples in shards, {report['bad']} bad (see prepare_report.json)", progress)
    finish_staging(folder, d.keep_parts)  # a kill after index.json, during the clean-up, left the staging there
    index = ShardIndex.load(folder)
    captions, labels = [], []
    for s in index.shards("heldout"):
        if len(captions) >= d.max_eval_prompts:
            break
        rows = index.meta(s["name"])
        captions += [r["caption"] for r in rows]
        labels += [r["label"] for r in rows]
    floor = np.load(folder / FLOOR_FILE, mmap_mode="r") if (folder / FLOOR_FILE).exists() else None
    has_labels = bool(labels) and all(v is not None for v in labels)
    return _Sets(captions, np.asarray(labels) if has_labels else None, None, floor)


SMALL_VAE_IMAGES = 4096  # images the small autoencoder trains on for a streamed set: a bounded sample


def _prepare_text(cfg: StudyConfig, prep: Prepared, sets: _Sets, progress: bool) -> None:
    from study.text import embed_captions, load_text_encoder

    out = prep.dir
    if (out / "eval_table.npy").exists():
        return
    encoder = load_text_encoder(cfg.text_encoder)
    _say(f"encoding evaluation prompts with {encoder.name}", progress)
    save_npy(out / "uncond.npy", encoder.encode([""]).half().numpy())
    prompts, labels = dataset(cfg.data.name).eval_prompts(cfg.data, sets.held_captions, sets.held_labels)
    etable, eindex, _ = embed_captions(encoder, prompts)
    save_json(out / "eval_prompts.json", prompts)
    if labels is not None:
        save_npy(out / "eval_labels.npy", labels)
    save_npy(out / "eval_index.npy", eindex)
    save_npy(out / "eval_table.npy", etable)  # last: its presence marks the text stage complete


def _prepare_evaluator(cfg: StudyConfig, prep: Prepared, sets: _Sets, progress: bool) -> None:
    from study.metrics import InceptionExtractor, compute_reference, save_classifier, train_digit_classifier
    from study.paths import reference_folder

    if prep.reference_path().exists():
        return
    if cfg.eval.feature_extractor == "classifier":
        if not (prep.evaluator_dir / "config.json").exists():
            _say(f"training the domain classifier (the domain-FID features) on {len(sets.train_images)} images",
                 progress)
            clf = train_digit_classifier(sets.train_images, sets.train_labels, seed=cfg.data.split_seed,
                                         progress=progress)
            save_classifier(clf, prep.evaluator_dir)
        make = functools.partial(_classifier_extractor, str(prep.evaluator_dir))
    else:
        make = functools.partial(InceptionExtractor.from_file, cfg.eval.inception_path)
    extractor = make(device=_device())
    folder, floor = reference_folder(cfg), sets.floor_images
    floor_n = 0 if floor is None else len(floor)
    if folder is None and sets.held_images is not None:  # the embedded digits: a few hundred images in memory
        _say(f"reference statistics of the {len(sets.held_images)} held-out images ({extractor.name})", progress)
        ref = compute_reference(extractor, torch.from_numpy(sets.held_images).float(), prep.data_dir,
                                key_parts={"data": _data_identity(cfg)}, batch_size=cfg.eval.batch_size,
                                floor_images=None if floor is None else torch.from_numpy(floor).float(),
                                floor_n=floor_n)
    else:
        ref = _set_reference(cfg, prep, make, extractor, folder, floor, progress)
    save_json(prep.reference_path(), {"stats": str(prep.data_dir / ref.key), "name": ref.name,
                                       "num_images": ref.num_images, "floor_fid": ref.floor_fid,
                                       "floor_n": ref.floor_n or 0, "reference": folder or "heldout"})


def _classifier_extractor(folder: str, device=None):
    """The domain classifier's features (a picklable maker for the reference tasks)."""
    from study.metrics import ClassifierExtractor, load_classifier

    return ClassifierExtractor(load_classifier(folder, device=device or "cpu"))


def _set_reference(cfg: StudyConfig, prep: Prepared, make, extractor, folder: str | None, floor, progress: bool):
    """Reference statistics of eval.reference's images or of the held-out shards, summed by Ray tasks a shard
    at a time (nothing holds the set), with the real-vs-real noise floor of the floor images."""
    from study.metrics.fid import FeatureSums, fid_from_sums, merge_sums
    from study.metrics.reference import reference_key, save_reference
    from study.metrics.reference_set import (file_stamp, accumulate, array_parts, compute_set_reference, heldout_parts,
                                             list_reference)

    e = cfg.eval
    parts = list_reference(folder) if folder else heldout_parts(prep.shards_dir)
    res = _task_resources(cfg)
    _say(f"reference statistics of {folder or 'the held-out split'} ({len(parts)} files, {extractor.name}) in "
         f"{min(e.reference_shards, len(parts))} tasks", progress)
    # a named folder's statistics depend on it and the features only: every study naming it shares them
    cache = Path(cfg.cache_dir).expanduser() / "reference" if folder else prep.data_dir
    weights = {"weights": file_stamp(Path(e.inception_path).expanduser())} if e.feature_extractor == "inception" else {}
    ref = compute_set_reference(parts, make, extractor.name, cache, weights, e.batch_size, e.reference_shards,
                                e.reference_workers, res, progress)
    if isinstance(floor, np.memmap):  # a streamed set's floor images: on disk, summed by tasks as the reference
        done = prep.data_dir / "floor.shards"
        sums = accumulate(array_parts(floor.filename), make, done, e.batch_size, e.reference_shards,
                          e.reference_workers, res, "noise floor", progress).sums
        shutil.rmtree(done, ignore_errors=True)
    elif floor is not None:
        sums = merge_sums(FeatureSums.of(extractor.features(torch.from_numpy(floor[a:a + e.batch_size]).float())
                                         .detach().cpu().double().numpy()) for a in range(0, len(floor), e.batch_size))
    if floor is not None:  # the FID of all floor images against the reference (noise_floor's n = all of them)
        ref.floor_fid, ref.floor_n = fid_from_sums(sums, ref.mu, ref.sigma), sums.count
    # this data's entry: the set's statistics with this data's floor
    ref.key = reference_key(ref.name, {"set": ref.key, "data": _data_identity(cfg)}, ref.floor_n)
    save_reference(ref, prep.data_dir)
    return ref


def _task_resources(cfg: StudyConfig) -> dict:
    """What each reference task reserves: eval.cpus_per_eval / gpus_per_eval (on a local Ray, at most its CPUs)."""
    import ray

    from study.config import ConfigError
    from study.raycluster import ensure_ray

    cpus, gpus = cfg.eval.cpus_per_eval, cfg.eval.gpus_per_eval
    if ensure_ray(cfg):  # a fixed machine: a task reserving more than it has would wait forever
        have = ray.cluster_resources()
        if gpus > have.get("GPU", 0):
            raise ConfigError(f"eval.gpus_per_eval={gpus:g}, this machine's Ray has {have.get('GPU', 0):g} GPUs: "
                              f"set eval.gpus_per_eval=0 to compute the FID reference on the CPU")
        cpus = min(cpus, have.get("CPU", 1))
    return {"num_cpus": cpus, "num_gpus": gpus}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(cfg: StudyConfig, progress: bool = True, evaluator: bool = True) -> Prepared:
    """Build (or reuse) every cached artefact a study needs; safe to rerun after an interruption.

    With evaluator=False the evaluation features and the FID reference are left out (training and sampling
    need neither): the evaluation stage builds them later by calling this again with evaluator=True.
    """
    prep = prepared_paths(cfg)
    if _cached(prep, evaluator):
        _say(f"cached: {prep.dir}", progress)
        return prep
    if evaluator:
        from study.paths import require_evaluator

        require_evaluator(cfg)  # before the data is read
    # Studies of the same data share the cache: one writes it while the others wait, then reuse it.
    with _cache_lock(prep.dir, progress), _cache_lock(prep.data_dir, progress):
        if _cached(prep, evaluator):
            return prep
        return _prepare(cfg, prep, progress, evaluator)


def _cached(prep: Prepared, evaluator: bool) -> bool:
    return (prep.dir / "meta.json").exists() and (not evaluator or prep.reference_path().exists())


@contextlib.contextmanager
def _cache_lock(folder: Path, progress: bool):
    from study.lock import FolderLockedError, folder_lock

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(folder, "prepare cache"))
        except FolderLockedError as busy:
            print(f"note: {busy}: waiting for it", file=sys.stderr, flush=True)
            stack.enter_context(folder_lock(folder, "prepare cache", wait_s=float("inf")))
        yield


def _prepare(cfg: StudyConfig, prep: Prepared, progress: bool, evaluator: bool) -> Prepared:
    from study.ladder import geometry
    from study.shards.format import ShardIndex

    t0 = time.time()
    prep.dir.mkdir(parents=True, exist_ok=True)
    prep.data_dir.mkdir(parents=True, exist_ok=True)
    _say(f"loading data ({cfg.data.name})", progress)
    write = _write_embedded if dataset(cfg.data.name).layout is None else _write_streamed
    sets = write(cfg, prep, progress)  # cached shards: reads back only the held-out set
    _prepare_text(cfg, prep, sets, progress)
    if evaluator:
        _prepare_evaluator(cfg, prep, sets, progress)
    if (prep.dir / "meta.json").exists():
        return prep
    index = ShardIndex.load(prep.shards_dir)
    geom = geometry(cfg)
    if index.latent_shape != (geom.in_channels, geom.sample_size, geom.sample_size):
        raise RuntimeError(f"latents have shape {index.latent_shape}, the ladder expects "
                           f"{(geom.in_channels, geom.sample_size, geom.sample_size)}: clear {prep.dir}")
    first = index.latents(index.shards("train")[0]["name"])
    save_json(prep.dir / "meta.json", {
        "n_train": index.n("train"), "n_eval_prompts": int(len(prep.array("eval_index"))),
        "n_held_out": index.n("heldout"), "latent_shape": list(index.latent_shape),
        "context_shape": list(index.context_shape),
        "latent_std": float(np.asarray(first[: 2048], dtype=np.float32).std()),
        "data": cfg.data.name, "text_encoder": cfg.text_encoder.kind, "autoencoder": cfg.autoencoder.kind,
        "has_labels": (prep.dir / "eval_labels.npy").exists(), "data_dir": str(prep.data_dir),
        "shards": str(prep.shards_dir), "version": __version__, "seconds": round(time.time() - t0, 1)})
    _say(f"done in {time.time() - t0:.0f} s: {prep.dir}", progress)
    return prep
