"""`study sweep`: prepare, then every enabled experiment's training grid and evaluation grid, into the one
results table. Experiments run in dependency order, in waves: the base ladder, then every experiment derived
from it (distillation, super-resolution, DreamBooth) trained together in one grid and evaluated together in one
grid; each is resumable by rerunning."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from study.config import StudyConfig


def trained_sizes(cfg: StudyConfig, run_dir: Path, subdir: str = "train",
                  sizes: list[tuple[int, int]] | None = None) -> dict[tuple[int, int], list[dict]]:
    """The milestone index of every finished (width, seed) run under RUN_DIR/subdir."""
    from trainers import load_milestones, run_dir_for

    out = {}
    for w, s in sizes if sizes is not None else [(w, s) for w in cfg.model.widths for s in cfg.sweep.seeds]:
        d = run_dir_for(run_dir, w, s, subdir)
        if (d / "DONE").exists():
            out[(w, s)] = [{**m, "path": str(d / m["path"])} for m in load_milestones(d)]
    return out


def size_outcomes(cfg: StudyConfig, run_dir: Path, subdir: str = "train", sizes: list[tuple[int, int]] | None = None
                  ) -> tuple[dict[tuple[int, int], list[dict]], dict[tuple[int, int], str]]:
    """Every run that can be evaluated (finished, or stopped with intact milestones, which are marked
    partial) and every run that did not finish, with the reason."""
    from trainers import run_dir_for, size_status

    ready, failed = {}, {}
    for w, s in sizes if sizes is not None else [(w, s) for w in cfg.model.widths for s in cfg.sweep.seeds]:
        d = run_dir_for(run_dir, w, s, subdir)
        st = size_status(d)
        if st["status"] in ("done", "partial") and st["milestones"]:
            ready[(w, s)] = [{**m, "path": str(d / m["path"]), "partial": st["status"] == "partial"}
                             for m in st["milestones"]]
        if st["status"] != "done":
            failed[(w, s)] = st["reason"]
    return ready, failed


def run_wave(wave: list, ctx, timings: dict) -> dict:
    """Train (or derive) the checkpoints of a wave of experiments (one or several that depend only on earlier
    waves) in one training grid, then evaluate all their cells in one evaluation grid; returns what went wrong.

    Stage timings are keyed by the wave's experiments ("train" and "evaluate" for the base; e.g.
    "distillation+dreambooth+superres_train"); with several experiments, each one's own seconds are kept under
    "trial_s" (its training trials) and "eval_s" (its evaluations): its share of the shared stages."""
    from sweeps.eval_grid import run_eval_grid
    from sweeps.train_grid import run_train_wave

    cfg, out = ctx.cfg, ctx.run_dir
    names = [e.name for e in wave]
    label = "" if names == ["base"] else "+".join(names) + "_"
    sources = {e.name: e.sources(ctx) for e in wave}
    prepared = {str(e.prepared(ctx)) for e in wave}
    if len(prepared) > 1:  # one evaluation grid reads one prepared folder; a wave's experiments share the base's
        raise ValueError(f"experiments {names} of one wave read different prepared folders {sorted(prepared)}")
    prepared = wave[0].prepared(ctx)
    t = time.time()
    train = run_train_wave(cfg, out, prepared, [(e, sources[e.name]) for e in wave if e.trains],
                           progress=ctx.progress)
    timings[f"{label}train"] = round(time.time() - t, 1)
    if len(wave) > 1:  # each experiment's own share of the shared stage: its trials' seconds
        timings.setdefault("trial_s", {}).update({n: round(sec, 1) for n, sec in train["trial_seconds"].items()})
    chains, failed_sizes = [], []
    for e in wave:
        src = sources[e.name]
        if not e.trains:  # its sizes are its sources' runs, as they finished
            ready = {k: rows for k, rows in ctx.trained.get(e.after[0], {}).items() if src and k in src}
            ctx.trained[e.name] = ready
            chains += e.chains(ctx, ready) if ready else []
            continue
        sizes, failed = size_outcomes(cfg, out, e.subdir, sorted(src) if src is not None else None)
        ctx.trained[e.name] = sizes
        failed_sizes += [f"{e.name} w{w}-s{s}: {why}" for (w, s), why in sorted(failed.items())]
        if not sizes and e.name == "base":
            raise RuntimeError("no size finished training: " + "; ".join(train["errors"]))
        if sizes:
            chains += e.chains(ctx, sizes)
    if not chains:
        return {"train_errors": train["errors"], "eval_failed": [], "failed_sizes": failed_sizes}
    t = time.time()
    evals = run_eval_grid(cfg, out, prepared, chains, ctx.rungs, ctx.storage_url, progress=ctx.progress,
                          name="evaluate" if names == ["base"] else f"{'+'.join(names)}: evaluate")
    timings[f"{label}evaluate"] = round(time.time() - t, 1)
    if len(wave) > 1:  # and of the shared evaluation: its evaluations' own seconds (the rows' eval_seconds)
        from sweeps.results import read_results

        rows = read_results(out)
        secs = pd.to_numeric(rows["eval_seconds"], errors="coerce").groupby(rows["experiment"]).sum()
        timings.setdefault("eval_s", {}).update({n: round(float(secs.get(n, 0.0)), 1) for n in names})
    return {"train_errors": train["errors"], "eval_failed": evals["failed"], "chains": evals["chains"],
            "failed_sizes": failed_sizes}


def run_sweep(cfg: StudyConfig, progress: bool = True, timings: dict | None = None) -> dict:
    """Every enabled experiment: its training grid, then its evaluation grid; rerun to resume."""
    from study.lock import folder_lock
    from study.paths import require_paths, run_dir
    from sweeps.experiments import enabled_experiments

    require_paths(cfg)
    experiments = enabled_experiments(cfg)
    timings = {} if timings is None else timings
    out = run_dir(cfg)
    with folder_lock(out):  # one writer per run folder: a second run refuses at once, naming this one
        return _sweep(cfg, out, experiments, progress, timings)


def _sweep(cfg: StudyConfig, out: Path, experiments: list, progress: bool, timings: dict) -> dict:
    from study.ladder import study_ladder
    from study.prepare import prepare
    from study.raycluster import ensure_ray
    from study.runfolder import check_run_folder
    from sweeps.experiments import StageContext, waves
    from sweeps.guidance import check_storage, default_storage

    check_run_folder(cfg, out)  # refuses a folder made by a different study definition
    storage_url = cfg.sweep.optuna_storage or default_storage(out)
    check_storage(storage_url)  # a missing driver or a dead server: one line now, before any training
    t = time.time()
    prep = prepare(cfg, progress=progress)
    timings.setdefault("prepare", round(time.time() - t, 1))
    ensure_ray(cfg)
    ctx = StageContext(cfg=cfg, run_dir=out, prepared_dir=prep.dir,
                       rungs={r.width: r.as_row() for r in study_ladder(cfg)},
                       storage_url=storage_url, progress=progress)
    summary = {"run_dir": str(out), "results": str(out / "results.parquet"), "train_errors": [],
               "eval_failed": [], "failed_sizes": [], "experiments": [e.name for e in experiments],
               "timings": timings}
    for wave in waves(experiments):
        res = run_wave(wave, ctx, timings)
        for key in ("train_errors", "eval_failed", "failed_sizes"):
            summary[key] += res[key]
    summary["sizes"] = len(ctx.trained.get("base", {}))
    return summary
