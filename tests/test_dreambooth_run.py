"""DreamBooth on real prepared data (the smoke config's): the evaluator's metrics and language drift, and a
fine-tune through the shared trainer (Ray Train + DeepSpeed) with the dreambooth recipe, resumed after a kill."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from study.config import load_config
from study.experiments.dreambooth.evaluator import BASE_KEY, objective_value
from study.experiments.dreambooth.prepare import CACHE, prepared_geometry

from dreambooth_helpers import make_base

SMALL = ["dreambooth.enabled=true", "dreambooth.num_class_images=8", "dreambooth.class_steps=2",
         "dreambooth.class_guidance=2.0", "dreambooth.train_images=32", "dreambooth.batch_size=4",
         "dreambooth.lr=1e-3", "dreambooth.samples_per_prompt=4", "dreambooth.class_eval_samples=8",
         "dreambooth.grid_per_prompt=3", "dreambooth.samplers=[ddim]", "dreambooth.steps=[2]",
         "tracking.wandb_mode=disabled", "sweep.max_failures=0"]


@pytest.fixture(scope="module")
def setup(smoke_prepared, smoke_overrides, tmp_path_factory):
    _, prep = smoke_prepared
    tmp = tmp_path_factory.mktemp("dreambooth")
    cfg = load_config("smoke", [*smoke_overrides, f"runs_dir={tmp / 'runs'}", *SMALL])
    base = make_base(tmp / "base", width=8, geom=prepared_geometry(prep.dir))
    return cfg, prep, base, tmp


def test_evaluator_metrics_drift_and_grid(setup):
    from study.tasks import make_evaluator
    from study.weights import load_unet

    cfg, prep, base_dir, _ = setup
    ev = make_evaluator("dreambooth", cfg, prep.dir)
    base = load_unet(base_dir)
    res = ev.evaluate(base, "ddim", 2, 2.0)
    for key in ("subject_fidelity", "prompt_fidelity", "context_fidelity", "class_fid", "class_fid_base",
                "drift_fid", "subject_fidelity_copy", "subject_fidelity_plain", "subject_fidelity_styled"):
        assert isinstance(res[key], float), key
    # the scale's ends on the evaluation's own prompts: each prompt's digit, without and with the style
    from study.metrics.subject import subject_scores

    s = ev.subject
    for key, refs in (("subject_fidelity_plain", s.plain_references), ("subject_fidelity_styled", s.styled_references)):
        want = np.mean([subject_scores(refs[d], s.instance_images, ev.subject_embed) for d in s.eval_labels])
        assert res[key] == pytest.approx(want), key
    assert 0 <= res["prompt_fidelity"] <= 1 and -1 <= res["subject_fidelity"] <= 1
    assert res["num_samples"] == 4 * 4 and res["unet_calls"] == 4
    assert res["language_drift"] == 0 and abs(res["drift_fid"]) < 1e-3  # a base model has not drifted from itself
    assert res["objective"] == pytest.approx(objective_value(res["subject_fidelity"], res["prompt_fidelity"], 0.8, 5.0))
    assert os.path.exists(res["grid_path"]) and str(cfg.runs_dir) in res["grid_path"]
    rows = json.loads(open(res["grid_path"].replace(".png", ".json")).read())["rows"]
    assert rows[0] == "instance images" and rows[1] == "a handwritten digit three in sks style"

    # A "fine-tuned" UNet: changed weights, its base recorded as the recipe records it.
    tuned = load_unet(base_dir)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tuned.register_to_config(**{BASE_KEY: str(base_dir)})
    drifted = ev.evaluate(tuned, "ddim", 2, 2.0)
    assert drifted["class_fid_base"] == pytest.approx(res["class_fid"])  # before: the base, same noise
    assert drifted["drift_fid"] > 0 and drifted["language_drift"] == pytest.approx(
        drifted["class_fid"] - drifted["class_fid_base"])
    assert drifted["grid_path"] != res["grid_path"]
    assert objective_value(0.5, 0.6, 0.8, 5.0) == pytest.approx(-0.5 + 5.0 * 0.2)
    assert objective_value(0.5, 0.9, 0.8, 5.0) == pytest.approx(-0.5)


def _finetune(cfg, prep, base, run_dir, hooks=None, inline=False):
    from sweeps.experiments.dreambooth import DreamBoothExperiment
    from trainers import train_size
    from trainers.run import TEST_HOOKS_ENV

    exp = DreamBoothExperiment()
    if hooks:
        os.environ[TEST_HOOKS_ENV] = json.dumps(hooks)
    try:
        return train_size(cfg, 8, 0, run_dir, prep.dir, progress=False, recipe=exp.recipe, init_from=base,
                          train={**exp.train_overrides(cfg), "checkpoint_every_images": 8}, subdir=exp.subdir,
                          options=exp.options(cfg), inline=inline)
    finally:
        os.environ.pop(TEST_HOOKS_ENV, None)


def test_finetune_resumes_after_kill_and_reuses_class_images(setup, ray_local, tmp_path):
    import trainers

    cfg, prep, base, _ = setup
    clean = _finetune(cfg, prep, base, tmp_path / "clean", inline=True)  # in this process; the killed run: Ray Train
    assert clean["train_images"] == 32
    cache = sorted((prep.dir / CACHE / "class_images").glob("class-*.npy"))
    assert len(cache) == 1
    made = cache[0].stat().st_mtime_ns
    final = trainers.run_dir_for(tmp_path / "clean", 8, 0, "dreambooth/train") / clean["milestones"][-1]["path"]
    assert json.loads((final / "unet.json").read_text())[BASE_KEY] == str(base.resolve())
    tuned, start = load_file(final / "raw.safetensors"), load_file(base / "ema.safetensors")
    assert any(not torch.equal(tuned[k], start[k]) for k in start)  # it trained, from the base's weights

    hooks = {"kill_after_images": 16, "kill_marker": str(tmp_path / "killed")}
    with pytest.raises(Exception):  # max_failures=0: the killed worker fails the run
        _finetune(cfg, prep, base, tmp_path / "run", hooks)
    assert (tmp_path / "killed").exists()
    resumed = _finetune(cfg, prep, base, tmp_path / "run", inline=True)  # the same command again, resumed inline
    assert resumed["train_images"] == 32
    size_dir = trainers.run_dir_for(tmp_path / "run", 8, 0, "dreambooth/train")
    logged = [json.loads(ln)["train_images"] for ln in (size_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == len(set(logged))  # resumed from its checkpoint: nothing logged twice
    again = load_file(size_dir / resumed["milestones"][-1]["path"] / "raw.safetensors")
    for k in tuned:  # the resumed run replays the same batches, noise and optimizer state
        assert torch.equal(again[k], tuned[k]), k
    assert cache[0].stat().st_mtime_ns == made  # the class images were read from the cache, not resampled
