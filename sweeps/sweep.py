"""`study sweep`: prepare, the training grid, then the evaluation grid into the results table."""

from __future__ import annotations

import time
from pathlib import Path

from study.config import StudyConfig


def trained_sizes(cfg: StudyConfig, run_dir: Path) -> dict[tuple[int, int], list[dict]]:
    """The milestone index of every finished size of the grid."""
    from trainers import load_milestones, run_dir_for

    sizes = {}
    for w in cfg.model.widths:
        for s in cfg.sweep.seeds:
            d = run_dir_for(run_dir, w, s)
            if (d / "DONE").exists():
                sizes[(w, s)] = [{**m, "path": str(d / m["path"])} for m in load_milestones(d)]
    return sizes


def run_sweep(cfg: StudyConfig, progress: bool = True, timings: dict | None = None) -> dict:
    """Train the grid and search guidance for every cell; rerun to resume. Returns a summary."""
    from study.ladder import study_ladder
    from study.paths import require_paths, run_dir
    from study.runfolder import check_run_folder
    from study.prepare import prepare
    from study.raycluster import ensure_ray
    from sweeps.eval_grid import plan_chains, run_eval_grid
    from sweeps.guidance import default_storage
    from sweeps.train_grid import run_train_grid

    require_paths(cfg)
    timings = {} if timings is None else timings
    out = run_dir(cfg)
    check_run_folder(cfg, out)  # refuses a folder made by a different study definition
    t = time.time()
    prep = prepare(cfg, progress=progress)
    timings.setdefault("prepare", round(time.time() - t, 1))
    ensure_ray(cfg)
    t = time.time()
    train = run_train_grid(cfg, out, prep.dir, progress=progress)
    timings["train"] = round(time.time() - t, 1)
    sizes = trained_sizes(cfg, out)
    if not sizes:
        raise RuntimeError("no size finished training: " + "; ".join(train["errors"]))
    rungs = {r.width: r.as_row() for r in study_ladder(cfg)}
    t = time.time()
    chains = plan_chains(cfg, sizes)
    storage = cfg.sweep.optuna_storage or default_storage(out)
    evals = run_eval_grid(cfg, out, prep.dir, chains, rungs, storage, progress=progress)
    timings["evaluate"] = round(time.time() - t, 1)
    return {"run_dir": str(out), "results": str(out / "results.parquet"), "train_errors": train["errors"],
            "eval_failed": evals["failed"], "sizes": len(sizes), "chains": evals["chains"], "timings": timings}
