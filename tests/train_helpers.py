"""Test helpers for the trainer: a fake prepared-data folder and a tiny training config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from study.config import load_config


# The smoke config shrunk for the tests that run it (the smoke fixtures and the fault tests share it).
SMOKE_TEST_OVERRIDES = ["autoencoder.train_steps=30", "eval.num_samples=32", "eval.batch_size=32"]

def fake_prepared(root: Path, n: int = 256, c: int = 1, h: int = 8, t: int = 4, d: int = 16,
                  captions: int = 10, seed: int = 0) -> Path:
    """A prepared-data folder as `study prepare` writes it, filled with random float16 arrays."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(root / "latents.npy", rng.standard_normal((n, c, h, h)).astype(np.float16))
    np.save(root / "caption_table.npy", rng.standard_normal((captions, t, d)).astype(np.float16))
    np.save(root / "caption_index.npy", rng.integers(0, captions, n).astype(np.int64))
    np.save(root / "uncond.npy", rng.standard_normal((1, t, d)).astype(np.float16))
    (root / "meta.json").write_text(json.dumps({"n_train": n, "latent_shape": [c, h, h], "context_shape": [t, d]}))
    return root


def tiny_config(*overrides: str):
    """Width 8 of the tiny ladder, 256 images in batches of 32, W&B off, one CPU worker."""
    return load_config(None, [
        "name=t", "model.widths=[8]", "train.total_images=256", "train.batch_size=32",
        "train.milestones=[0.25,0.5,1.0]", "train.loss_milestones=[]", "train.lr=1e-3", "train.ema_decay=0.9",
        "tracking.wandb_mode=disabled", "sweep.max_failures=0", *overrides])
