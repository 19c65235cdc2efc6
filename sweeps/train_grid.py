"""The training grid of an experiment: one Ray Tune trial per (size, seed), each a Ray Train + DeepSpeed job."""

from __future__ import annotations

import os
from pathlib import Path

from study.config import StudyConfig, config_hash, to_dict
from study.identity import TRAINING_SECTIONS, stable_hash
from study.runfolder import run_uuid
from sweeps.train_progress import GridProgress


def _trial(config: dict, cfg_dict: dict, run_dir: str, prepared_dir: str, job: dict, inline: bool = False) -> None:
    """A Tune trial: train one size (a Ray Train job, or in the trial itself for one worker); report its summary."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.config import from_dict
    from trainers import train_size

    width, seed = _size(config)
    summary = train_size(from_dict(cfg_dict), width, seed, run_dir, prepared_dir, progress=False,
                         callbacks=[TuneReportCallback()], recipe=job["recipe"],
                         init_from=(job["sources"] or {}).get(f"{width}-{seed}"), train=job["train"],
                         subdir=job["subdir"], options=job["options"], inline=inline, report=tune.report)
    tune.report({"done": True, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}})


def concurrent_trials(cfg: StudyConfig) -> int | None:
    """How many trials may run at once: the config's limit, or on a local Ray as many as fit.

    Each trial's driver holds 0.01 CPU beside its workers, so on a fixed machine n trials of whole-CPU
    workers would ask for n x 0.01 more than is there and the last one would wait forever; an
    autoscaling cluster adds nodes instead, so there it is left unlimited."""
    import ray

    from trainers.run import use_gpu

    if cfg.sweep.max_concurrent_trials:
        return cfg.sweep.max_concurrent_trials
    if cfg.resources.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    res = ray.cluster_resources()
    t = cfg.train
    gpus = res.get("GPU", 0) if use_gpu(t.use_gpu) else 0
    per_trial = t.num_workers * t.cpus_per_worker + 0.01  # the same for an inline trial (trial_resources)
    slots = min(gpus // t.num_workers, res.get("CPU", 1) // per_trial) if gpus else res.get("CPU", 1) // per_trial
    return max(1, int(slots))


def inline_training(train_cfg) -> bool:
    """Whether the grid's trials train in their own process: one worker per run has no data-parallel group
    for Ray Train to coordinate, and skipping its controller and worker processes saves about half a
    minute of CPU per run (benchmarks/train_launch.py). Runs of several workers go through Ray Train."""
    return train_cfg.num_workers == 1


def trial_resources(train_cfg, inline: bool) -> dict:
    """What a trial's actor holds: almost nothing when it drives a Ray Train job, the worker's share inline."""
    from trainers.run import use_gpu

    if not inline:
        return {"CPU": 0.01}  # the driver itself needs (almost) nothing; the Ray Train worker holds the rest
    return {"CPU": train_cfg.cpus_per_worker + 0.01, **({"GPU": 1} if use_gpu(train_cfg.use_gpu) else {})}


def experiment_name(cfg: StudyConfig, run_dir: Path, experiment: str = "base", sizes=None, job=None) -> str:
    """The Tune experiment of a grid: a new run folder, grid or training config is a new Tune experiment."""
    sizes = sizes or [(w, s) for w in cfg.model.widths for s in cfg.sweep.seeds]
    key = {"run": run_uuid(run_dir), "grid": [sorted({w for w, _ in sizes}), sorted({s for _, s in sizes})],
           "train": config_hash(cfg, *TRAINING_SECTIONS)}
    if experiment == "base":  # the name base grids had before experiments existed: old run folders resume
        return "train-grid-" + stable_hash(key, 8)
    return f"{experiment}-grid-" + stable_hash({**key, "sizes": sorted(sizes), "job": job}, 8)


def run_train_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, progress: bool = True,
                   experiment=None, sources: dict | None = None) -> dict:
    """Train every size x seed of an experiment; rerunning restores the Tune experiment (finished trials are
    not retrained, unfinished ones resume from their checkpoints, errored ones are retried).

    sources: (width, seed) -> the base milestone each derived run starts from; only those sizes are trained."""
    from ray import tune

    from trainers.run import with_train

    name_exp = experiment.name if experiment is not None else "base"
    sizes = sorted(sources) if sources is not None else [(w, s) for w in cfg.model.widths for s in cfg.sweep.seeds]
    job = {"recipe": experiment.recipe if experiment is not None else "base",
           "train": experiment.train_overrides(cfg) if experiment is not None else None,
           "subdir": experiment.subdir if experiment is not None else "train",
           "options": experiment.options(cfg) if experiment is not None else None,
           "sources": {f"{w}-{s}": str(p) for (w, s), p in (sources or {}).items()} or None}
    storage = cfg.sweep.storage_path or str((Path(run_dir) / "ray").resolve())
    name = experiment_name(cfg, run_dir, name_exp, sizes, job)
    train_cfg = with_train(cfg, job["train"]).train
    inline = inline_training(train_cfg)
    # The config travels as a constant, not in the search space: Tune would print it with every trial.
    trainable = tune.with_resources(
        tune.with_parameters(_trial, cfg_dict=to_dict(cfg), run_dir=str(Path(run_dir).resolve()),
                             prepared_dir=str(Path(prepared_dir).resolve()), job=job, inline=inline),
        trial_resources(train_cfg, inline))
    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):  # the run config, callbacks included, is restored with it
        # Restoring unpickles Tune's files: refuse ones this user does not own or others may write.
        from study.trust import check_restorable

        check_restorable(path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        # Widest first: with more trials than slots, the longest jobs start first.
        space = {"size": tune.grid_search([{"width": w, "seed": s}
                                           for w, s in sorted(sizes, key=lambda x: (-x[0], x[1]))])}
        if sources is None:  # the base grid keeps its historical search space (and so its trial order)
            space = {"width": tune.grid_search(sorted(cfg.model.widths, reverse=True)),
                     "seed": tune.grid_search(list(cfg.sweep.seeds))}
        total = train_cfg.total_images
        bar = GridProgress(total, len(sizes), progress, desc="train grid" if name_exp == "base" else f"{name_exp}: train")
        tuner = tune.Tuner(
            trainable, param_space=space,
            # Inline, a finished run's actor (torch, DeepSpeed imported) trains the next size.
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent_trials(cfg), reuse_actors=inline),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[bar],
                                      # Inline, a worker's failure is the trial's: Tune gives it Ray Train's
                                      # restarts (sweep.max_failures) on top of the trial's own retries.
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.trial_retries + (
                                          cfg.sweep.max_failures if inline else 0))))
    grid = tuner.fit()
    errors = [f"{name_exp} width={_size(r.config)[0]} seed={_size(r.config)[1]}: "
              f"{str(r.error).strip().splitlines()[-1]}" for r in grid if r.error is not None]
    return {"experiment": path, "trials": len(grid), "errors": errors}


def _size(config: dict) -> tuple[int, int]:
    """(width, seed) of a trial's config, in either search-space form."""
    if "size" in config:
        return config["size"]["width"], config["size"]["seed"]
    return config["width"], config["seed"]
