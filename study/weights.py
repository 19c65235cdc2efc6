"""Reading a trained UNet from a checkpoint folder (written by trainers.checkpoint): JSON config plus
safetensors, nothing unpickled. Core, so that evaluation and sampling need not import the trainer."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

STATE = "state.json"  # a checkpoint folder holds it only once complete (trainers.checkpoint.publish)


def load_unet(checkpoint_dir, weights: str = "ema"):
    """A UNet2DConditionModel from a checkpoint folder: JSON config plus safetensors, nothing unpickled."""
    from diffusers import UNet2DConditionModel

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights={weights!r}: expected 'ema' or 'raw'")
    folder = Path(checkpoint_dir)
    if not (folder / STATE).is_file():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (no {STATE}); list them with "
                                f"trainers.load_milestones(<run folder>)")
    config = json.loads((folder / "unet.json").read_text())
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_file(folder / f"{weights}.safetensors"))
    return unet.eval()
