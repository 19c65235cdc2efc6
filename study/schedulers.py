"""Noise schedules: SD1.5's training schedule and the three samplers of the study, built from it."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # sample: the clean target (superres.prediction_type)
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

# DDIM's eta: 0 is deterministic DDIM, the default of StableDiffusionPipeline.__call__.
ETA = 0.0


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler of the study: its diffusers class and what SD1.5 pipelines set on top of the training config."""

    cls: type[SchedulerMixin]
    # steps_offset=1 is what SD1.5's scheduler_config.json holds, and StableDiffusionPipeline.__init__ forces it
    # (and clip_sample=False) on any scheduler it is given, so every sampler gets it to sample what the
    # pipeline would.
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, scheduler: SchedulerMixin) -> bool:
        """Whether a scheduler object is this sampler (class, and algorithm where one class has several)."""
        algo = self.overrides.get("algorithm_type")
        return type(scheduler) is self.cls and (algo is None or scheduler.config.get("algorithm_type") == algo)


LCM_DEFAULT_GRID = 50  # LCM-SD's skip grid (original_inference_steps): skip k = 1000 / 50 = 20

# The registry: a new sampler is one entry.
SAMPLER_SPECS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(DDPMScheduler, {"steps_offset": 1, "clip_sample": False}),
    "ddim": SamplerSpec(DDIMScheduler, {"set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}),
    "dpmsolver++": SamplerSpec(DPMSolverMultistepScheduler,
                               {"algorithm_type": "dpmsolver++", "solver_order": 2, "steps_offset": 1}),
    # Consistency sampling of a distilled (guidance-embedded) UNet: one call per step, fresh seeded noise between
    # steps. Its schedules are subsets of the DDIM skip grid the student is distilled on: 50 steps by default
    # (LCM-SD's), or the grid a student records (LCM_GRID_KEY, distill.skip_grid), so sampler and distillation
    # share one grid.
    "lcm": SamplerSpec(LCMScheduler, {"original_inference_steps": LCM_DEFAULT_GRID, "steps_offset": 1,
                                      "clip_sample": False}),
}
SAMPLERS = tuple(SAMPLER_SPECS)
# A distilled UNet's config records the skip grid it was distilled on (hidden "_" key: diffusers keeps it silently).
LCM_GRID_KEY = "_lcm_skip_grid"

# Config keys that change what a sampler computes; recorded with every result.
_RECORDED_KEYS = (
    "num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
    "timestep_spacing", "steps_offset", "clip_sample", "set_alpha_to_one", "variance_type",
    "thresholding", "rescale_betas_zero_snr", "algorithm_type", "solver_order", "solver_type",
    "lower_order_final", "euler_at_final", "final_sigmas_type", "use_karras_sigmas",
    "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "original_inference_steps", "timestep_scaling",
)


def _check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise a ValueError naming the allowed values when value is not one of them."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def training_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """SD1.5's training noise schedule: 1000 steps, scaled_linear betas 0.00085 to 0.012."""
    _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,  # latents are not bounded to [-1, 1]
        prediction_type=prediction_type,
    )


def default_timestep_spacing(name: str) -> str:
    """The timestep spacing diffusers' sampler class uses when none is given."""
    _check_choice("sampler", name, SAMPLERS)
    return inspect.signature(SAMPLER_SPECS[name].cls.__init__).parameters["timestep_spacing"].default


def make_sampler(
    name: str,
    train_config_or_scheduler: SchedulerMixin | Mapping[str, Any],
    timestep_spacing: str | None = None,
    lcm_grid: int | None = None,
) -> SchedulerMixin:
    """A fresh diffusers sampler `name` built from the training scheduler's config, as SD1.5 pipelines do.

    lcm_grid: the LCM sampler's skip grid (original_inference_steps) where a student was distilled on another
    than the default 50 steps (None: the default)."""
    _check_choice("sampler", name, SAMPLERS)
    if lcm_grid is not None and name != "lcm":
        raise ValueError(f"lcm_grid={lcm_grid} is a setting of the lcm sampler, not of {name!r}")
    if timestep_spacing is None:
        # Resolve the class default explicitly: from_config carries the training config's spacing
        # ("leading") into DPM-Solver++ when that config came from disk but not when it came from
        # memory (diffusers drops keys listed in `_use_default_values`), so "default" would depend
        # on where the config came from.
        timestep_spacing = default_timestep_spacing(name)
    timestep_spacing = str(timestep_spacing)  # a config's Spacing choice: diffusers stores a plain string
    _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    config = getattr(train_config_or_scheduler, "config", train_config_or_scheduler)
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a diffusers scheduler or its config, got {type(config).__name__}")
    overrides = {**SAMPLER_SPECS[name].overrides, "timestep_spacing": timestep_spacing}
    if lcm_grid is not None:
        overrides["original_inference_steps"] = int(lcm_grid)
    return SAMPLER_SPECS[name].cls.from_config(config, **overrides)


def sampler_name(scheduler: SchedulerMixin) -> str | None:
    """The study's name for a scheduler object ("ddpm", "ddim", "dpmsolver++"), or None."""
    for name, spec in SAMPLER_SPECS.items():
        if spec.matches(scheduler):
            return name
    return None


def sampler_settings(scheduler: SchedulerMixin) -> dict[str, Any]:
    """The settings of a sampler worth recording with every result, as a JSON-serialisable dict."""
    settings: dict[str, Any] = {"sampler": sampler_name(scheduler), "class_name": type(scheduler).__name__}
    settings.update({k: scheduler.config[k] for k in _RECORDED_KEYS if k in scheduler.config})
    if "eta" in inspect.signature(scheduler.step).parameters:
        settings["eta"] = ETA
    # Round-trip so tuples become lists and anything JSON cannot hold fails here, not at write time.
    return json.loads(json.dumps(settings))
