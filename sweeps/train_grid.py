"""The training grid: one Ray Tune trial per (size, seed), each a Ray Train + DeepSpeed job."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from study.config import StudyConfig, config_hash, to_dict


def _trial(config: dict) -> None:
    """A Tune trial: drive one Ray Train job (the trainer) and report its summary."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from study.config import from_dict
    from trainers import train_size

    cfg = from_dict(config["cfg"])
    summary = train_size(cfg, config["width"], config["seed"], config["run_dir"], config["prepared_dir"],
                         progress=False, callbacks=[TuneReportCallback()])
    tune.report({"done": True, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}})


def experiment_name(cfg: StudyConfig, run_dir: Path) -> str:
    """The Tune experiment of this grid: a new run folder, grid or training config is a new experiment."""
    ident = Path(run_dir) / "run.json"
    run_uuid = json.loads(ident.read_text())["run_uuid"] if ident.exists() else ""
    key = json.dumps({"run": run_uuid, "grid": [sorted(cfg.model.widths), sorted(cfg.sweep.seeds)],
                      "train": config_hash(cfg, "data", "text_encoder", "autoencoder", "model", "train")})
    return "train-grid-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def run_train_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, progress: bool = True) -> dict:
    """Train every size x seed; rerunning restores the experiment (finished trials are not retrained,
    unfinished ones resume from their checkpoints, errored ones are retried)."""
    from ray import tune

    storage = cfg.sweep.storage_path or str((Path(run_dir) / "ray").resolve())
    name = experiment_name(cfg, run_dir)
    trainable = tune.with_resources(_trial, {"CPU": 0.01})  # the driver itself needs (almost) nothing
    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        # Widest first: with more trials than slots, the longest jobs start first.
        space = {"width": tune.grid_search(sorted(cfg.model.widths, reverse=True)),
                 "seed": tune.grid_search(list(cfg.sweep.seeds)), "cfg": to_dict(cfg),
                 "run_dir": str(Path(run_dir).resolve()), "prepared_dir": str(Path(prepared_dir).resolve())}
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent_trials or None),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1 if progress else 0,
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.trial_retries)))
    grid = tuner.fit()
    errors = [f"width={r.config['width']} seed={r.config['seed']}: {str(r.error).strip().splitlines()[-1]}"
              for r in grid if r.error is not None]
    return {"experiment": path, "trials": len(grid), "errors": errors}
