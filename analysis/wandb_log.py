"""Log the analysis to Weights & Biases: the whole results table, every derived table, native charts of the
paper's figures, the sample grids, and the results as one versioned artifact.

wandb is imported only here and only when logging is asked for. Without WANDB_API_KEY the
run is written offline (`wandb sync` uploads it later); no key is ever read into the logs. The keys logged
are written to ANALYSIS_DIR/wandb_keys.json, from which `study dashboard` lays out the workspace.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


@dataclass
class StudyLog:
    """What the analysis run holds beyond its tables and figures."""

    results: pd.DataFrame | None = None  # the results table itself: every row and column
    artifact: dict[str, str] = field(default_factory=dict)  # file name -> path: the study-results artifact
    grids: list[dict] = field(default_factory=list)  # {"key", "png", "caption"}: sample grids
    best_size: pd.DataFrame | None = None  # the best size per sampling budget (analysis.frontier.best_size_table)
    keys_file: str | None = None  # where the logged keys are listed (for `study dashboard`)


def log_analysis(root: str | Path, project: str, mode: str | None,
                 tables: dict[str, pd.DataFrame], figures: dict[str, str],
                 summary: dict[str, float | str], config: dict, group: str | None = None,
                 curves: pd.DataFrame | None = None, training: pd.DataFrame | None = None,
                 study: StudyLog | None = None) -> str | None:
    """Write one W&B run under ROOT/wandb/ with the tables, native charts of the curves, PNG
    figures and summary, in the study's group (its training runs' group: the study name), and with `study`
    the results table, its charts, the grids and the study-results artifact; return the run's folder (None when
    logging is off)."""
    resolved = resolve_mode(mode)
    if resolved is None:
        return None
    import wandb  # heavy import, and only needed when logging

    study = study or StudyLog()
    logged: dict[str, list] = {"tables": [], "charts": [], "images": [], "artifacts": []}

    Path(root).mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True,
                              disable_git=True, save_code=False)
    run = wandb.init(project=project, dir=str(root), mode=resolved, job_type="analysis", group=group,
                     name=f"{group}-analysis" if group else None,
                     config=config, settings=settings, reinit="create_new")
    def log(items: dict, kind: str) -> None:
        run.log(items)
        if kind == "charts":  # what `study dashboard` needs to draw each chart from its table
            logged[kind] += [{"key": k, "preset": c.spec.spec_name, "fields": c.spec.fields,
                              "strings": c.spec.string_fields} for k, c in items.items()]
        else:
            logged[kind] += list(items)

    try:
        if study.results is not None and not study.results.empty:
            log({"tables/results": wandb.Table(dataframe=_plain(study.results))}, "tables")
            log(_result_charts(wandb, study.results), "charts")
        for name, frame in tables.items():
            if not frame.empty:
                log({f"tables/{name}": wandb.Table(dataframe=_plain(frame))}, "tables")
        if curves is not None and not curves.empty:
            charts = _charts(wandb, curves)
            log({k: v for k, v in charts.items() if k.startswith("tables/")}, "tables")
            log({k: v for k, v in charts.items() if k.startswith("charts/")}, "charts")
        if training is not None and not training.empty:  # FID vs training compute, a line per size
            table = wandb.Table(dataframe=_plain(training.sort_values(["params", "train_flops"])))
            log({"charts/base/fid_vs_training_compute": wandb.plot.line(
                table, x="train_flops", y="fid", stroke="size", title="base: FID vs training compute")}, "charts")
        if study.best_size is not None and not study.best_size.empty:
            b = study.best_size.assign(size=study.best_size["params"].map(lambda p: f"{p / 1e6:.3g}M"))
            table = wandb.Table(dataframe=_plain(b.sort_values(["sampler", "cost_budget"])[
                ["sampler", "cost_budget", "params", "size", "steps"]]))
            log({"charts/base/best_size_per_budget": wandb.plot.line(
                table, x="cost_budget", y="params", stroke="sampler",
                title="base: best size (params) per sampling budget")}, "charts")
        for name, png in figures.items():
            log({f"figures/{name}": wandb.Image(png)}, "images")
        for grid in study.grids:
            log({grid["key"]: wandb.Image(grid["png"], caption=grid["caption"])}, "images")
        if study.artifact:
            art = wandb.Artifact(f"{group or 'study'}-results", type="study-results",
                                 metadata={"run_dir": config.get("run_dir"), "rows": len(study.results)
                                           if study.results is not None else None})
            for name, path in study.artifact.items():
                art.add_file(path, name=name)
            run.log_artifact(art)
            logged["artifacts"].append(art.name)
        run.summary.update(summary)
        folder = str(Path(run.dir).parent)
    finally:
        run.finish()
    if study.keys_file:
        Path(study.keys_file).write_text(json.dumps({"project": project, "group": group, **logged}, indent=1))
    return folder


# The task metrics charted against sampling cost where a derived experiment's rows carry them.
TASK_METRICS = ("lpips", "psnr", "ssim", "subject_fidelity", "prompt_fidelity")


def _result_charts(wandb, table: pd.DataFrame) -> dict:
    """Native charts straight from the results table: FID against guidance per (size, steps) at each size's
    final budget (the paper's Fig. 4), and each task metric against sampling cost at the searched guidance,
    per experiment and sampler (a line per size)."""
    out = {}
    t = table.copy()
    t["experiment"] = t.get("experiment", pd.Series("base", index=t.index)).fillna("base").astype(str)
    t["size"] = pd.to_numeric(t["params"], errors="coerce").map(lambda p: f"{p / 1e6:.3g}M")
    final = t[t["train_images"] == t.groupby(["experiment", "width"])["train_images"].transform("max")]
    for (exp, sampler), g in final.groupby(["experiment", "sampler"], sort=False):
        if g["guidance"].nunique() > 1:
            g = g.assign(size_steps=g["size"] + " @" + g["steps"].astype(int).astype(str))
            table_ = wandb.Table(dataframe=_plain(g.sort_values(["params", "steps", "guidance"])[
                ["size_steps", "size", "steps", "guidance", "fid"]]))
            out[f"charts/{exp}/fid_vs_guidance/{sampler}"] = wandb.plot.line(
                table_, x="guidance", y="fid", stroke="size_steps", title=f"{exp}: FID vs guidance ({sampler})")
        best = g[g["best"].astype(bool)] if "best" in g else g
        for metric in TASK_METRICS:
            if metric in best and pd.to_numeric(best[metric], errors="coerce").notna().any():
                table_ = wandb.Table(dataframe=_plain(best.sort_values(["params", "sampling_cost"])[
                    ["size", "sampling_cost", "steps", metric]]))
                out[f"charts/{exp}/{metric}_vs_sampling_cost/{sampler}"] = wandb.plot.line(
                    table_, x="sampling_cost", y=metric, stroke="size",
                    title=f"{exp}: {metric} vs sampling cost ({sampler})")
    return out


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
