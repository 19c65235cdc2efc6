"""One-worker runs of a training grid train inline, in their Tune trial's own actor (no Ray Train job): a killed
trial retried by Tune from `latest` to the weights of an uninterrupted run, the actor reused for the next size.
(That inline and Ray Train runs compute the same weights: tests/test_train.py, whose reference run is inline.)"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import trainers
from trainers import checkpoint as ckpt
from trainers.run import TEST_HOOKS_ENV

from train_helpers import fake_prepared, tiny_config

pytestmark = pytest.mark.slow

MILESTONES = [64, 128, 256]  # tiny_config: 0.25, 0.5, 1.0 of 256 images in batches of 32


@pytest.fixture(scope="module")
def killing_ray(tmp_path_factory):
    """A local Ray whose workers kill the first run that reaches 160 images, once (the hooks travel in the
    workers' environment: a grid's runs start in Ray's processes, not in this one)."""
    import ray

    marker = tmp_path_factory.mktemp("hooks") / "killed"
    if ray.is_initialized():
        ray.shutdown()
    hooks = {"kill_after_images": 160, "kill_marker": str(marker)}
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {TEST_HOOKS_ENV: json.dumps(hooks)}})
    yield marker
    ray.shutdown()


def _pids(run_dir, width):
    rows = (trainers.run_dir_for(run_dir, width, 0) / "nodes.jsonl").read_text().splitlines()
    return [json.loads(r)["pid"] for r in rows]


def _weights(run_dir, width, images, which):
    folder = trainers.run_dir_for(run_dir, width, 0) / "checkpoints" / ckpt.milestone_name(images)
    return load_file(folder / f"{which}.safetensors")


def test_killed_inline_trial_resumes_to_an_uninterrupted_runs_weights_and_its_actor_trains_the_next_size(
        killing_ray, tmp_path):
    from sweeps.train_grid import inline_training, run_train_grid

    prep = fake_prepared(tmp_path / "prep")
    # One trial at a time: the widest (16) first, killed at 160 images and retried; then 8.
    overrides = ["model.widths=[8,16]", "train.checkpoint_every_images=32", "sweep.max_concurrent_trials=1",
                 f"runs_dir={tmp_path}"]
    cfg = tiny_config(*overrides)
    assert inline_training(cfg.train)  # one worker per run
    out = run_train_grid(cfg, tmp_path / "grid", prep, progress=False)

    assert out["errors"] == [] and out["trials"] == 2
    assert killing_ray.exists()  # the kill happened; Tune's retry (sweep.trial_retries) finished the run
    for w in (8, 16):
        size_dir = trainers.run_dir_for(tmp_path / "grid", w, 0)
        assert (size_dir / "DONE").exists()
        assert [r["train_images"] for r in trainers.load_milestones(size_dir)] == MILESTONES
    killed, retried = _pids(tmp_path / "grid", 16)  # the killed process, then the retry's
    assert killed != retried and os.getpid() not in (killed, retried)  # trained in Ray's processes
    assert _pids(tmp_path / "grid", 8) == [retried]  # the actor that finished 16 then trained 8
    metrics = [json.loads(ln)["train_images"] for ln in
               (trainers.run_dir_for(tmp_path / "grid", 16, 0) / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(32, 257, 32))  # resumed from `latest` at 160: nothing logged twice

    # The same run uninterrupted (inline in this process): the same weights at every milestone.
    reference = tmp_path / "uninterrupted"
    trainers.train_size(tiny_config(*overrides), 16, 0, reference, prep, progress=False, inline=True)
    assert _pids(reference, 16) == [os.getpid()]
    for images in MILESTONES:
        for which in ("raw", "ema"):
            a, b = _weights(tmp_path / "grid", 16, images, which), _weights(reference, 16, images, which)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (images, which)


def test_inline_is_for_one_worker_only(tmp_path):
    from sweeps.train_grid import inline_training

    assert not inline_training(tiny_config("train.num_workers=2").train)
    with pytest.raises(ValueError, match="one worker"):
        trainers.train_size(tiny_config("train.num_workers=2"), 8, 0, tmp_path, fake_prepared(tmp_path / "p"),
                            progress=False, inline=True)
    assert not trainers.run_dir_for(tmp_path, 8, 0).exists()  # refused before the run folder is written
