"""The distillation experiment's plan: registered after base, its teachers, training overrides and LCM cells."""

from __future__ import annotations

from pathlib import Path

from study.config import load_config
from sweeps.experiments import StageContext, enabled_experiments


def _ctx(cfg, tmp_path):
    base = {(8, 0): [{"train_images": 128, "path": str(tmp_path / "train/w8-s0/checkpoints/milestone-128")},
                     {"train_images": 256, "path": str(tmp_path / "train/w8-s0/checkpoints/milestone-256")}]}
    return StageContext(cfg=cfg, run_dir=tmp_path, prepared_dir=tmp_path / "prep", rungs={}, storage_url="",
                        trained={"base": base})


def test_plan(tmp_path):
    cfg = load_config("smoke", ["distill.grid_prompts=0", "distill.steps=[8,1,4]", "eval.guidance_min=1.5",
                                "eval.guidance_max=5.0"])
    exps = {e.name: e for e in enabled_experiments(cfg)}
    names = [e.name for e in enabled_experiments(cfg)]
    assert names.index("base") < names.index("distillation")
    exp = exps["distillation"]
    assert (exp.task, exp.recipe, exp.subdir) == ("text2image", "distillation", "distillation/train")
    ctx = _ctx(cfg, tmp_path)
    # The teacher of each (size, seed) is its base run's final milestone.
    assert exp.sources(ctx) == {(8, 0): str(tmp_path / "train/w8-s0/checkpoints/milestone-256")}
    over = exp.train_overrides(cfg)
    assert over["total_images"] == cfg.distill.total_images and over["ema_decay"] == cfg.distill.ema_decay
    # w defaults to the evaluation's guidance range minus one: the search stays where the student learned.
    opts = exp.options(cfg)
    assert (opts["w_min"], opts["w_max"], opts["method"]) == (0.5, 4.0, "lcd")
    sizes = {(8, 0): [{"train_images": 128, "path": str(tmp_path / "distillation/train/w8-s0/m")}]}
    (chain,) = exp.chains(ctx, sizes)
    assert (chain.sampler, chain.steps, chain.experiment, chain.task) == ("lcm", (1, 4, 8), "distillation",
                                                                           "text2image")
    assert not (Path(tmp_path) / "distillation").exists()  # grid_prompts=0: no grids
    disabled = load_config("smoke", ["distill.enabled=false"])
    assert "distillation" not in [e.name for e in enabled_experiments(disabled)]


def test_earlier_milestones_get_the_curve_cell_only(tmp_path):
    """Distillation milestones are the curve of FID against distillation images: the earlier ones are evaluated at
    distill.curve_steps, the last at every one of distill.steps."""
    cfg = load_config("smoke", ["distill.grid_prompts=0", "distill.steps=[1,2,4]", "distill.curve_steps=4"])
    exp = {e.name: e for e in enabled_experiments(cfg)}["distillation"]
    sizes = {(8, 0): [{"train_images": n, "path": str(tmp_path / f"distillation/train/w8-s0/m{n}")}
                      for n in (64, 128, 256)]}
    chains = exp.chains(_ctx(cfg, tmp_path), sizes)
    assert [(c.train_images, c.steps) for c in chains] == [(64, (4,)), (128, (4,)), (256, (1, 2, 4))]
    every = load_config("smoke", ["distill.grid_prompts=0", "distill.steps=[1,2,4]", "distill.curve_steps=0"])
    assert [c.steps for c in exp.chains(_ctx(every, tmp_path), sizes)] == [(1, 2, 4)] * 3
    import pytest

    from study.config import ConfigError

    with pytest.raises(ConfigError, match="distill.curve_steps"):
        load_config("smoke", ["distill.steps=[1,2]", "distill.curve_steps=4"])
