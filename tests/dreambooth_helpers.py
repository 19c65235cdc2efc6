"""Test helpers for DreamBooth: a base checkpoint folder written as the trainer writes one."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from study.ladder import LADDERS, Geometry, build_unet


def make_base(folder: Path, width: int = 8, geom: Geometry = Geometry(4, 8, 384, 8), seed: int = 0,
              train_images: int = 1000) -> Path:
    """A complete base checkpoint (unet.json, ema/raw safetensors, state.json) of a random tiny UNet."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = build_unet(LADDERS["tiny"], width, geom)
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    save_file(state, folder / "raw.safetensors")
    save_file(state, folder / "ema.safetensors")
    (folder / "unet.json").write_text(json.dumps(dict(unet.config), default=list))
    (folder / "state.json").write_text(json.dumps({"train_images": train_images, "width": width, "seed": seed}))
    return folder
