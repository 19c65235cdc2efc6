"""The driver of one training run: checks the run folder, launches the Ray Train job, returns its summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from study.config import ConfigError, to_dict, with_train
from study.raycluster import ensure_ray
from trainers.budget import plan
from trainers.checkpoint import STATE, complete
from trainers.engine import resolve_precision
from trainers.rundir import (NonFiniteLossError, check_config, done_summary, load_milestones, mark_done,
                             nonfinite_message, run_dir_for, write_config)

TEST_HOOKS_ENV = "LDM_SCALING_TEST_HOOKS"  # JSON; tests only (kill a worker, poison the loss)


def use_gpu(setting: str) -> bool:
    import ray

    setting = str(setting).lower()
    if setting == "auto":  # what the cluster offers, not what the driver's machine has
        return ray.cluster_resources().get("GPU", 0) > 0
    return setting == "true"


def _check_fits(cfg, use_gpu: bool) -> None:
    """On a local Ray a run that asks for more than the machine has would wait forever: fail instead."""
    import ray

    have = ray.cluster_resources()
    t = cfg.train
    for kind, need in (("CPU", t.num_workers * t.cpus_per_worker), ("GPU", t.num_workers if use_gpu else 0)):
        if need > have.get(kind, 0):
            raise ConfigError(f"train.num_workers={t.num_workers} needs {need:g} {kind}s, the local Ray has "
                              f"{have.get(kind, 0):g}: lower train.num_workers or train.cpus_per_worker")


def local_kinds() -> tuple:
    """The GPU of this machine as the plan's only kind (a run without a cluster file), none without CUDA."""
    from study.memory import GpuKind

    if not torch.cuda.is_available():
        return ()
    gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    return (GpuKind("local", gb, torch.cuda.device_count(), ("local",)),)


def run_plan(cfg, recipe: str, width: int, gpu: bool):
    """The memory plan row a run trains with (study.memory): the GPU kind of least memory that fits, its
    micro-batch, accumulation and checkpointing. None where train.memory_plan does not apply (CPU under auto, or
    false) or no GPU kind is known (the config's own grad_accum then holds); a width that fits no kind is refused
    here, before anything starts."""
    from study.memory import chosen, cluster_kinds, memory_plan, refuse_unfit

    mode = str(cfg.train.memory_plan).lower()
    if mode == "false" or (mode == "auto" and not gpu):
        return None
    kinds = cluster_kinds(cfg) if cfg.resources.cluster_yaml else local_kinds()
    if not kinds:
        return None
    experiment = recipe  # a recipe is named as its experiment
    rows = memory_plan(cfg, kinds, experiments=[experiment], widths=[width])
    refuse_unfit(rows, (experiment,))
    return chosen(rows, experiment, width)


def train_size(cfg, width: int, seed: int, run_dir, prepared_dir, progress: bool = True, callbacks=None,
               recipe: str = "base", init_from=None, train: dict | None = None, subdir: str = "train",
               options: dict | None = None, inline: bool = False, report=None) -> dict:
    """Train one ladder width to its final milestone (resuming what a previous call left); return the summary.

    recipe: the experiment whose recipe (trainers/recipes/<name>.py) is optimised; init_from: the base
    milestone a derived run starts from; train: TrainConfig overrides of the experiment; subdir: its folder under the run folder;
    options: the experiment's config section, given to the recipe and part of the run's identity;
    inline: train in this process (one worker only; a Tune trial that holds the worker's resources) instead
    of a Ray Train job; report: called inline with each milestone's metrics (a Tune trial's tune.report)."""
    from study.ladder import ladder
    from trainers.recipes import RecipeContext, get_recipe

    t0 = time.time()
    cfg = with_train(cfg, train)
    if inline and cfg.train.num_workers != 1:
        raise ValueError(f"inline training runs one worker, the config asks for {cfg.train.num_workers}")
    size_dir = run_dir_for(Path(run_dir).resolve(), width, seed, subdir)
    prepared = Path(prepared_dir).resolve()
    cfg_dict = to_dict(cfg)
    spec = None if recipe == "base" and init_from is None else {
        "name": recipe, "init_from": str(Path(init_from).resolve()) if init_from else None, "options": options or {}}
    # What the run computes: the config, plus (derived runs) the recipe, its base checkpoint and its options.
    ident = cfg_dict if spec is None else {**cfg_dict, "recipe": spec}
    check_config(size_dir, ident)
    done = done_summary(size_dir, ident)
    if done is not None:
        return {**done, "skipped": True}
    message = nonfinite_message(size_dir)
    if message:  # rerunning would replay the same steps into the same NaN
        raise NonFiniteLossError(message)
    # Fail here, not in a worker, if the data is missing; the rung's cost is measured on the data's geometry.
    ctx = RecipeContext(cfg, width, seed, prepared, torch.device("cpu"),
                        init_from=Path(init_from) if init_from else None, options=options or {})
    geometry = get_recipe(recipe).data(ctx).geometry
    rung = ladder(cfg.model.ladder, [width], geometry, cfg.model.reference_width)[0]
    budget = plan(cfg.train, rung.flops)
    started = ensure_ray(cfg, worker_logs=progress)
    gpu = use_gpu(cfg.train.use_gpu)
    memory = run_plan(cfg, recipe, width, gpu)  # refuses a width that fits no GPU, before the run folder is written
    write_config(size_dir, ident)  # only once the config is known to be trainable
    if started and not inline:
        _check_fits(cfg, gpu)
    precision = resolve_precision(cfg.train.precision, gpu)
    # What the plan chose is memory, not maths (the global batch stays): the run records it, its identity does not.
    # Without a plan (CPU under train.memory_plan=auto), train.micro_batch and train.checkpointing hold where set.
    t = cfg.train
    checkpointing = memory.checkpointing if memory else str(t.checkpointing).lower() == "true"
    accum = memory.grad_accum if memory else (t.batch_size // (t.micro_batch * t.num_workers) if t.micro_batch
                                              else t.grad_accum)
    run_cfg = {**cfg_dict, "train": {**cfg_dict["train"], "grad_accum": accum}}
    if memory is not None:
        (size_dir / "memory_plan.json").write_text(json.dumps(memory.as_row(), indent=1) + "\n")
    loop_config = {
        "cfg": run_cfg, "checkpointing": checkpointing, "width": width, "seed": seed, "size_dir": str(size_dir),
        "prepared_dir": str(prepared),
        "precision": precision, "progress": progress, "fwd_flops": rung.flops,
        "rung": {"params": rung.params, "gflops": rung.gflops, "normalized_cost": rung.normalized_cost},
        "threads": cfg.train.torch_threads or max(1, int(cfg.train.cpus_per_worker)),
        "test_hooks": json.loads(os.environ.get(TEST_HOOKS_ENV) or "{}"),
        "recipe": spec, "identity": ident,
    }
    if inline:
        from trainers.loop import train_inline

        train_inline(loop_config, gpu, report or (lambda metrics: None))
    else:
        placement = {memory.kind: 1} if memory is not None and cfg.resources.cluster_yaml else {}
        _trainer(cfg, width, seed, run_dir, loop_config, gpu, callbacks, subdir, placement).fit()

    message = nonfinite_message(size_dir)
    if message:
        raise NonFiniteLossError(message)
    rows = load_milestones(size_dir)
    if not rows or rows[-1]["train_images"] != budget.total_images:
        raise RuntimeError(f"{size_dir}: training returned without its final milestone "
                           f"({budget.total_images} images): rerun the same command to resume")
    summary = _summary(size_dir, rows, rung, precision, cfg.train.num_workers, time.time() - t0)
    summary.update(grad_accum=accum, checkpointing=checkpointing,
                   gpu_kind=memory.kind if memory else None)
    mark_done(size_dir, ident, summary)
    return summary


def _trainer(cfg, width: int, seed: int, run_dir, loop_config: dict, use_gpu: bool, callbacks, subdir: str,
             placement: dict | None = None):
    """The Ray Train job: one worker per data-parallel rank, restarted from `latest` on failure; placement: the
    GPU kind resource each worker asks for (the memory plan's), so the autoscaler starts that node type."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainers.loop import train_loop

    storage = cfg.sweep.storage_path or str(Path(run_dir) / "ray")
    if "://" not in storage:  # Ray wants an absolute local path (or a URI such as s3://)
        storage = str(Path(storage).resolve())
    resources = {"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if use_gpu else {}), **(placement or {})}
    return TorchTrainer(
        train_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"{cfg.name}-{subdir.replace('/', '-')}-w{width}-s{seed}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.sweep.max_failures),
                             callbacks=list(callbacks or [])),
    )


def _summary(size_dir: Path, rows: list[dict], rung, precision: str, num_workers: int, wall_s: float) -> dict:
    final = rows[-1]
    state = json.loads((complete(size_dir / "checkpoints")[-1][1] / STATE).read_text())  # the final milestone
    return {"width": final["width"], "seed": final["seed"], "params": rung.params, "gflops": rung.gflops,
            **{k: final[k] for k in ("train_images", "train_steps", "train_flops", "train_flops_paper")},
            "milestones": rows, "precision": precision, "num_workers": num_workers,
            "train_s": state["elapsed_s"],  # training-loop time summed over every resume
            "wall_s": wall_s,  # this call, Ray and worker start-up included
            "run_dir": str(size_dir)}
