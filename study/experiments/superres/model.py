"""4x super-resolution as the SD x4 upscaler does it: the low-res image, noise-augmented, concatenated to the
noisy latents, its noise level given to the UNet as class labels; no text (the empty prompt).

Two formulations of what is diffused (superres.formulation), with the same conditioning:
- "concat": the HR latents themselves (the SD x4 upscaler; SR3 conditions the same way);
- "residual": the HR latents minus the bicubic upsample's, scaled (SRDiff, Li et al. 2022; ResShift, Yue et al.
  2023 shift the same residual): the model learns only the detail bicubic misses, and an output whose residual
  is zero is the bicubic upsample itself, so a briefly trained model starts from the baseline, not below it.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from study.autoencoder import to_unit

# StableDiffusionUpscalePipeline's defaults: noise levels index a 1000-step schedule, at most 350 in use,
# 20 at inference (its __call__ default).
NUM_NOISE_LEVELS = 1000
MAX_NOISE_LEVEL = 350
EVAL_NOISE_LEVEL = 20
FORMULATIONS = ("concat", "residual")
# Recorded in a widened UNet's config, so a checkpoint says how it samples (hidden "_" keys: diffusers keeps
# them silently): the residual's scale, absent for "concat".
RESIDUAL_SCALE_KEY = "_superres_residual_scale"


@lru_cache(maxsize=1)
def low_res_scheduler():
    """The upscaler's low_res_scheduler: DDPM, scaled_linear betas 1e-4 .. 0.02 over 1000 steps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=NUM_NOISE_LEVELS, beta_schedule="scaled_linear", beta_start=1e-4,
                         beta_end=0.02, clip_sample=False)


def augment(lr: torch.Tensor, level: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """The low-res condition with Gaussian noise at `level` [B] (the upscaler's noise augmentation)."""
    noise = torch.randn(lr.shape, generator=gen, device=lr.device, dtype=lr.dtype)
    return low_res_scheduler().add_noise(lr, noise, level.to(lr.device))


def lr_condition(lr: torch.Tensor, grid: int) -> torch.Tensor:
    """LR images in [0, 255] resized (bicubic) to the latent grid, in [-1, 1]: what is concatenated.

    In pixel space the grid is the HR size, so this is the bicubic upsampling; under SD's VAE (1/8) the
    4x-smaller LR image is twice the latent grid and is shrunk to it, as diffusers' LDM super-resolution
    pipeline feeds the low-res image at the latent resolution.
    """
    size = lr.shape[-1]
    if size != grid:
        lr = F.interpolate(lr.float(), size=(grid, grid), mode="bicubic", antialias=grid < size,
                           align_corners=False)
    return to_unit(lr.clamp(0, 255))


def widen_for_superres(base, lr_channels: int, residual_scale: float | None = None,
                       prediction_type: str | None = None):
    """The base UNet with conv_in widened for the concatenated LR image and a noise-level class embedding.

    New input weights and the class embedding are zero, old weights and the bias are kept (instruct-pix2pix
    drops the bias), so before its first step the model computes exactly what the base model did, for any
    LR image and any noise level. residual_scale: the residual formulation's scale, recorded in its config
    (None: the concat formulation). prediction_type: what the fine-tune predicts, recorded in its config (None: the
    base's); "sample" with the residual formulation starts conv_out at zero, so the untrained model predicts a zero
    residual (the bicubic upsample), as ControlNet's zero convolutions start from the model they extend.
    """
    from diffusers import UNet2DConditionModel

    cfg = dict(base.config)
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise ValueError("the base UNet already has a class embedding: super-resolution adds its own noise-level "
                         "embedding and needs a base model without one")
    # from_config resets every key listed here to its default: num_class_embeds would be dropped
    cfg.pop("_use_default_values", None)
    c_in = cfg["in_channels"]
    cfg.update(in_channels=c_in + lr_channels, num_class_embeds=NUM_NOISE_LEVELS)
    with torch.device("cpu"):
        unet = UNet2DConditionModel.from_config(cfg)
    state = {k: v.detach().clone().cpu() for k, v in base.state_dict().items()}
    old = state["conv_in.weight"]
    wide = torch.zeros(old.shape[0], c_in + lr_channels, *old.shape[2:], dtype=old.dtype)
    wide[:, :c_in] = old
    state["conv_in.weight"] = wide  # conv_in.bias is copied as is
    state["class_embedding.weight"] = torch.zeros_like(unet.class_embedding.weight)
    unet.load_state_dict(state)  # strict: any other difference between the two models fails here
    for key in ("prediction_type",):  # settings trainers record on the config survive the surgery
        if key in base.config:
            unet.register_to_config(**{key: base.config[key]})
    if residual_scale is not None:
        if not residual_scale > 0:
            raise ValueError(f"residual_scale={residual_scale}: expected a positive scale (superres.residual_scale)")
        unet.register_to_config(**{RESIDUAL_SCALE_KEY: float(residual_scale)})
    if prediction_type:
        unet.register_to_config(prediction_type=prediction_type)
        if prediction_type == "sample" and residual_scale is not None:
            with torch.no_grad():
                unet.conv_out.weight.zero_()
                unet.conv_out.bias.zero_()
    unet = unet.to(base.device)
    return unet if base.dtype == torch.float32 else unet.to(base.dtype)


def lr_channels(unet) -> int:
    """How many LR channels a widened UNet takes (its input channels beyond its output channels)."""
    extra = unet.config.in_channels - unet.config.out_channels
    if extra <= 0 or not unet.config.get("num_class_embeds"):
        raise ValueError("not a super-resolution UNet (no extra input channels or noise-level embedding): "
                         "widen the base model with widen_for_superres first")
    return extra


def residual_scale(unet) -> float | None:
    """The residual formulation's scale a widened UNet was trained with, or None (the concat formulation)."""
    scale = unet.config.get(RESIDUAL_SCALE_KEY)
    return None if scale is None else float(scale)


def bicubic_latents(space, lr: torch.Tensor, hr_size: int) -> torch.Tensor:
    """The latents of the bicubic upsample of LR images in [0, 255]: what the residual formulation adds to."""
    from study.experiments.superres.data import upsample

    return space.encode(upsample(lr, hr_size))


def to_residual(latents: torch.Tensor, bicubic: torch.Tensor, scale: float) -> torch.Tensor:
    """What the residual formulation diffuses: (HR latents - bicubic latents) x scale."""
    return (latents - bicubic) * scale


def from_residual(residual: torch.Tensor, bicubic: torch.Tensor, scale: float) -> torch.Tensor:
    """HR latents from a sampled residual (the inverse of to_residual)."""
    return bicubic.to(residual) + residual / scale


def superres_loss(unet, scheduler, latents: torch.Tensor, lr: torch.Tensor, context: torch.Tensor,
                  max_noise_level: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """DDPM loss on the HR latents given the noise-augmented LR condition `lr` [B, C', H, W] in [-1, 1]."""
    b, dev = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=gen, device=dev)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen, device=dev)
    # a noise level per sample (the upscaler trains on 0..max_noise_level): robust to LR degradations
    level = torch.randint(0, max_noise_level + 1, (b,), generator=gen, device=dev)
    cond = augment(lr, level, gen)
    noisy = scheduler.add_noise(latents, noise, t)  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4)
    kind = scheduler.config.prediction_type
    target = (scheduler.get_velocity(latents, noise, t) if kind == "v_prediction"
              else latents if kind == "sample" else noise)
    model_input = torch.cat([noisy, cond], dim=1).to(dtype)
    pred = unet(model_input, t, encoder_hidden_states=context.to(dtype), class_labels=level,
                return_dict=False)[0]
    return F.mse_loss(pred.float(), target)


@torch.no_grad()
def upscale(unet, sampler: str, steps: int, lr: torch.Tensor, context: torch.Tensor, noise: torch.Tensor,
            generator: torch.Generator | None = None, noise_level: int = EVAL_NOISE_LEVEL,
            timestep_spacing: str | None = None, prediction_type: str | None = None,
            aug_generator: torch.Generator | None = None) -> torch.Tensor:
    """HR latents from LR conditions `lr` [B, C', H, W] in [-1, 1]: guidance 1, the empty prompt `context`.

    `generator` drives the sampler's own noise (DDPM), `aug_generator` (CPU) the LR noise augmentation.
    """
    from study.sampling import ConcatConditioned, sample

    level = torch.full((lr.shape[0],), int(noise_level), dtype=torch.long)
    cond = augment(lr.float().cpu(), level, aug_generator)
    model = ConcatConditioned(unet, cond, level)
    ctx = context.expand(lr.shape[0], -1, -1)
    return sample(model, sampler, steps, 1.0, ctx, None, noise, generator, timestep_spacing=timestep_spacing,
                  prediction_type=prediction_type)
