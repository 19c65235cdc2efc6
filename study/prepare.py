"""`study prepare`: encode the data once (latents, text embeddings) and build the evaluator and its
reference statistics; everything is cached on disk, keyed by what it depends on, and reused."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study import __version__
from study.atomic import write_atomic, write_json
from study.config import StudyConfig, config_hash

# Bump when the on-disk layout of a prepared folder changes, so old caches are not misread.
LAYOUT = 1


@dataclass
class Prepared:
    """Where the prepared artefacts of a config live."""

    dir: Path  # latents, text embeddings, evaluation prompts (keyed by data, text encoder, autoencoder)
    data_dir: Path  # evaluator and reference statistics (keyed by data and evaluation features only)

    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

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
    key = config_hash(cfg, "data", "text_encoder", "autoencoder")
    # The reference set depends on the data and the features, and on the sample count through the
    # noise floor; not on the text encoder or the latent space.
    dkey = _hash({"data": _section(cfg, "data"), "extractor": cfg.eval.feature_extractor,
                  "inception": cfg.eval.inception_path, "n": cfg.eval.num_samples, "layout": LAYOUT})
    return Prepared(dir=root / f"prepared-{key}-v{LAYOUT}", data_dir=root / f"data-{dkey}")


def _section(cfg, name):
    from study.config import to_dict

    return to_dict(cfg)[name]


def _hash(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def _eval_prompts(cfg: StudyConfig, held) -> tuple[list[str], np.ndarray | None]:
    """The prompts evaluation samples from: the held-out captions, or COCO captions when given."""
    if cfg.data.eval_captions:
        from study.data import load_coco_captions

        return load_coco_captions(cfg.data.eval_captions, cfg.data.max_eval_prompts, cfg.data.split_seed), None
    texts = held.captions[: cfg.data.max_eval_prompts]
    labels = None if held.labels is None else np.asarray(held.labels[: len(texts)])
    return texts, labels


def _prepare_latents(cfg: StudyConfig, prep: Prepared, train, held, progress: bool) -> None:
    from study.autoencoder import load_latent_space, train_small_vae
    from study.text import embed_captions, load_text_encoder

    out = prep.dir
    if cfg.autoencoder.kind == "train" and not (prep.autoencoder_dir / "config.json").exists():
        _say(f"training the small autoencoder on {len(train)} images", progress)
        vae = train_small_vae(cfg.autoencoder, train.images, seed=cfg.data.split_seed, progress=progress)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".ae-"))
        vae.save_pretrained(tmp, safe_serialization=True)
        if prep.autoencoder_dir.exists():
            shutil.rmtree(prep.autoencoder_dir)
        os.replace(tmp, prep.autoencoder_dir)
    if not (out / "latents.npy").exists():
        space = load_latent_space(cfg.autoencoder, prep.autoencoder_dir)
        _say(f"encoding {len(train)} training images ({space.name})", progress)
        save_npy(out / "latents.npy", space.encode(torch.from_numpy(np.asarray(train.images))).half().numpy())
    if not (out / "eval_table.npy").exists():
        encoder = load_text_encoder(cfg.text_encoder)
        _say(f"encoding captions with {encoder.name}", progress)
        table, index, _ = embed_captions(encoder, train.captions)
        save_npy(out / "caption_table.npy", table)
        save_npy(out / "caption_index.npy", index)
        save_npy(out / "uncond.npy", encoder.encode([""]).half().numpy())
        prompts, labels = _eval_prompts(cfg, held)
        etable, eindex, _ = embed_captions(encoder, prompts)
        save_json(out / "eval_prompts.json", prompts)
        if labels is not None:
            save_npy(out / "eval_labels.npy", labels)
        save_npy(out / "eval_index.npy", eindex)
        save_npy(out / "eval_table.npy", etable)  # last: its presence marks the text stage complete


def _prepare_evaluator(cfg: StudyConfig, prep: Prepared, train, held, progress: bool) -> None:
    from study.metrics import (ClassifierExtractor, InceptionExtractor, compute_reference, load_classifier,
                               save_classifier, train_digit_classifier)

    if prep.reference_path().exists():
        return
    if cfg.eval.feature_extractor == "classifier":
        if not (prep.evaluator_dir / "config.json").exists():
            _say(f"training the digit classifier (the domain-FID features) on {len(train)} images", progress)
            clf = train_digit_classifier(train.images, train.labels, seed=cfg.data.split_seed, progress=progress)
            save_classifier(clf, prep.evaluator_dir)
        extractor = ClassifierExtractor(load_classifier(prep.evaluator_dir))
    else:
        extractor = InceptionExtractor.from_file(cfg.eval.inception_path, device=_device())
    _say(f"reference statistics of the {len(held)} held-out images ({extractor.name})", progress)
    n = cfg.eval.num_samples
    floor_imgs = np.asarray(train.images[np.random.default_rng(0).permutation(len(train))[: min(n, len(train))]])
    ref = compute_reference(extractor, torch.from_numpy(np.asarray(held.images)).float(), prep.data_dir,
                            key_parts={"data": _section(cfg, "data")}, batch_size=cfg.eval.batch_size,
                            floor_images=torch.from_numpy(floor_imgs).float(), floor_n=min(n, len(train)))
    save_json(prep.reference_path(), {"stats": str(prep.data_dir / ref.key), "name": ref.name,
                                       "num_images": ref.num_images,
                                       "floor_fid": ref.floor_fid, "floor_n": min(n, len(train))})


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(cfg: StudyConfig, progress: bool = True) -> Prepared:
    """Build (or reuse) every cached artefact a study needs; safe to rerun after an interruption."""
    from study.data import load_splits
    from study.ladder import geometry

    prep = prepared_paths(cfg)
    if (prep.dir / "meta.json").exists() and prep.reference_path().exists():
        _say(f"cached: {prep.dir}", progress)
        return prep
    t0 = time.time()
    prep.dir.mkdir(parents=True, exist_ok=True)
    prep.data_dir.mkdir(parents=True, exist_ok=True)
    _say(f"loading data ({cfg.data.name})", progress)
    train, held = load_splits(cfg.data)
    _prepare_latents(cfg, prep, train, held, progress)
    _prepare_evaluator(cfg, prep, train, held, progress)
    lat = prep.array("latents")
    table = prep.array("caption_table")
    geom = geometry(cfg)
    if tuple(lat.shape[1:]) != (geom.in_channels, geom.sample_size, geom.sample_size):
        raise RuntimeError(f"latents have shape {lat.shape[1:]}, the ladder expects "
                           f"{(geom.in_channels, geom.sample_size, geom.sample_size)}: clear {prep.dir}")
    save_json(prep.dir / "meta.json", {
        "n_train": int(lat.shape[0]), "n_eval_prompts": int(len(prep.array("eval_index"))),
        "n_held_out": len(held), "latent_shape": list(lat.shape[1:]), "context_shape": list(table.shape[1:]),
        "latent_std": float(np.asarray(lat[: 2048], dtype=np.float32).std()),
        "data": cfg.data.name, "text_encoder": cfg.text_encoder.kind, "autoencoder": cfg.autoencoder.kind,
        "has_labels": (prep.dir / "eval_labels.npy").exists(), "data_dir": str(prep.data_dir),
        "version": __version__, "seconds": round(time.time() - t0, 1)})
    _say(f"done in {time.time() - t0:.0f} s: {prep.dir}", progress)
    return prep
