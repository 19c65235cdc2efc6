"""The distillation recipe through the real trainer (DeepSpeed under Ray Train): resume after a kill, the
target network saved with every checkpoint, the student's output starting at the teacher's."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import trainers
from study.ladder import LADDERS, Geometry, build_unet
from trainers import checkpoint as ckpt
from trainers.recipes.distillation import lcd_options
from trainers.run import TEST_HOOKS_ENV

from train_helpers import fake_prepared, tiny_config

MILESTONES = [64, 128, 256]
SUBDIR = "distillation/train"


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return fake_prepared(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A base checkpoint folder as the trainer writes it (unet.json, raw/ema safetensors, state.json)."""
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(11)
    unet = build_unet(LADDERS["tiny"], 8, Geometry(in_channels=1, sample_size=8, context_dim=16, tokens=4))

    class _Ema:  # EMA weights that differ from the raw ones, so reading the wrong file would show
        shadow_params = [p.detach() + 0.01 for p in unet.parameters()]

    ckpt.save_weights(unet, _Ema(), folder)
    (folder / ckpt.STATE).write_text(json.dumps({"train_images": 256}))
    return folder


def _cfg(*overrides):
    return tiny_config("distill.enabled=true", "distill.w_min=1.0", "distill.w_max=3.0",
                       "distill.guidance_embed_dim=16", *overrides)


def _distil(run_dir, prep, teacher, *overrides, hooks=None, inline=False):
    cfg = _cfg(*overrides)
    train = {"total_images": 256, "milestones": [0.25, 0.5, 1.0], "batch_size": 32, "lr": 1e-3,
             "ema_decay": cfg.distill.ema_decay, "warmup_images": 0}
    if hooks:
        os.environ[TEST_HOOKS_ENV] = json.dumps(hooks)
    try:
        return trainers.train_size(cfg, 8, 0, run_dir, prep, progress=False, recipe="distillation", init_from=teacher,
                                   train=train, subdir=SUBDIR, options=lcd_options(cfg), inline=inline)
    finally:
        os.environ.pop(TEST_HOOKS_ENV, None)


def _files(run_dir, images):
    folder = trainers.run_dir_for(run_dir, 8, 0, SUBDIR) / "checkpoints" / ckpt.milestone_name(images)
    return {f: load_file(folder / f) for f in ("raw.safetensors", "ema.safetensors", ckpt.EXTRA)}


@pytest.fixture(scope="module")
def clean(ray_local, prep, teacher, tmp_path_factory):
    # Inline (in this process, as a grid's one-worker trial trains): the killed run below is a Ray Train job, so
    # their equality also holds the two launchers to the same computation.
    run_dir = tmp_path_factory.mktemp("clean")
    return run_dir, _distil(run_dir, prep, teacher, inline=True)


def test_distillation_writes_student_and_target(clean, teacher):
    run_dir, summary = clean
    assert [r["train_images"] for r in summary["milestones"]] == MILESTONES
    files = _files(run_dir, 256)
    extra = files[ckpt.EXTRA]
    assert int(extra["target_ema_step"]) == 8  # one target update per optimizer step (256 / 32)
    student = trainers.load_unet(summary["milestones"][-1]["path"] if os.path.isabs(
        summary["milestones"][-1]["path"]) else trainers.run_dir_for(run_dir, 8, 0, SUBDIR) /
        summary["milestones"][-1]["path"])
    assert student.config.time_cond_proj_dim == 16
    # Training moved the student and its guidance projection away from the zero start, and the target
    # network is a separate average of it.
    assert torch.count_nonzero(files["raw.safetensors"]["time_embedding.cond_proj.weight"]) > 0
    teacher_ema = load_file(teacher / "ema.safetensors")
    name = "conv_in.weight"
    assert not torch.equal(files["raw.safetensors"][name], teacher_ema[name])
    assert not torch.equal(extra[f"target.{name}"], files["raw.safetensors"][name])


def test_killed_distillation_resumes_to_the_same_checkpoints(clean, prep, teacher, tmp_path):
    run_dir = tmp_path / "run"
    size_dir = trainers.run_dir_for(run_dir, 8, 0, SUBDIR)
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    with pytest.raises(Exception):  # max_failures=0: the killed worker fails the run
        _distil(run_dir, prep, teacher, "train.checkpoint_every_images=32", hooks=hooks)
    assert (tmp_path / "killed").exists() and not (size_dir / "DONE").exists()
    assert [r["train_images"] for r in trainers.load_milestones(size_dir)] == MILESTONES[:2]
    # The same command again, resumed inline (as a grid's one-worker trial resumes; the killed part ran under
    # Ray Train, so the equality below spans both launchers).
    summary = _distil(run_dir, prep, teacher, "train.checkpoint_every_images=32", inline=True)
    assert [r["train_images"] for r in summary["milestones"]] == MILESTONES
    # Bitwise: the student, its EMA and the target network replay exactly (data order, noise, w, timesteps).
    for images in MILESTONES:
        a, b = _files(clean[0], images), _files(run_dir, images)
        for f in a:
            assert a[f].keys() == b[f].keys()
            for k in a[f]:
                assert torch.equal(a[f][k], b[f][k]), (images, f, k)


def test_a_distilled_run_needs_its_teacher(ray_local, prep, tmp_path):
    cfg = _cfg()
    with pytest.raises(Exception, match="teacher"):
        trainers.train_size(cfg, 8, 0, tmp_path, prep, progress=False, recipe="distillation", init_from=None,
                            train={"total_images": 64, "batch_size": 32}, subdir=SUBDIR, options=lcd_options(cfg))


@pytest.mark.parametrize("name", ["distillation", "superres", "dreambooth"])
def test_a_derived_recipe_without_its_base_fails_in_the_driver_naming_init_from(name, prep):
    from trainers.recipes import RecipeContext, get_recipe

    ctx = RecipeContext(tiny_config(), 8, 0, prep, torch.device("cpu"))
    with pytest.raises(ValueError, match=f"the {name} recipe starts from a trained base model .*pass init_from"):
        get_recipe(name).data(ctx)  # what trainers.run.train_size calls before any worker starts
