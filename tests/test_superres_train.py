"""The super-resolution recipe through the real trainer (DeepSpeed under Ray Train): resume after a kill, and
the fine-tune starting from the base milestone's weights."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import trainers
from study.ladder import LADDERS, Geometry, build_unet
from sweeps.experiments.superres import SuperResExperiment
from trainers import checkpoint as ckpt
from trainers.run import TEST_HOOKS_ENV

from train_helpers import fake_prepared, tiny_config

MILESTONES = [128, 256]
SUBDIR = "superres/train"


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return fake_prepared(tmp_path_factory.mktemp("prep"))  # pixel space (identity): only uncond.npy is read


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base milestone folder as the trainer writes it."""
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(3)
    unet = build_unet(LADDERS["tiny"], 8, Geometry(in_channels=1, sample_size=8, context_dim=16, tokens=4))

    class _Ema:
        shadow_params = [p.detach() + 0.01 for p in unet.parameters()]

    ckpt.save_weights(unet, _Ema(), folder)
    (folder / ckpt.STATE).write_text(json.dumps({"train_images": 256}))
    return folder


def _finetune(run_dir, base, *overrides, hooks=None, inline=False):
    cfg = tiny_config("superres.enabled=true", "superres.train_images=256", "superres.batch_size=32",
                      "superres.warmup_images=64", *overrides)
    exp = SuperResExperiment()
    train = {**exp.train_overrides(cfg), "milestones": [0.5, 1.0]}
    if hooks:
        os.environ[TEST_HOOKS_ENV] = json.dumps(hooks)
    try:
        return trainers.train_size(cfg, 8, 0, run_dir, base.parent / "prep", progress=False, recipe=exp.recipe,
                                   init_from=base, train=train, subdir=SUBDIR, options=exp.options(cfg), inline=inline)
    finally:
        os.environ.pop(TEST_HOOKS_ENV, None)


def _weights(run_dir, images, which):
    folder = trainers.run_dir_for(run_dir, 8, 0, SUBDIR) / "checkpoints" / ckpt.milestone_name(images)
    return load_file(folder / f"{which}.safetensors")


@pytest.fixture(scope="module")
def clean(ray_local, prep, base, tmp_path_factory):
    (base.parent / "prep").symlink_to(prep)
    run_dir = tmp_path_factory.mktemp("clean")
    return run_dir, _finetune(run_dir, base, inline=True)  # inline; the killed run below is a Ray Train job


def test_finetune_starts_from_the_base_and_learns_the_lr_input(clean, base):
    run_dir, summary = clean
    assert [r["train_images"] for r in summary["milestones"]] == MILESTONES
    raw, base_ema = _weights(run_dir, 256, "raw"), load_file(base / "ema.safetensors")
    assert raw["conv_in.weight"].shape[1] == 2 and "class_embedding.weight" in raw
    assert torch.count_nonzero(raw["conv_in.weight"][:, 1:]) > 0  # the zero-initialised LR weights moved
    # it started from the base's EMA weights: a deep layer moved by far less than their distance to a fresh init
    name = "mid_block.resnets.0.conv1.weight"
    assert (raw[name] - base_ema[name]).abs().mean() < 0.5 * base_ema[name].abs().mean()


def test_killed_finetune_resumes_to_the_same_checkpoints(clean, base, tmp_path):
    run_dir = tmp_path / "run"
    size_dir = trainers.run_dir_for(run_dir, 8, 0, SUBDIR)
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    with pytest.raises(Exception):  # max_failures=0: the killed worker fails the run
        _finetune(run_dir, base, "train.checkpoint_every_images=32", hooks=hooks)
    assert (tmp_path / "killed").exists() and not (size_dir / "DONE").exists()
    # The same command again, resumed inline (the killed part ran under Ray Train: both launchers replay alike).
    summary = _finetune(run_dir, base, "train.checkpoint_every_images=32", inline=True)
    assert [r["train_images"] for r in summary["milestones"]] == MILESTONES
    for images in MILESTONES:  # bitwise: crops, noise, noise levels and LR augmentation replay exactly
        for which in ("raw", "ema"):
            a, b = _weights(clean[0], images, which), _weights(run_dir, images, which)
            assert all(torch.equal(a[k], b[k]) for k in a), (images, which)


def test_the_experiment_evaluates_its_cells_into_superres_rows(clean, prep, tmp_path):
    """The experiment's chains through the real evaluation task: guidance 1, no search, bicubic beside it."""
    from study.config import to_dict
    from sweeps.eval_grid import run_chain
    from sweeps.experiments import StageContext

    run_dir, summary = clean
    cfg = tiny_config("superres.enabled=true", "superres.num_eval=16", "superres.feature_epochs=1",
                      "superres.samplers=[ddim,dpmsolver++]", "superres.steps=[2]", "eval.batch_size=16",
                      f"runs_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}")
    size_dir = trainers.run_dir_for(run_dir, 8, 0, SUBDIR)
    milestones = [{**m, "path": str(size_dir / m["path"])} for m in trainers.load_milestones(size_dir)]
    ctx = StageContext(cfg, tmp_path, prep, {8: {}}, f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
    chains = SuperResExperiment().chains(ctx, {(8, 0): milestones})
    assert [(c.sampler, c.steps, c.fixed_guidance) for c in chains] == [("ddim", (2,), (1.0,)),
                                                                          ("dpmsolver++", (2,), (1.0,))]
    rung = {"params": 1, "gflops": 1.0, "normalized_cost": 0.5}
    rows = [r for ch in chains for r in run_chain(to_dict(cfg), str(prep), ch, rung, ctx.storage_url)]
    assert len(rows) == 2
    for r in rows:
        assert r["experiment"] == "superres" and r["task"] == "superres4x" and r["guidance"] == 1.0
        assert r["num_samples"] == 16 and r["unet_calls"] == 2 and r["search"] == "none"
        # SSIM ranges over [-1, 1]: a barely trained model's output may correlate negatively with the HR image.
        assert -1 <= r["ssim"] <= 1 and r["lpips"] > 0 and r["bicubic_psnr"] > r["psnr"] - 100
        assert {"bicubic_fid", "bicubic_lpips", "bicubic_ssim", "fid_std", "lpips_std"} <= set(r)
        assert os.path.exists(r["strip_path"]) and os.path.exists(r["hr_strip_path"])
