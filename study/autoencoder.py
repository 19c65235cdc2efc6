"""The latent space: identity (pixels), a small AutoencoderKL trained here, or the SD VAE from disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 / [0, 255] images -> [-1, 1], the range SD's VAE and our pixel space use."""
    return images.float() / 127.5 - 1.0


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float [0, 255], clamped: the convention of the FID extractors."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5)


class LatentSpace:
    """encode: images -> scaled latents; decode: scaled latents -> [0, 255] images."""

    def __init__(self, vae=None, scaling_factor: float = 1.0, name: str = "identity"):
        self.vae, self.scaling_factor, self.name = vae, float(scaling_factor), name
        if vae is not None:
            vae.eval().requires_grad_(False)

    def to(self, device):
        if self.vae is not None:
            self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Latents scaled to unit variance (SD's 0.18215 convention), from the posterior mean."""
        x = to_unit(images)
        if self.vae is None:
            return x
        dev = next(self.vae.parameters()).device
        # The posterior mean is cached once; its std is tiny next to the diffusion noise at every t.
        parts = [self.vae.encode(x[i:i + batch_size].to(dev)).latent_dist.mean.cpu()
                 for i in range(0, len(x), batch_size)]
        return torch.cat(parts) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Float images in [0, 255]."""
        if self.vae is None:
            return to_pixels(latents.float())
        dev = next(self.vae.parameters()).device
        dtype = next(self.vae.parameters()).dtype
        parts = [self.vae.decode((latents[i:i + batch_size] / self.scaling_factor).to(dev, dtype)).sample.float().cpu()
                 for i in range(0, len(latents), batch_size)]
        return to_pixels(torch.cat(parts))


def small_vae_kwargs(ae_cfg, channels: int, resolution: int) -> dict:
    """A small AutoencoderKL for the embedded data: SD's VAE blocks at a CPU scale."""
    n = len(ae_cfg.block_out_channels)
    return dict(in_channels=channels, out_channels=channels, latent_channels=ae_cfg.latent_channels,
                block_out_channels=tuple(ae_cfg.block_out_channels), layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                norm_num_groups=min(8, min(ae_cfg.block_out_channels)), sample_size=resolution)


def train_small_vae(ae_cfg, images: np.ndarray, seed: int = 0, progress: bool = True):
    """Train the small AutoencoderKL (L1 + KL) and measure its latent scaling factor from data."""
    from diffusers import AutoencoderKL
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    vae = AutoencoderKL(**small_vae_kwargs(ae_cfg, images.shape[1], images.shape[-1]))
    opt = torch.optim.AdamW(vae.parameters(), lr=ae_cfg.lr)
    data = to_unit(torch.from_numpy(images))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(ae_cfg.train_steps), desc="prepare: train autoencoder", disable=not progress)
    for _ in bar:
        batch = data[torch.randint(0, len(data), (ae_cfg.train_batch_size,), generator=gen)]
        post = vae.encode(batch).latent_dist
        recon = vae.decode(post.sample(generator=gen)).sample
        rec = (recon - batch).abs().mean()
        loss = rec + ae_cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(l1=f"{rec.item():.4f}")
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(data[i:i + 512]).latent_dist.mean for i in range(0, len(data), 512)])
    # SD's 0.18215 is 1/std of its latents; we measure the same thing on our data.
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    return vae


def load_pretrained_vae(path: str | Path):
    """The SD VAE from a local folder (an SD-style root with vae/, or the VAE folder itself)."""
    from diffusers import AutoencoderKL

    root = Path(path)
    sub = root / "vae" if (root / "vae").exists() else root
    try:
        return AutoencoderKL.from_pretrained(sub, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"autoencoder.path={root}: no AutoencoderKL there (expected config.json and "
                         f"weights, or an SD folder with vae/): {err}") from None


def load_latent_space(ae_cfg, trained_dir: str | Path | None = None) -> LatentSpace:
    """The configured latent space; `trained_dir` holds the small VAE that `study prepare` trained."""
    if ae_cfg.kind == "identity":
        return LatentSpace()
    if ae_cfg.kind == "pretrained":
        vae = load_pretrained_vae(ae_cfg.path)
        return LatentSpace(vae, vae.config.scaling_factor, f"vae:{Path(ae_cfg.path).resolve()}")
    from diffusers import AutoencoderKL

    if trained_dir is None or not (Path(trained_dir) / "config.json").exists():
        raise ValueError("the small autoencoder has not been trained yet: run `study prepare CONFIG` first")
    vae = AutoencoderKL.from_pretrained(trained_dir, local_files_only=True)
    meta = json.loads((Path(trained_dir) / "config.json").read_text())
    return LatentSpace(vae, meta["scaling_factor"], f"small-vae:{Path(trained_dir).name}")
