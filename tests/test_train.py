"""The trainer end to end on CPU: budgets, milestones, resume, atomic checkpoints, failures, data parallel."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainers
from study.config import ConfigError
from study.ladder import LADDERS, ladder
from trainers import checkpoint as ckpt
from trainers.budget import milestone_steps, plan, warmup_lr
from trainers.data import PreparedData
from trainers.rundir import truncate_metrics
from trainers.run import TEST_HOOKS_ENV

from train_helpers import fake_prepared, tiny_config

MILESTONES = [64, 128, 256]  # 0.25, 0.5, 1.0 of 256 images in batches of 32


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return fake_prepared(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="module")
def clean(ray_local, prep, tmp_path_factory):
    """One uninterrupted run: the reference every other run is compared with. Trained inline (in this process,
    as a grid's one-worker trial trains); the runs compared with it are Ray Train jobs."""
    run_dir = tmp_path_factory.mktemp("clean")
    return run_dir, trainers.train_size(tiny_config(), 8, 0, run_dir, prep, progress=False, inline=True)


def _train(run_dir, prep, *overrides, hooks=None, width=8, inline=False):
    if hooks:
        os.environ[TEST_HOOKS_ENV] = json.dumps(hooks)
    try:
        return trainers.train_size(tiny_config(*overrides), width, 0, run_dir, prep, progress=False, inline=inline)
    finally:
        os.environ.pop(TEST_HOOKS_ENV, None)


def _weights(run_dir, images, which="ema"):
    folder = trainers.run_dir_for(run_dir, 8, 0) / "checkpoints" / ckpt.milestone_name(images)
    return load_file(folder / f"{which}.safetensors")


def _assert_same_weights(run_a, run_b):
    # Bitwise: with a fixed thread count CPU training is deterministic, and a resumed run replays the same
    # data order, noise, optimizer and EMA state. (Across ZeRO stages only up to float noise, which Adam
    # amplifies where gradients are near its eps, so stages are not compared with each other.)
    for images in MILESTONES:
        folder = trainers.run_dir_for(run_a, 8, 0) / "checkpoints" / ckpt.milestone_name(images)
        # phema*: each rank's share of the post-hoc EMA profiles continues exactly too
        for which in ("raw", "ema", *sorted(p.name.removesuffix(".safetensors") for p in folder.glob("phema*"))):
            a, b = _weights(run_a, images, which), _weights(run_b, images, which)
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (images, which, k)


# --- pure units -----------------------------------------------------------------------------------

def test_milestones_round_to_whole_batches():
    # round(f x total) to the nearest whole global batch, at least one; the full budget is always one.
    assert milestone_steps(1000, [0.25, 0.5, 1.0], 64) == (4, 8, 16)  # 250/64=3.9, 500/64=7.8, 1000/64=15.6
    assert milestone_steps(1000, [0.1], 64) == (2, 16)  # 1.0 is added
    assert milestone_steps(100, [0.01, 1.0], 64) == (1, 2)  # never zero; 100/64 = 1.56 rounds to 2
    with pytest.raises(ConfigError, match="train.milestones"):
        milestone_steps(256, [0.1, 0.2, 1.0], 128)
    b = plan(tiny_config().train, fwd_flops=1e6)
    assert b.milestone_steps == (2, 4, 8) and b.total_images == 256
    assert b.point(128) == {"train_images": 128, "train_steps": 4, "train_flops": 3 * 1e6 * 128,
                            "train_flops_paper": 1e6 * 4}
    # Loss-only budgets join the checkpoints; one on an FID milestone's step is that milestone; a derived run
    # (with_train) has none of the base's.
    from study.config import with_train

    lb = plan(replace(tiny_config().train, loss_milestones=[0.125, 0.375, 0.5]), fwd_flops=1e6)
    assert lb.milestone_steps == (2, 4, 8) and lb.loss_steps == (1, 3)
    # two loss-only fractions on one step are one budget
    assert plan(replace(tiny_config().train, loss_milestones=[0.1, 0.11]), fwd_flops=1e6).loss_steps == (1,)
    cfg = tiny_config()
    cfg.train.loss_milestones = [0.125]
    assert with_train(cfg, {"total_images": 64}).train.loss_milestones == []
    assert warmup_lr(1.0, 0, 32) == 1.0 and warmup_lr(1.0, 128, 32) == 0.25 and warmup_lr(1.0, 128, 512) == 1.0


def test_data_order_is_a_pure_function_of_position(tmp_path):
    root = fake_prepared(tmp_path, n=10)
    a, b = PreparedData(root, seed=3), PreparedData(root, seed=3)
    stream = a.indices(0, 30)
    for epoch in range(3):  # every epoch is a permutation, and epochs differ
        assert sorted(stream[10 * epoch:10 * epoch + 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    assert np.array_equal(b.indices(7, 9), stream[7:16])  # a fresh reader resumes mid-stream identically
    assert not np.array_equal(PreparedData(root, seed=4).indices(0, 10), stream[:10])
    lat, ctx = a.batch(7, 9, torch.device("cpu"))
    assert lat.shape == (9, 1, 8, 8) and ctx.shape == (9, 4, 16) and lat.dtype == torch.float32
    assert torch.equal(lat[0], torch.from_numpy(np.load(root / "latents.npy")[stream[7]].astype(np.float32)))
    (root / "uncond.npy").unlink()
    with pytest.raises(FileNotFoundError, match="study prepare"):
        PreparedData(root, seed=0)


def test_atomic_publish_and_recovery(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()

    def folder(name, images):
        tmp = root / f".tmp-{name}"
        tmp.mkdir()
        (tmp / ckpt.STATE).write_text(json.dumps({"train_images": images}))
        return tmp

    ckpt.publish(folder("a", 32), root / ckpt.LATEST)
    ckpt.publish(folder("b", 64), root / ckpt.LATEST)  # replaces a non-empty folder
    assert ckpt.complete(root) == [(64, root / ckpt.LATEST)]
    # A write killed before its rename leaves only a temp folder: ignored, then cleaned.
    (root / ".tmp-milestone-0000000096-0000000096").mkdir()
    (root / ".tmp-milestone-0000000096-0000000096" / "raw.safetensors").write_bytes(b"partial")
    # A kill between the two renames of a swap leaves `latest` moved aside: it is restored.
    os.replace(root / ckpt.LATEST, root / ".old-latest-1234")
    assert ckpt.complete(root) == []
    ckpt.recover(root)
    assert sorted(p.name for p in root.iterdir()) == [ckpt.LATEST]
    assert ckpt.complete(root) == [(64, root / ckpt.LATEST)]


def test_metrics_truncated_to_the_resumed_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"train_images": i}) + "\n" for i in (32, 64, 96)) + '{"train_ima')
    truncate_metrics(path, 64)
    assert [json.loads(ln)["train_images"] for ln in path.read_text().splitlines()] == [32, 64]


def test_deepspeed_builds_no_comm_op():
    import importlib

    from trainers.engine import _skip_shm_comm_op

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # `deepspeed.comm.torch` the attribute is torch

    _skip_shm_comm_op()
    assert ds_torch.build_shm_op() is None  # otherwise a 60-100 s C++ build on first use


# --- end to end through Ray Train and DeepSpeed --------------------------------------------------

def test_budget_accounting(clean, prep):
    run_dir, summary = clean
    size_dir = trainers.run_dir_for(run_dir, 8, 0)
    rung = ladder("tiny", [8], PreparedData(prep, 0).geometry)[0]
    assert summary["train_images"] == 256 and summary["train_steps"] == 8
    assert summary["train_flops"] == pytest.approx(3 * rung.flops * 256)
    assert summary["train_flops_paper"] == pytest.approx(rung.flops * 8)  # forward FLOPs x iterations
    rows = trainers.load_milestones(size_dir)
    assert [r["train_images"] for r in rows] == MILESTONES and rows == summary["milestones"]
    for r in rows:
        assert r["train_flops"] == pytest.approx(3 * rung.flops * r["train_images"])
        assert r["train_flops_paper"] == pytest.approx(rung.flops * r["train_images"] / 32)
        assert (r["width"], r["seed"], r["params"], r["gflops"]) == (8, 0, rung.params, rung.gflops)
        assert (size_dir / r["path"] / ckpt.STATE).is_file()
    metrics = [json.loads(ln) for ln in (size_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_images"] for m in metrics] == list(range(32, 257, 32))
    assert {"loss", "train_flops", "images_per_s", "lr", "elapsed_s"} <= metrics[-1].keys()
    # The final milestone is the newest checkpoint; `latest` was dropped, never a hard link sharing its files.
    assert ckpt.complete(size_dir / "checkpoints")[-1] == (256, size_dir / "checkpoints" / ckpt.milestone_name(256))
    assert not (size_dir / "checkpoints" / ckpt.LATEST).exists()
    assert (size_dir / "DONE").is_file() and (size_dir / "config.json").is_file()


def test_rerun_skips_and_mismatch_names_the_key(clean, prep):
    run_dir, summary = clean
    t = time.time()
    again = _train(run_dir, prep)
    assert again["skipped"] and again["milestones"] == summary["milestones"] and time.time() - t < 5
    _train(run_dir, prep, "train.log_every_images=64")  # operational settings may change
    with pytest.raises(ConfigError, match=r"train\.lr=0\.001.*train\.lr=0\.002.*--fresh"):
        _train(run_dir, prep, "train.lr=2e-3")


def test_load_unet_round_trip(clean):
    run_dir, summary = clean
    folder = trainers.run_dir_for(run_dir, 8, 0) / summary["milestones"][-1]["path"]
    ema, raw = trainers.load_unet(folder), trainers.load_unet(folder, weights="raw")
    stored = load_file(folder / "ema.safetensors")
    for k, v in ema.state_dict().items():
        assert torch.equal(v, stored[k])
    assert not all(torch.equal(a, b) for a, b in zip(ema.parameters(), raw.parameters()))
    assert list(ema.config.block_out_channels) == [8 * m for m in LADDERS["tiny"].multipliers]
    x, ctx = torch.randn(2, 1, 8, 8), torch.randn(2, 4, 16)
    assert ema(x, torch.tensor([10, 500]), encoder_hidden_states=ctx).sample.shape == x.shape
    torch.load(folder / "optimizer-rank0.pt", weights_only=True)  # no pickled objects
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        trainers.load_unet(folder.parent)


def test_resume_after_kill_matches_clean_run(clean, prep, tmp_path):
    run_dir = tmp_path / "run"
    size_dir = trainers.run_dir_for(run_dir, 8, 0)
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    with pytest.raises(Exception):  # max_failures=0: the killed worker fails the run
        _train(run_dir, prep, "train.checkpoint_every_images=32", hooks=hooks)
    assert (tmp_path / "killed").exists() and not (size_dir / "DONE").exists()
    assert [r["train_images"] for r in trainers.load_milestones(size_dir)] == MILESTONES[:2]
    before = {p.name: (p / "raw.safetensors").stat().st_ino for p in (size_dir / "checkpoints").glob("milestone-*")}
    # A kill between publishing a milestone and indexing it: the rerun indexes it (without rewriting it).
    (size_dir / "milestones.json").write_text(json.dumps(trainers.load_milestones(size_dir)[:1]))
    # Leftovers of a write killed mid-way: a temp folder must be ignored and cleaned.
    (size_dir / "checkpoints" / ".tmp-latest-0000000192").mkdir()
    (size_dir / "checkpoints" / ".tmp-latest-0000000192" / "raw.safetensors").write_bytes(b"partial")

    # The same command again, inline, as `study run` resumes a one-worker run (in its Tune trial); the killed
    # part ran as a Ray Train job.
    summary = _train(run_dir, prep, "train.checkpoint_every_images=32", inline=True)
    assert [r["train_images"] for r in summary["milestones"]] == MILESTONES
    after = {p.name: (p / "raw.safetensors").stat().st_ino for p in (size_dir / "checkpoints").glob("milestone-*")}
    assert all(after[k] == v for k, v in before.items())  # earlier milestones were not written again
    assert not list((size_dir / "checkpoints").glob(".tmp-*"))
    metrics = [json.loads(ln)["train_images"] for ln in (size_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(32, 257, 32))  # resumed from 160: nothing logged twice
    _assert_same_weights(clean[0], run_dir)


def test_loss_only_budgets_are_weights_only_checkpoints_that_change_nothing_the_run_computes(clean, prep, tmp_path):
    # train.loss_milestones: 32 and 96 images (steps 1 and 3, between the milestones), killed at 160 images.
    run_dir = tmp_path / "run"
    size_dir = trainers.run_dir_for(run_dir, 8, 0)
    loss = "train.loss_milestones=[0.125,0.375]"
    with pytest.raises(Exception):
        _train(run_dir, prep, loss, hooks={"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")})
    # A kill between writing a loss-only checkpoint and indexing it: the rerun indexes it.
    kept = [r for r in trainers.load_milestones(size_dir) if not r.get("loss_only")]
    (size_dir / "milestones.json").write_text(json.dumps(kept))
    rows = _train(run_dir, prep, loss, inline=True)["milestones"]
    assert [(r["train_images"], r["loss_only"]) for r in rows] == [(32, True), (64, False), (96, True),
                                                                     (128, False), (256, False)]
    for r in rows:
        if r["loss_only"]:  # what the evaluation reads, nothing a resume needs: a third of a milestone
            folder = size_dir / r["path"]
            assert {p.name for p in folder.iterdir()} == {"raw.safetensors", "ema.safetensors", "unet.json",
                                                           ckpt.STATE}
            assert trainers.load_unet(folder) is not None  # verified against its state.json
    assert all(f.name.startswith("milestone-") for _, f in ckpt.complete(size_dir / "checkpoints"))  # never resumed
    _assert_same_weights(clean[0], run_dir)


def test_nan_stops_with_budget_and_keeps_checkpoints(ray_local, prep, tmp_path):
    size_dir = trainers.run_dir_for(tmp_path, 8, 0)
    t = time.time()
    with pytest.raises(trainers.NonFiniteLossError, match=r"step 5 .*after 128 images \(.* training FLOPs\)"):
        _train(tmp_path, prep, "sweep.max_failures=2", hooks={"nan_at_images": 128})
    first = time.time() - t
    assert [r["train_images"] for r in trainers.load_milestones(size_dir)] == MILESTONES[:2]
    assert all((size_dir / "checkpoints" / ckpt.milestone_name(i) / ckpt.STATE).is_file() for i in MILESTONES[:2])
    t = time.time()
    with pytest.raises(trainers.NonFiniteLossError):  # a rerun does not replay into the same NaN
        _train(tmp_path, prep, "sweep.max_failures=2")
    assert time.time() - t < min(5, first)


def test_two_workers_zero1_worker_killed_and_restarted_by_ray(ray_local, prep, tmp_path):
    # Two gloo workers with ZeRO-1 (each rank saves its own optimizer partition); W&B offline on rank 0.
    base = ["train.num_workers=2", "train.cpus_per_worker=1", "train.zero_stage=1"]
    clean2 = _train(tmp_path / "clean", prep, *base, "tracking.wandb_mode=offline")
    assert [r["train_images"] for r in clean2["milestones"]] == MILESTONES and clean2["num_workers"] == 2
    assert len(list((trainers.run_dir_for(tmp_path / "clean", 8, 0) / "wandb").glob("offline-run-*"))) == 1
    # Every milestone is a reference artifact of the run: its folder, each file's sha256, images and FLOPs.
    from wandb_records import records

    (wandb_file,) = (trainers.run_dir_for(tmp_path / "clean", 8, 0) / "wandb").glob("offline-run-*/*.wandb")
    arts = [r.artifact for r in records(wandb_file) if r.WhichOneof("record_type") == "artifact"
            and r.artifact.type == "checkpoint"]
    metas = [json.loads(a.metadata) for a in arts]
    assert [m["train_images"] for m in metas] == MILESTONES and all(m["train_flops"] > 0 for m in metas)
    final = trainers.run_dir_for(tmp_path / "clean", 8, 0) / "checkpoints" / ckpt.milestone_name(MILESTONES[-1])
    assert metas[-1]["path"] == str(final) and set(metas[-1]["sha256"]) >= {"ema.safetensors"}
    assert all(e.ref.startswith("file://") for a in arts for e in a.manifest.contents)  # no bytes uploaded
    # Rank 0 dies after 160 images; Ray restarts the worker group, which resumes from `latest`.
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    killed = _train(tmp_path / "killed_run", prep, *base, "train.checkpoint_every_images=32",
                    "sweep.max_failures=1", hooks=hooks)
    assert (tmp_path / "killed").exists() and killed["train_images"] == 256
    # Each rank's ZeRO partition is in every checkpoint; the final milestone is the newest (`latest` is removed
    # once a milestone supersedes it, so the two never share files).
    from trainers.checkpoint import milestone_name

    final = trainers.run_dir_for(tmp_path / "killed_run", 8, 0) / "checkpoints" / milestone_name(MILESTONES[-1])
    assert sorted(p.name for p in final.glob("optimizer-rank*.pt")) == ["optimizer-rank0.pt", "optimizer-rank1.pt"]
    assert sorted(p.name for p in final.glob("phema*")) == ["phema-rank0of2.safetensors", "phema-rank1of2.safetensors"]
    _assert_same_weights(tmp_path / "clean", tmp_path / "killed_run")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_worker_killed_and_restarted(ray_local, prep, tmp_path):
    # precision=auto is bf16 on GPU: raw weights in bf16, fp32 master weights restored from the optimizer
    # state on restart, the EMA in fp32.
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    summary = _train(tmp_path, prep, "train.use_gpu=true", "train.checkpoint_every_images=32",
                     "sweep.max_failures=1", hooks=hooks)
    assert summary["precision"] == "bf16" and [r["train_images"] for r in summary["milestones"]] == MILESTONES
    assert (tmp_path / "killed").exists()
    assert {v.dtype for v in _weights(tmp_path, 256, "raw").values()} == {torch.bfloat16}
    assert {v.dtype for v in _weights(tmp_path, 256, "ema").values()} == {torch.float32}
    assert torch.isfinite(torch.cat([v.flatten() for v in _weights(tmp_path, 256, "ema").values()])).all()


def test_post_hoc_ema_of_a_training_run(ray_local, prep, tmp_path):
    """A stored profile reconstructs to itself; an intermediate width, from the two EDM2 profiles alone,
    matches the same run's directly tracked EMA of that width; `study ema` writes an evaluable checkpoint."""
    from study.phema import load_snapshots, reconstruct, reconstruct_checkpoint
    from study.weights import load_unet

    _train(tmp_path, prep, "train.total_images=2048", "train.batch_size=8", "train.milestones=[0.5,1.0]",
           "train.phema_snapshots=32", "train.phema_sigma_rels=[0.05,0.07,0.10]", inline=True)
    size_dir = trainers.run_dir_for(tmp_path, 8, 0)
    snaps = load_snapshots(size_dir)
    assert sorted({s for _, s, _ in snaps}) == [0.05, 0.07, 0.1] and len({i for i, _, _ in snaps}) == 32
    end = max(i for i, _, _ in snaps)
    stored = {s: d for i, s, d in snaps if i == end}
    pair = [x for x in snaps if x[1] != 0.07]
    same = reconstruct(pair, end, 0.05)
    assert all(torch.equal(same[k], stored[0.05][k]) for k in same)
    mid = reconstruct(pair, end, 0.07)
    # Within 10 % of how far the stored 0.05 profile is from the directly tracked 0.07 one, for the weights as
    # a whole (tiny runs of 256 steps: the snapshots are few).
    err = sum((mid[k] - stored[0.07][k]).norm() ** 2 for k in mid) ** 0.5
    gap = sum((stored[0.05][k] - stored[0.07][k]).norm() ** 2 for k in mid) ** 0.5
    assert err < 0.1 * gap, (float(err), float(gap))
    out = reconstruct_checkpoint(size_dir, 0.08)
    assert out.parent.name == "sigma-0.080" and load_unet(out) is not None
