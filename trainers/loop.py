"""The training loop of one ladder width on the prepared latents, DeepSpeed data-parallel: as a Ray Train worker
(train_loop) or, for one worker, in the calling process (train_inline)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import time
from pathlib import Path

import torch

from trainers import checkpoint as ckpt
from trainers.budget import plan, warmup_lr
from trainers.data import micro_batch_start
from trainers.diffusion import step_generator
from trainers.engine import initialize, micro_batch, module_dtype, optimizer_step, set_lr
from trainers.rundir import add_milestone, load_milestones, mark_nonfinite
from trainers.phema_track import PostHocEMA, ema_foreach
from trainers.tracking import Tracker


def _mean_over_ranks(x: torch.Tensor, world_size: int) -> float:
    if world_size > 1:  # every rank must agree on "finite", or they would stop at different steps
        torch.distributed.all_reduce(x)
    return x.item() / world_size


def _milestone_row(budget, images: int, folder: Path, width: int, seed: int, rung: dict) -> dict:
    # loss_only: a budget of train.loss_milestones (a weights-only checkpoint), scored by its held-out loss alone
    return {**budget.point(images), "path": f"checkpoints/{folder.name}", "width": width, "seed": seed, **rung,
            "loss_only": folder.name.startswith("loss-")}


def _test_hooks(hooks: dict, rank: int, images: int) -> None:
    # Test-only (set by tests through LDM_SCALING_TEST_HOOKS): rank 0 kills itself once, recorded by a marker.
    at, marker = hooks.get("kill_after_images"), hooks.get("kill_marker")
    if at is not None and rank == 0 and images >= at and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def train_loop(config: dict) -> None:
    """The Ray Train worker: train (or resume) one run to its final milestone as one data-parallel rank."""
    import ray.train
    import ray.train.torch
    from ray.train.v2._internal.execution import context as ray_context

    # Ray Train logs every report in full at INFO; metrics.jsonl and the progress bar already show them.
    ray_context.logger.setLevel(logging.WARNING)
    context = ray.train.get_context()
    # To Ray (and Tune, through TuneReportCallback) at milestones only: report is a barrier that waits for
    # the controller's next poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default).
    run_loop(config, context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device(),
             ray.train.report)


def train_inline(config: dict, use_gpu: bool, report) -> None:
    """One worker in this process (a Tune trial's own actor), without Ray Train's controller and worker group.

    A one-worker run has nothing to coordinate, and on a small machine Ray Train's two extra processes per
    run cost more CPU than a short fine-tune itself (benchmarks/train_launch.py). A single-rank process group
    (in-memory store) stands in for the one Ray Train would set up, so DeepSpeed runs unchanged; it lives as
    long as the process, which Tune reuses for the grid's next run (no new imports). A failure fails the Tune
    trial, which Tune retries from the run's `latest`."""
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_gpu else "gloo", store=torch.distributed.HashStore(),
                                             rank=0, world_size=1)
    # What a launcher would set (DeepSpeed's engine reads LOCAL_RANK), for this run only.
    launcher_env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    before = {k: os.environ.get(k) for k in launcher_env}
    os.environ.update(launcher_env)
    try:
        run_loop(config, 0, 1, device, report)
    finally:  # Tune reuses the actor for the grid's next run: leave it nothing of this one
        import gc

        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        gc.collect()
        if use_gpu:
            torch.cuda.empty_cache()


def run_loop(config: dict, rank: int, world: int, device: torch.device, report) -> None:
    """Train (or resume) one run to its final milestone; the driver (trainers.run) reads what it wrote.

    report: called with the metrics of every milestone (Ray Train's or Tune's report)."""
    import ray
    from diffusers.training_utils import EMAModel

    from study.config import from_dict
    from trainers.recipes import RecipeContext, get_recipe

    cfg, width, seed = from_dict(config["cfg"]), config["width"], config["seed"]
    tc, hooks, precision = cfg.train, config["test_hooks"], config["precision"]
    size_dir = Path(config["size_dir"])
    root = size_dir / "checkpoints"
    torch.set_num_threads(config["threads"])
    if device.type == "cuda":
        torch.cuda.set_device(device)

    # Which node and process ran each rank, appended at every (re)start: a cluster run's placement record.
    with open(size_dir / "nodes.jsonl", "a") as f:
        f.write(json.dumps({"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                            "host": socket.gethostname(), "time": time.time()}) + "\n")
    spec = config.get("recipe") or {"name": "base"}
    recipe = get_recipe(spec["name"])
    ctx = RecipeContext(cfg, width, seed, Path(config["prepared_dir"]), device,
                        init_from=Path(spec["init_from"]) if spec.get("init_from") else None,
                        options=spec.get("options") or {})
    data = recipe.data(ctx)
    budget = plan(tc, config["fwd_flops"])
    B, mb, dtype = budget.global_batch, micro_batch(tc, world), module_dtype(precision)
    torch.manual_seed(seed)  # the same initial weights on every rank and every rerun
    model = recipe.model(ctx)
    if config.get("checkpointing"):  # the memory plan's choice: recompute each block's activations in backward
        model.enable_gradient_checkpointing()
    engine = initialize(model, tc, world, precision)
    params = list(engine.module.parameters())
    # The EMA lives on rank 0 only (it writes checkpoints), in fp32 whatever the training precision.
    # foreach updates all tensors at once through a temporary the size of the model: fast for small models, and
    # 20 GB at 5B parameters, so large ones update tensor by tensor (study.memory counts whichever runs).
    ema = (EMAModel([p.detach().float() for p in params], decay=tc.ema_decay, foreach=ema_foreach(params))
           if rank == 0 else None)
    # The post-hoc EMA profiles are spread over the ranks, each tracking its share of the tensors.
    phema = (PostHocEMA(engine.module, tc.phema_sigma_rels, budget.total_images, tc.phema_snapshots, size_dir,
                        rank, world) if tc.phema_snapshots > 0 else None)
    state = ckpt.resume(root, engine, ema, rank, world, tc.zero_stage > 0, recipe=recipe, phema=phema) or {}
    step = state.get("train_steps", 0)
    if rank == 0:  # a kill between publishing a milestone and indexing it leaves it unindexed
        indexed = {r["train_images"] for r in load_milestones(size_dir)}
        for images, folder in ckpt.complete(root):
            if folder.name.startswith("milestone-") and images not in indexed:
                add_milestone(size_dir, _milestone_row(budget, images, folder, width, seed, config["rung"]))
        for folder in root.glob("loss-*"):  # loss-only budgets (weights only: never a resume point)
            images = int(folder.name.removeprefix("loss-"))
            if (folder / ckpt.STATE).is_file() and images not in indexed:
                add_milestone(size_dir, _milestone_row(budget, images, folder, width, seed, config["rung"]))
    tracker = None
    if rank == 0:
        tracker = Tracker(size_dir, cfg, config.get("identity") or config["cfg"], width, seed, budget.total_images, step * B,
                          config["progress"])
    log_steps = max(1, round((tc.log_every_images or budget.total_images / 50) / B))
    ckpt_steps = math.ceil(tc.checkpoint_every_images / B) if tc.checkpoint_every_images > 0 else 0
    t0, elapsed0 = time.perf_counter(), state.get("elapsed_s", 0.0)
    last_log, loss_sum, n_loss = (step * B, t0), 0.0, 0
    saved_images = step * B  # the budget of the newest checkpoint on disk

    while step < budget.total_steps:
        start = step * B
        lr = warmup_lr(tc.lr, tc.warmup_images, start + B)
        set_lr(engine, lr)
        step_loss = torch.zeros((), device=device)
        for m in range(tc.grad_accum):
            # This rank's micro-batch m: a fixed slice of the global batch, so the order is a function of position.
            batch = data.batch(micro_batch_start(start, m, rank, world, mb), mb, device)
            gen = step_generator(device, seed, step, rank, m)
            loss = recipe.loss(engine, batch, gen, dtype)
            if hooks.get("nan_at_images") is not None and start >= hooks["nan_at_images"]:
                loss = loss * float("nan")  # test-only: poison the loss
            engine.backward(loss)
            optimizer_step(engine, params, tc, precision, boundary=m == tc.grad_accum - 1)
            step_loss += loss.detach().float()
        loss_value = _mean_over_ranks(step_loss / tc.grad_accum, world)
        if not math.isfinite(loss_value):
            point = budget.point(start)
            message = (f"loss became {loss_value} at optimizer step {step + 1} of w{width}-s{seed}, after "
                       f"{start} images ({point['train_flops']:.3g} training FLOPs); the checkpoints up to "
                       f"{saved_images} images are kept in {root}: lower train.lr or check the prepared data, "
                       f"then rerun with --fresh")
            if rank == 0:
                mark_nonfinite(size_dir, {**point, "step": step + 1, "loss": str(loss_value), "message": message})
                tracker.close()
            return  # a normal return: Ray must not retry a NaN (the driver raises NonFiniteLossError)
        step += 1
        images = step * B
        recipe.after_step(engine.module)
        if ema is not None:
            ema.step(params)
        if phema is not None:
            phema.step(images, B)
        loss_sum, n_loss = loss_sum + loss_value, n_loss + 1

        if step % log_steps == 0 or step == budget.total_steps:
            now = time.perf_counter()
            row = {**budget.point(images), "loss": loss_sum / n_loss, "lr": lr,
                   "images_per_s": (images - last_log[0]) / (now - last_log[1]), "elapsed_s": elapsed0 + now - t0}
            if tracker is not None:
                tracker.log(row)
            last_log, loss_sum, n_loss = (images, now), 0.0, 0

        if step in budget.loss_steps:  # train.loss_milestones: the weights the held-out loss scores, no state
            folder = root / ckpt.loss_name(images)
            if not (folder / ckpt.STATE).exists():
                ckpt.write_weights(root, folder.name, engine, ema, {**budget.point(images), "width": width,
                                                                    "seed": seed, "precision": precision}, rank, world)
            if rank == 0:
                add_milestone(size_dir, _milestone_row(budget, images, folder, width, seed, config["rung"]))
        is_milestone = step in budget.milestone_steps
        if is_milestone or (ckpt_steps and step % ckpt_steps == 0):
            state = {**budget.point(images), "ema_step": ema.optimization_step if ema else 0,
                     "elapsed_s": elapsed0 + time.perf_counter() - t0, "world_size": world,
                     "zero_stage": tc.zero_stage, "precision": precision, "width": width, "seed": seed,
                     "micro_batch": mb, "grad_accum": tc.grad_accum,
                     # what the module really does, not what was asked (diffusers' flag on the trained UNet)
                     "checkpointing": bool(getattr(engine.module, "is_gradient_checkpointing", False))}
            if is_milestone:
                folder = root / ckpt.milestone_name(images)
                if not (folder / ckpt.STATE).exists():  # never rewrite a milestone
                    ckpt.write(root, folder.name, engine, ema, state, rank, world, tc.zero_stage > 0, recipe, phema)
                ckpt.write_latest_from(root, folder, rank, world)
                if rank == 0:
                    row = _milestone_row(budget, images, folder, width, seed, config["rung"])
                    add_milestone(size_dir, row)
                    if tracker is not None:
                        tracker.milestone(row, folder)
                report({**budget.point(images), "loss": loss_value, "milestone": folder.name})
            else:
                ckpt.write(root, ckpt.LATEST, engine, ema, state, rank, world, tc.zero_stage > 0, recipe, phema)
            saved_images = images
        _test_hooks(hooks, rank, images)

    if tracker is not None:
        tracker.close()
