"""`study run`: every stage of the study end to end into runs/<name>/, resumable by rerunning."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from study.config import ConfigError, StudyConfig, first_difference, to_dict, to_yaml
from study.paths import run_dir

# Settings that define what a run folder's results mean: a rerun that changes one of them would mix
# incomparable numbers into one table. Widths, seeds, samplers and steps may grow between reruns.
IDENTITY = ("data", "text_encoder", "autoencoder", "train", "model.ladder", "model.prediction_type",
            "model.reference_width", "eval.num_samples", "eval.seed", "eval.guidance_min", "eval.guidance_max",
            "eval.search", "eval.timestep_spacing", "eval.checkpoint", "eval.feature_extractor")


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def check_run_folder(cfg: StudyConfig, out: Path) -> None:
    """Refuse to resume a run folder made with a different study definition; record the config."""
    saved = out / "config.json"
    now = to_dict(cfg)
    if saved.exists():
        old = json.loads(saved.read_text())
        for key in IDENTITY:
            diff = first_difference(_get(old, key), _get(now, key), f"{key}.")
            if diff:
                where, was, now_value = diff
                raise ConfigError(f"{out} holds a study with a different {where} (was {was!r}, now {now_value!r}): "
                                  f"rerun with --fresh to start over (the old folder is archived), or set name=... "
                                  f"for a new run")
    out.mkdir(parents=True, exist_ok=True)
    ident = out / "run.json"
    if not ident.exists():  # a fresh folder is a new experiment, even on external Tune storage
        ident.write_text(json.dumps({"run_uuid": uuid.uuid4().hex[:12], "created": time.ctime()}))
    saved.write_text(json.dumps(now, indent=2))
    (out / "config.yaml").write_text(to_yaml(cfg))


def archive(out: Path) -> Path | None:
    """Move a run folder aside (nothing is deleted) so a fresh study starts in its place."""
    if not out.exists():
        return None
    dest = out.with_name(f"{out.name}.archived-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(out), str(dest))
    return dest


def _print_summary(console, out: Path, analysis: dict, timings: dict) -> None:
    from rich.table import Table

    console.rule("[bold]study finished")
    report = analysis.get("report") or analysis.get("paths", {}).get("report")
    console.print(f"report: [bold]{report}[/]")
    best = analysis.get("best_size_per_budget") or []
    if best:
        t = Table(title="best size at each sampling budget (FID, best guidance)")
        for col in best[0]:
            t.add_column(str(col))
        for row in best:
            t.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(t)
    cross = analysis.get("crossovers") or []
    if cross:
        for c in cross:
            console.print("crossover: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                    for k, v in c.items()))
    else:
        console.print("crossovers: none found between any pair of sizes")
    console.print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def run_study(cfg: StudyConfig, fresh: bool = False, progress: bool = True) -> dict:
    """Prepare, train the grid, search guidance, analyse and report; rerun to resume."""
    from rich.console import Console

    from analysis.api import analyze_run
    from study.paths import require_paths
    from sweeps.study import run_sweep

    console = Console(stderr=True)
    require_paths(cfg)
    out = run_dir(cfg)
    if fresh:
        moved = archive(out)
        if moved:
            console.print(f"--fresh: archived the previous run to {moved}")
    if cfg.tracking.wandb_mode == "offline" or (cfg.tracking.wandb_mode == "online"
                                                 and not os.environ.get("WANDB_API_KEY")):
        os.environ.setdefault("WANDB_MODE", "offline")
    timings: dict = {}
    t0 = time.time()
    sweep = run_sweep(cfg, progress=progress, timings=timings)
    for msg in sweep["train_errors"] + sweep["eval_failed"]:
        console.print(f"[yellow]warning[/]: {msg} (rerun to retry)")
    t = time.time()
    mode = None if cfg.tracking.wandb_mode == "disabled" else os.environ.get("WANDB_MODE", cfg.tracking.wandb_mode)
    analysis = analyze_run(out, wandb_mode=mode, wandb_project=cfg.tracking.project, progress=progress)
    timings["analyze"] = round(time.time() - t, 1)
    timings["total"] = round(time.time() - t0, 1)
    (out / "stages.json").write_text(json.dumps(timings, indent=2))
    _print_summary(console, out, analysis, timings)
    return {"run_dir": str(out), "timings": timings, "analysis": analysis, "sweep": sweep}
