"""Image grids: `study sample` (a checkpoint, one row per prompt) and the study's grids of the same prompts and
noise through several models (comparison_grid)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _find_config(checkpoint: Path) -> Path:
    for d in (checkpoint, *checkpoint.parents):
        if (d / "config.json").exists() and (d / "metrics.jsonl").exists():
            return d / "config.json"
    raise ValueError(f"{checkpoint}: no training run folder above it (expected config.json and metrics.jsonl "
                     f"in a parent, as `study train` writes): pass a milestone checkpoint folder of a run")


def sample_grid(checkpoint, prompts: list[str], out, sampler: str = "ddim", steps: int = 32,
                guidance: float = 3.0, per_prompt: int = 8, seed: int = 0, weights: str = "ema") -> Path:
    """Sample `per_prompt` images for each prompt and save them as one PNG grid."""
    from torchvision.utils import make_grid, save_image

    from study.autoencoder import load_latent_space
    from study.config import from_dict
    from study.prepare import prepared_paths
    from study.sampling import sample
    from study.text import load_text_encoder
    from study.weights import load_unet

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ValueError(f"checkpoint {checkpoint} does not exist: list a run's milestones in "
                         f"runs/NAME/train/wW-sS/milestones.json")
    cfg = from_dict(json.loads(_find_config(checkpoint).read_text()))
    unet = load_unet(checkpoint, weights=weights)
    encoder = load_text_encoder(cfg.text_encoder)
    space = load_latent_space(cfg.autoencoder, prepared_paths(cfg).autoencoder_dir)
    texts = [p for p in prompts for _ in range(per_prompt)]
    cond, uncond = encoder.encode(texts), encoder.encode([""])
    c, h, w = unet.config.in_channels, unet.config.sample_size, unet.config.sample_size
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(texts), c, h, w), generator=gen)
    lat = sample(unet, sampler, steps, guidance, cond, uncond, noise, generator=gen,
                 prediction_type=cfg.model.prediction_type)
    imgs = space.decode(lat).round().clamp(0, 255) / 255.0  # [N, C, H, W] in [0, 1]
    scale = max(1, 256 // max(imgs.shape[-2:]))  # 8x8 digits are unreadable at native size
    imgs = torch.nn.functional.interpolate(imgs, scale_factor=scale, mode="nearest")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(imgs, nrow=per_prompt, padding=0), out)  # one row per prompt
    return out


def comparison_grid(evaluator, rows: list[tuple[torch.nn.Module, str, int]], guidance: float, n: int, out) -> None:
    """One PNG: a row of n samples per (unet, sampler, steps), all from the evaluator's same prompts and noise."""
    from torchvision.utils import make_grid, save_image

    from study.atomic import write_atomic

    images = [evaluator.generate(unet, sampler, steps, guidance, n=n)[0] for unet, sampler, steps in rows]
    imgs = torch.cat(images).round().clamp(0, 255) / 255.0  # [rows x n, C, H, W]
    scale = max(1, 64 // max(imgs.shape[-2:]))  # 8x8 digits are unreadable at native size
    imgs = torch.nn.functional.interpolate(imgs, scale_factor=scale, mode="nearest")
    grid = make_grid(imgs, nrow=n, padding=2, pad_value=1.0)
    write_atomic(out, lambda f: save_image(grid, f, format="png"))
