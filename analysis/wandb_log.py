"""Log the analysis to Weights & Biases: tables, figures and fit summaries.

wandb is imported only here and only when logging is asked for. Without WANDB_API_KEY the
run is written offline (`wandb sync` uploads it later); no key is ever read into the logs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def resolve_mode(mode: str | None) -> str | None:
    """None/'disabled' -> None (no logging); 'online' without WANDB_API_KEY -> 'offline'."""
    if mode is None or mode == "disabled":
        return None
    if mode == "dryrun":  # wandb's old name for offline
        mode = "offline"
    if mode not in ("online", "offline"):
        raise ValueError(f"unknown W&B mode {mode!r}: use 'online', 'offline' or None")
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        return "offline"
    return mode


def log_analysis(root: str | Path, project: str, mode: str | None,
                 tables: dict[str, pd.DataFrame], figures: dict[str, str],
                 summary: dict[str, float | str], config: dict, group: str | None = None,
                 curves: pd.DataFrame | None = None, training: pd.DataFrame | None = None) -> str | None:
    """Write one W&B run under ROOT/wandb/ with the tables, native charts of the curves, PNG
    figures and summary, in the study's group (its training runs' group: the study name);
    return the run's folder (None when logging is off)."""
    resolved = resolve_mode(mode)
    if resolved is None:
        return None
    import wandb  # heavy import, and only needed when logging

    Path(root).mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True,
                              disable_git=True, save_code=False)
    run = wandb.init(project=project, dir=str(root), mode=resolved, job_type="analysis", group=group,
                     name=f"{group}-analysis" if group else None,
                     config=config, settings=settings, reinit="create_new")
    try:
        for name, frame in tables.items():
            if not frame.empty:
                run.log({f"tables/{name}": wandb.Table(dataframe=_plain(frame))})
        if curves is not None and not curves.empty:
            run.log(_charts(wandb, curves))
        if training is not None and not training.empty:  # FID vs training compute, a line per size
            table = wandb.Table(dataframe=_plain(training.sort_values(["params", "train_flops"])))
            run.log({"charts/base/fid_vs_training_compute": wandb.plot.line(
                table, x="train_flops", y="fid", stroke="size", title="base: FID vs training compute")})
        for name, png in figures.items():
            run.log({f"figures/{name}": wandb.Image(png)})
        run.summary.update(summary)
        folder = str(Path(run.dir).parent)
    finally:
        run.finish()
    return folder


def _charts(wandb, curves: pd.DataFrame) -> dict:
    """Native W&B line charts, one per (experiment, metric, sampler), a line per size, over the one
    long curves table: a dashboard filters that table by size, sampler and experiment."""
    logged = {"tables/curves": wandb.Table(dataframe=_plain(curves))}
    for (exp, metric, sampler), g in curves.groupby(["experiment", "metric", "sampler"], sort=False):
        table = wandb.Table(dataframe=_plain(g.sort_values(["params", "sampling_cost"])))
        logged[f"charts/{exp}/{metric}_vs_sampling_cost/{sampler}"] = wandb.plot.line(
            table, x="sampling_cost", y="value", stroke="size",
            title=f"{exp}: {metric} vs sampling cost ({sampler})")
    return logged


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    # wandb.Table rejects some pandas extension dtypes; plain object/float columns are safe.
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == bool:
            out[col] = out[col].astype(int)
        elif not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].astype(str)
    return out
