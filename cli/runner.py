"""`study run`: every stage of the study end to end into runs/<name>/, resumable by rerunning."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from study.atomic import write_json
from study.config import StudyConfig
from study.lock import folder_lock
from study.paths import run_dir
from study.runtime import wandb_mode


def archive(out: Path) -> Path | None:
    """Move a run folder aside (nothing is deleted) so a fresh study starts in its place; only ever a
    plain-named folder (config.validate's `name`), renamed beside itself inside runs_dir."""
    import re

    from study.config import NAME_PATTERN
    from study.errors import UserError

    out = Path(out)
    if not re.fullmatch(NAME_PATTERN, out.name) or out.name in (".", ".."):
        raise UserError(f"--fresh refuses to move {out}: name must be a plain folder name inside runs_dir")
    if not out.exists():
        return None
    dest = out.with_name(f"{out.name}.archived-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(out), str(dest))
    return dest


def _print_summary(console, out: Path, analysis: dict, timings: dict) -> None:
    from analysis.api import summary_lines

    console.rule("[bold]study finished")
    # The report's findings in a few lines (analysis.api.summary_lines); plain text, no rich markup.
    for line in summary_lines(analysis):
        console.print(line, markup=False, highlight=False)
    console.print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if not isinstance(v, dict)))
    for key, what in (("trial_s", "training trials"), ("eval_s", "evaluations")):
        if timings.get(key):  # experiments that shared a stage: each one's own seconds in it
            console.print(f"{what} (seconds, summed over sizes): "
                          + ", ".join(f"{k} {v:.0f}" for k, v in timings[key].items()))


def run_study(cfg: StudyConfig, fresh: bool = False, progress: bool = True) -> dict:
    """Prepare, train the grid, search guidance, analyse and report; rerun to resume."""
    from rich.console import Console

    from study.paths import require_paths

    console = Console(stderr=True)
    require_paths(cfg)
    out = run_dir(cfg)
    with folder_lock(out):  # a second `study run` of this folder refuses at once, naming this one
        return _run(cfg, out, fresh, progress, console)


def _run(cfg: StudyConfig, out: Path, fresh: bool, progress: bool, console) -> dict:
    from analysis.api import analyze_run
    from sweeps.sweep import run_sweep

    if fresh:
        moved = archive(out)
        if moved:
            console.print(f"--fresh: archived the previous run to {moved}")
    mode = wandb_mode(cfg.tracking.wandb_mode)
    if mode:  # the trainer's and evaluation's processes inherit it
        os.environ["WANDB_MODE"] = mode
    timings: dict = {}
    t0 = time.time()
    sweep = run_sweep(cfg, progress=progress, timings=timings)
    for msg in sweep["train_errors"] + sweep["eval_failed"]:
        console.print(f"[yellow]warning[/]: {msg} (rerun to retry)")
    t = time.time()
    analysis = analyze_run(out, wandb_mode=mode, wandb_project=cfg.tracking.project, progress=progress)
    if analysis.get("wandb_dir"):  # the W&B workspace of this study, ready to push (`study dashboard --push`)
        from analysis.dashboard import write_spec

        analysis["wandb_workspace"] = str(write_spec(out, cfg.tracking.entity))
    timings["analyze"] = round(time.time() - t, 1)
    timings["total"] = round(time.time() - t0, 1)
    write_json(out / "stages.json", timings, indent=2)
    _print_summary(console, out, analysis, timings)
    for msg in sweep["failed_sizes"]:  # named last, where the eye lands; `study run` then exits 1
        console.print(f"[red]failed[/]: {msg}; its intact milestones were evaluated and marked partial "
                      "(rerun the same command to retry it)")
    return {"run_dir": str(out), "timings": timings, "analysis": analysis, "sweep": sweep,
            "failed": sweep["failed_sizes"]}
