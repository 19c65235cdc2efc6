"""The denoising objective (DDPM's loss, as SD1.5 trains): MSE of the UNet's output to the noise (epsilon) or to
v at given timesteps and noise. The trainer draws the timesteps, noise and caption drops; the held-out loss
(study.heldout) fixes them; both compute the loss here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def denoising_loss(unet, scheduler, latents: torch.Tensor, context: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor, dtype: torch.dtype, per_sample: bool = False) -> torch.Tensor:
    """The batch mean (or, per_sample, one MSE per example) of the UNet's error at x_t = sqrt(abar_t) x_0 +
    sqrt(1 - abar_t) eps (DDPM eq. 4), against eps or, for v-prediction, v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
    (for sample-prediction, x_0 itself)."""
    noisy = scheduler.add_noise(latents, noise, t)
    kind = scheduler.config.prediction_type
    target = (scheduler.get_velocity(latents, noise, t) if kind == "v_prediction"
              else latents if kind == "sample" else noise)
    pred = unet(noisy.to(dtype), t, encoder_hidden_states=context.to(dtype), return_dict=False)[0]
    if per_sample:
        return F.mse_loss(pred.float(), target, reduction="none").flatten(1).mean(1)
    return F.mse_loss(pred.float(), target)
