"""SD1.5's training objective with caption dropout for classifier-free guidance."""

from __future__ import annotations

import numpy as np
import torch

from study.objective import denoising_loss


def step_generator(device: torch.device, seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    """A generator seeded by position alone, so noise, timesteps and drops replay exactly on resume."""
    key = int(np.random.SeedSequence([seed, step, rank, micro]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(key)


def diffusion_loss(unet, scheduler, latents: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor,
                   cond_drop_prob: float, gen: torch.Generator, dtype: torch.dtype,
                   per_sample: bool = False) -> torch.Tensor:
    """DDPM loss at uniform t in [0, T) (study.objective): MSE to the noise (epsilon) or to v (v-prediction).

    per_sample: one MSE per example instead of the batch mean (DreamBooth weighs its two halves apart)."""
    b, dev = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen, device=dev)
    # Classifier-free guidance training (Ho & Salimans 2022): replace the caption by the empty prompt.
    drop = torch.rand(b, generator=gen, device=dev) < cond_drop_prob
    context = torch.where(drop[:, None, None], uncond.expand_as(context), context)
    return denoising_loss(unet, scheduler, latents, context, noise, t, dtype, per_sample)
