"""SD1.5's training objective with caption dropout for classifier-free guidance."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def step_generator(device: torch.device, seed: int, step: int, rank: int, micro: int) -> torch.Generator:
    """A generator seeded by position alone, so noise, timesteps and drops replay exactly on resume."""
    key = int(np.random.SeedSequence([seed, step, rank, micro]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(key)


def diffusion_loss(unet, scheduler, latents: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor,
                   cond_drop_prob: float, gen: torch.Generator, dtype: torch.dtype,
                   per_sample: bool = False) -> torch.Tensor:
    """DDPM loss at uniform t in [0, T): MSE to the noise (epsilon) or to v (v-prediction).

    per_sample: one MSE per example instead of the batch mean (DreamBooth weighs its two halves apart)."""
    b, dev = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen, device=dev)
    # Classifier-free guidance training (Ho & Salimans 2022): replace the caption by the empty prompt.
    drop = torch.rand(b, generator=gen, device=dev) < cond_drop_prob
    context = torch.where(drop[:, None, None], uncond.expand_as(context), context)
    noisy = scheduler.add_noise(latents, noise, t)  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)  # v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
    else:
        target = noise
    pred = unet(noisy.to(dtype), t, encoder_hidden_states=context.to(dtype), return_dict=False)[0]
    if per_sample:
        return F.mse_loss(pred.float(), target, reduction="none").flatten(1).mean(1)
    return F.mse_loss(pred.float(), target)
