"""The training grid: one Ray Tune trial per (size, seed), each a Ray Train + DeepSpeed job."""

from __future__ import annotations

import os
from pathlib import Path

from study.config import StudyConfig, config_hash, to_dict
from study.identity import TRAINING_SECTIONS, stable_hash
from study.runfolder import run_uuid
from sweeps.train_progress import GridProgress


def _trial(config: dict, cfg_dict: dict, run_dir: str, prepared_dir: str) -> None:
    """A Tune trial: drive one Ray Train job (the trainer) and report its summary."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.config import from_dict
    from trainers import train_size

    summary = train_size(from_dict(cfg_dict), config["width"], config["seed"], run_dir, prepared_dir,
                         progress=False, callbacks=[TuneReportCallback()])
    tune.report({"done": True, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}})


def concurrent_trials(cfg: StudyConfig) -> int | None:
    """How many trials may run at once: the config's limit, or on a local Ray as many as fit.

    Each trial's driver holds 0.01 CPU beside its workers, so on a fixed machine n trials of whole-CPU
    workers would ask for n x 0.01 more than is there and the last one would wait forever; an
    autoscaling cluster adds nodes instead, so there it is left unlimited."""
    import ray

    if cfg.sweep.max_concurrent_trials:
        return cfg.sweep.max_concurrent_trials
    if cfg.resources.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    res = ray.cluster_resources()
    t = cfg.train
    gpus = res.get("GPU", 0) if str(t.use_gpu).lower() != "false" else 0
    per_trial = t.num_workers * t.cpus_per_worker + 0.01
    slots = min(gpus // t.num_workers, res.get("CPU", 1) // per_trial) if gpus else res.get("CPU", 1) // per_trial
    return max(1, int(slots))


def experiment_name(cfg: StudyConfig, run_dir: Path) -> str:
    """The Tune experiment of this grid: a new run folder, grid or training config is a new experiment."""
    key = {"run": run_uuid(run_dir), "grid": [sorted(cfg.model.widths), sorted(cfg.sweep.seeds)],
           "train": config_hash(cfg, *TRAINING_SECTIONS)}
    return "train-grid-" + stable_hash(key, 8)


def run_train_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, progress: bool = True) -> dict:
    """Train every size x seed; rerunning restores the experiment (finished trials are not retrained,
    unfinished ones resume from their checkpoints, errored ones are retried)."""
    from ray import tune

    storage = cfg.sweep.storage_path or str((Path(run_dir) / "ray").resolve())
    name = experiment_name(cfg, run_dir)
    # The config travels as a constant, not in the search space: Tune would print it with every trial.
    trainable = tune.with_resources(
        tune.with_parameters(_trial, cfg_dict=to_dict(cfg), run_dir=str(Path(run_dir).resolve()),
                             prepared_dir=str(Path(prepared_dir).resolve())),
        {"CPU": 0.01})  # the driver itself needs (almost) nothing
    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):  # the run config, callbacks included, is restored with it
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        # Widest first: with more trials than slots, the longest jobs start first.
        space = {"width": tune.grid_search(sorted(cfg.model.widths, reverse=True)),
                 "seed": tune.grid_search(list(cfg.sweep.seeds))}
        bar = GridProgress(cfg.train.total_images, len(cfg.model.widths) * len(cfg.sweep.seeds), progress)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent_trials(cfg)),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[bar],
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.trial_retries)))
    grid = tuner.fit()
    errors = [f"width={r.config['width']} seed={r.config['seed']}: {str(r.error).strip().splitlines()[-1]}"
              for r in grid if r.error is not None]
    return {"experiment": path, "trials": len(grid), "errors": errors}
