"""Classifier-free guided sampling of latents, step for step what StableDiffusionPipeline.__call__ does."""

from __future__ import annotations

import copy
import inspect
import numbers

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

from study import results
from study.schedulers import ETA, LCM_GRID_KEY, SAMPLERS, make_sampler, training_scheduler


def _resolve_scheduler(
    unet: torch.nn.Module,
    scheduler: str | SchedulerMixin,
    prediction_type: str | None,
    timestep_spacing: str | None,
) -> SchedulerMixin:
    """A private scheduler for one sampling run: built from a name, or a copy of the caller's object."""
    if isinstance(scheduler, str):
        if scheduler not in SAMPLERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; allowed: {', '.join(map(repr, SAMPLERS))}")
        # Trainers may record it with unet.register_to_config(prediction_type=...); it survives save/load.
        prediction_type = prediction_type or unet.config.get("prediction_type") or "epsilon"
        # A distilled student samples on the skip grid it was distilled on (LCM_GRID_KEY, recorded by its recipe).
        grid = unet.config.get(LCM_GRID_KEY) if scheduler == "lcm" else None
        return make_sampler(scheduler, training_scheduler(prediction_type), timestep_spacing, lcm_grid=grid)
    if not isinstance(scheduler, SchedulerMixin):
        raise TypeError(f"scheduler must be one of {SAMPLERS} or a diffusers scheduler, got {type(scheduler).__name__}")
    if prediction_type is not None and prediction_type != scheduler.config.prediction_type:
        raise ValueError(
            f"prediction_type={prediction_type!r} contradicts the scheduler's {scheduler.config.prediction_type!r}"
        )
    if timestep_spacing is not None:
        return type(scheduler).from_config(scheduler.config, timestep_spacing=timestep_spacing)
    # set_timesteps and multistep solvers keep state on the object: leave the caller's untouched.
    return copy.deepcopy(scheduler)


def guidance_embedded(unet: torch.nn.Module) -> bool:
    """Whether the UNet takes the guidance scale as an input (time_cond_proj_dim, as LCM-distilled UNets)."""
    return unet.config.get("time_cond_proj_dim") is not None


def uses_cfg(unet: torch.nn.Module, guidance: float) -> bool:
    """Whether sampling runs the unconditional half too: the rule of StableDiffusionPipeline."""
    # Guidance 1 is the conditional model alone; a guidance-embedded UNet gets the scale as an input instead.
    return guidance > 1.0 and not guidance_embedded(unet)


def unet_calls(unet: torch.nn.Module, steps: int, guidance: float) -> int:
    """UNet evaluations per sample of this UNet (study.results.unet_calls' rule)."""
    return results.unet_calls(steps, guidance, guidance_embedded(unet))


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The sinusoidal embedding of 1000 w [B] -> [B, dim] that LCM-style UNets take as timestep_cond."""
    from diffusers import LatentConsistencyModelPipeline

    # diffusers' own function (it reads no pipeline state), so sampling and distillation embed w exactly as
    # LatentConsistencyModelPipeline and StableDiffusionPipeline do.
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


@torch.no_grad()  # no_grad, not inference_mode: the latents may feed a later autograd graph (distillation)
def sample(
    unet: torch.nn.Module,
    scheduler: str | SchedulerMixin,
    steps: int,
    guidance: float,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    latents: torch.Tensor,
    generator: torch.Generator | list[torch.Generator] | None = None,
    *,
    prediction_type: str | None = None,
    timestep_spacing: str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Denoise `latents` [B, C, H, W] in `steps` steps with guidance scale `guidance`; returns final latents.

    A guidance-embedded UNet (time_cond_proj_dim) gets the scale as an input and one call per step, as
    diffusers' pipelines do; with the lcm sampler that is LatentConsistencyModelPipeline step for step.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    scheduler = _resolve_scheduler(unet, scheduler, prediction_type, timestep_spacing)
    device, dtype = unet.device, unet.dtype
    batch = latents.shape[0]
    do_cfg = uses_cfg(unet, guidance)
    timestep_cond = None
    if guidance_embedded(unet):
        # Both pipelines embed w = guidance - 1 (the LCM paper's w, Imagen's scale minus one) for every sample.
        w = torch.full((batch,), float(guidance) - 1.0)
        timestep_cond = guidance_embedding(w, unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

    cond = cond.to(device=device, dtype=dtype)
    if cond.shape[0] != batch:
        raise ValueError(f"cond has batch {cond.shape[0]}, latents have {batch}")
    if do_cfg:
        if uncond is None:
            raise ValueError("guidance > 1 needs uncond (the unconditional encoder hidden states)")
        uncond = uncond.to(device=device, dtype=dtype)
        if uncond.shape[0] not in (1, batch):
            raise ValueError(f"uncond has batch {uncond.shape[0]}; expected 1 or {batch}")
        # Same order as the pipeline: unconditional half first.
        encoder_hidden_states = torch.cat([uncond.expand(batch, -1, -1), cond])
    else:
        encoder_hidden_states = cond

    scheduler.set_timesteps(steps, device=device)
    latents = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    # As the pipeline's prepare_extra_step_kwargs: eta only for schedulers that take it (DDIM).
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {}
    if "eta" in step_params:
        step_kwargs["eta"] = ETA
    if "generator" in step_params:
        step_kwargs["generator"] = generator

    for t in tqdm(scheduler.timesteps, disable=not progress, desc="sampling"):
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise_pred = unet(model_input, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                          return_dict=False)[0]
        if do_cfg:
            noise_uncond, noise_cond = noise_pred.chunk(2)
            # Classifier-free guidance (Ho & Salimans 2022) in the pipeline's form.
            noise_pred = noise_uncond + guidance * (noise_cond - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
    return latents


class ConcatConditioned:
    """A UNet that gets `concat` [B, C', H, W] appended to its noisy input and `class_labels` [B] at every call.

    This is StableDiffusionUpscalePipeline's conditioning (the noise-augmented low-res image after
    scale_model_input, its noise level as class labels): `sample(ConcatConditioned(unet, lr, level), ...)`
    runs super-resolution with every sampler through the one sampling loop.
    """

    def __init__(self, unet: torch.nn.Module, concat: torch.Tensor, class_labels: torch.Tensor | None = None):
        self.unet, self.config, self.device, self.dtype = unet, unet.config, unet.device, unet.dtype
        self.concat = concat.to(device=unet.device, dtype=unet.dtype)
        self.class_labels = None if class_labels is None else class_labels.to(unet.device)

    def __call__(self, sample: torch.Tensor, timestep, **kwargs):
        reps, rest = divmod(sample.shape[0], self.concat.shape[0])  # 2 under classifier-free guidance
        if rest or sample.shape[-2:] != self.concat.shape[-2:]:
            raise ValueError(f"the condition has shape {tuple(self.concat.shape)}, the noisy input "
                             f"{tuple(sample.shape)}: they need the same grid and batch")
        labels = None if self.class_labels is None else self.class_labels.repeat(reps)
        return self.unet(torch.cat([sample, self.concat.repeat(reps, 1, 1, 1)], dim=1), timestep,
                         class_labels=labels, **kwargs)
