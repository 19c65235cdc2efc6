"""The training schedule, the samplers built from it, and what gets recorded about them."""

from __future__ import annotations

import json

import pytest
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from study.schedulers import SAMPLERS, make_sampler, sampler_settings, training_scheduler


def test_training_schedule_is_sd15():
    s = training_scheduler()
    assert isinstance(s, DDPMScheduler)
    c = s.config
    assert (c.num_train_timesteps, c.beta_schedule, c.beta_start, c.beta_end) == (1000, "scaled_linear", 0.00085, 0.012)
    assert c.clip_sample is False and c.prediction_type == "epsilon"
    assert training_scheduler("v_prediction").config.prediction_type == "v_prediction"
    assert training_scheduler("sample").config.prediction_type == "sample"  # superres.prediction_type
    with pytest.raises(ValueError, match="'epsilon', 'v_prediction', 'sample'"):
        training_scheduler("x0")


@pytest.mark.parametrize(
    ("name", "cls", "spacing"),
    [("ddpm", DDPMScheduler, "leading"), ("ddim", DDIMScheduler, "leading"),
     ("dpmsolver++", DPMSolverMultistepScheduler, "linspace")],
)
def test_samplers_and_default_spacing(name, cls, spacing):
    s = make_sampler(name, training_scheduler("v_prediction"))
    assert type(s) is cls
    assert s.config.timestep_spacing == spacing
    assert s.config.steps_offset == 1 and s.config.prediction_type == "v_prediction"
    assert s.config.beta_schedule == "scaled_linear"
    # A config round-tripped through JSON (as from disk) resolves to the same default.
    from_dict = make_sampler(name, json.loads(json.dumps({k: v for k, v in training_scheduler().config.items()
                                                          if not k.startswith("_")})))
    assert from_dict.config.timestep_spacing == spacing


def test_sampler_overrides():
    ddim = make_sampler("ddim", training_scheduler())
    assert ddim.config.set_alpha_to_one is False and ddim.config.clip_sample is False
    dpm = make_sampler("dpmsolver++", training_scheduler().config)
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("spacing", [None, "leading", "linspace", "trailing"])
def test_settings_are_json_and_record_spacing(name, spacing):
    s = make_sampler(name, training_scheduler(), timestep_spacing=spacing)
    settings = sampler_settings(s)
    # Only JSON's own types (no tuples, numpy scalars or enums), so the results table stores them as given.
    assert all(v is None or type(v) in (str, int, float, bool, list) for v in settings.values()), settings
    # Every setting that changes what the sampler computes is recorded with the value the object holds.
    assert all(settings[k] == (list(v) if isinstance(v, tuple) else v) for k, v in s.config.items() if k in settings)
    assert settings["sampler"] == name and settings["class_name"] == type(s).__name__
    assert settings["timestep_spacing"] == (spacing or s.config.timestep_spacing)
    assert settings["prediction_type"] == "epsilon" and settings["steps_offset"] == 1
    assert ("eta" in settings) == (name == "ddim")
    if name == "dpmsolver++":
        assert settings["algorithm_type"] == "dpmsolver++" and settings["solver_order"] == 2


def test_bad_names():
    with pytest.raises(ValueError, match="allowed: 'ddpm', 'ddim', 'dpmsolver\\+\\+'"):
        make_sampler("euler", training_scheduler())
    with pytest.raises(ValueError, match="allowed: 'leading', 'linspace', 'trailing'"):
        make_sampler("ddim", training_scheduler(), timestep_spacing="uniform")
