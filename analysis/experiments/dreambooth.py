"""The DreamBooth experiment's analysis: subject and prompt fidelity of the fine-tuned sizes against model size
and against sampling cost, language drift per size, and the image grid of every size.

Reads only the results table (rows with experiment = dreambooth). A cell (size, seed, sampler, steps) is read
at its searched guidance (the row minimising the config's objective); cells are averaged over seeds. Intervals
are bootstrap percentiles of the evaluation noise (each row's standard error over its samples) and, with several
seeds, of the seed spread (analysis/resample.py); crossovers between sizes along the sampling cost come from
analysis/crossovers.py on those resamples.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import interval
from analysis.crossovers import compare_pair
from analysis.figures import new_figure, save, size_colors
from analysis.findings import bracket, num
from analysis.frontier import pareto_mask
from analysis.resample import has_noise, resample_curve
from analysis.table import size_label
from analysis.verdicts import CONTRADICTED, REPRODUCED, UNDERTRAINED, UNRESOLVED, Evidence, claim
from study.results import with_defaults

EXPERIMENT = "dreambooth"
METRICS = {"subject_fidelity": "subject fidelity (mean cosine to the instances)",
           "prompt_fidelity": "prompt fidelity"}
KEYS = ["width", "train_images", "curve", "steps"]  # analysis.resample's point keys (curve = sampler)


def best_cells(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (size, seed, sampler, steps): the guidance the search found best (lowest objective)."""
    rows = table[table["experiment"] == EXPERIMENT].copy()
    if rows.empty:
        return rows
    # The row the sweep marked best: the guidance its search found best for the combined objective.
    rows = with_defaults(rows)
    return rows[rows["best"]].assign(curve=lambda d: d["sampler"]).reset_index(drop=True)


def metric_curve(cells: pd.DataFrame, metric: str, n_boot: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """Seed-averaged points of one metric per (size, sampler, steps) and (n_boot, points) resamples."""
    std = f"{metric}_std"
    cell = cells.assign(value=pd.to_numeric(cells[metric], errors="coerce"),
                        std=pd.to_numeric(cells[std], errors="coerce") if std in cells else np.nan)
    cell = cell.dropna(subset=["value"])
    curve = (cell.groupby(KEYS).agg(value=("value", "mean"), params=("params", "first"),
                                    sampling_cost=("sampling_cost", "first"), guidance=("guidance", "mean"))
             .reset_index())
    boots = resample_curve(curve, cell, n_boot, rng) if has_noise(cell) else np.tile(curve["value"], (n_boot, 1))
    return curve, boots


def _interval(b: np.ndarray) -> tuple[float, float]:
    return interval(b) if np.isfinite(b).all() and b.std() > 0 else (float("nan"), float("nan"))


def size_table(cells: pd.DataFrame, n_boot: int, rng) -> pd.DataFrame:
    """Per size, at each (sampler, steps): both fidelities with intervals, and language drift."""
    out = []
    for metric in METRICS:
        curve, boots = metric_curve(cells, metric, n_boot, rng)
        for i, r in curve.iterrows():
            lo, hi = _interval(boots[:, i])
            out.append({"width": int(r["width"]), "params": float(r["params"]), "sampler": r["curve"],
                        "steps": int(r["steps"]), "sampling_cost": float(r["sampling_cost"]),
                        "guidance": float(r["guidance"]), "metric": metric, "value": float(r["value"]),
                        "low": lo, "high": hi})
    return pd.DataFrame(out)


def drift_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Language drift per size at its most expensive cell: class-prompt FID before and after fine-tuning."""
    cols = [c for c in ("class_fid_base", "class_fid", "language_drift", "drift_fid", "class_prompt_fidelity")
            if c in cells]
    top = cells[cells["steps"] == cells.groupby("width")["steps"].transform("max")]
    return top.groupby(["width", "params"])[cols].mean().reset_index().sort_values("params")


def crossover_table(cells: pd.DataFrame, n_boot: int, rng) -> pd.DataFrame:
    """Every pair of sizes along the sampling cost, per sampler and metric: where the smaller one stops winning."""
    rows = []
    for metric in METRICS:
        curve, boots = metric_curve(cells, metric, n_boot, rng)
        noisy = bool(np.any(boots.std(axis=0) > 0))
        for sampler, sub in curve.groupby("curve"):
            sizes = sub.groupby("width")["params"].first().sort_values()
            for small, large in itertools.combinations(sizes.index, 2):
                ms, ml = sub.index[sub["width"] == small], sub.index[sub["width"] == large]
                if len(ms) < 2 or len(ml) < 2:
                    continue
                res = compare_pair(curve.loc[ms, "sampling_cost"].to_numpy(float), curve.loc[ms, "value"].to_numpy(),
                                   boots[:, ms], curve.loc[ml, "sampling_cost"].to_numpy(float),
                                   curve.loc[ml, "value"].to_numpy(), boots[:, ml], False, noisy)
                if res is None:
                    rows.append({"metric": metric, "sampler": sampler, "smaller_width": int(small),
                                 "larger_width": int(large), "verdict": "no overlap in sampling cost"})
                    continue
                res.pop("gaps"), res.pop("crossing_list")
                rows.append({"metric": metric, "sampler": sampler, "smaller_width": int(small),
                             "larger_width": int(large), **res})
    return pd.DataFrame(rows)


def _fig_vs_size(sizes: pd.DataFrame, cells: pd.DataFrame, out: Path) -> str:
    fig, axes = new_figure(len(METRICS))
    for ax, (metric, label) in zip(axes, METRICS.items()):
        sub = sizes[sizes["metric"] == metric]
        for (sampler, steps), g in sub.groupby(["sampler", "steps"]):
            g = g.sort_values("params")
            err = np.abs(np.vstack([g["value"] - g["low"], g["high"] - g["value"]]))
            ax.errorbar(g["params"], g["value"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                        label=f"{sampler}, {steps} steps")
        if metric == "subject_fidelity":
            for col, style, text in (("subject_fidelity_copy", "--", "instances among themselves"),
                                     ("subject_fidelity_styled", "-.", "true subject in each prompt's context"),
                                     ("subject_fidelity_plain", ":", "real images of the prompts, no style")):
                if col in cells and cells[col].notna().any():
                    ax.axhline(float(cells[col].mean()), color="0.4", linestyle=style, label=text)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    return save(fig, out, "dreambooth_fidelity_vs_size")["png"]


def _fig_vs_cost(sizes: pd.DataFrame, out: Path) -> str:
    fig, axes = new_figure(len(METRICS))
    colors = size_colors(sizes["params"])
    for ax, (metric, label) in zip(axes, METRICS.items()):
        sub = sizes[sizes["metric"] == metric]
        for (params, sampler), g in sub.groupby(["params", "sampler"]):
            g = g.sort_values("sampling_cost")
            ax.plot(g["sampling_cost"], g["value"], marker="o", color=colors[float(params)],
                    linestyle="-" if sampler == sub["sampler"].iloc[0] else "--", label=f"{size_label(params)} {sampler}")
            ax.fill_between(g["sampling_cost"], g["low"], g["high"], color=colors[float(params)], alpha=0.15)
        front = sub[pareto_mask(sub["sampling_cost"].to_numpy(float), sub["value"].to_numpy(float), False)]
        front = front.sort_values("sampling_cost")
        ax.step(front["sampling_cost"], front["value"], where="post", color="k", linewidth=1, label="frontier")
        ax.set_xscale("log")
        ax.set_xlabel("sampling cost (normalized cost x steps)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    return save(fig, out, "dreambooth_fidelity_vs_cost")["png"]


def _fig_drift(drift: pd.DataFrame, out: Path) -> str | None:
    if not {"class_fid", "class_fid_base"} <= set(drift):
        return None
    fig, (ax,) = new_figure(1)
    x = np.arange(len(drift))
    ax.bar(x - 0.2, drift["class_fid_base"], 0.4, label="before fine-tuning (base)")
    ax.bar(x + 0.2, drift["class_fid"], 0.4, label="after fine-tuning")
    ax.set_xticks(x, [size_label(p) for p in drift["params"]])
    ax.set_ylabel("FID of class-prompt samples vs real class images")
    ax.legend(fontsize=8)
    return save(fig, out, "dreambooth_language_drift")["png"]


def _fig_grids(cells: pd.DataFrame, out: Path) -> str | None:
    from matplotlib.image import imread

    if "grid_path" not in cells:
        return None
    paths = (cells.dropna(subset=["grid_path"]).sort_values(["params", "seed"])
             .groupby("width").first()[["params", "grid_path"]])
    paths = paths[[Path(p).is_file() for p in paths["grid_path"]]]
    if paths.empty:
        return None
    fig, axes = new_figure(len(paths), panel_size=(3.2, 4.2), max_cols=4)
    for ax, (_, r) in zip(axes, paths.sort_values("params").iterrows()):
        ax.imshow(imread(r["grid_path"]), cmap="gray")
        ax.set_title(f"{size_label(r['params'])}: instances, then one row per prompt", fontsize=8)
        ax.axis("off")
    return save(fig, out, "dreambooth_grids")["png"]


def size_gaps(cells: pd.DataFrame, n_boot: int, rng) -> pd.DataFrame:
    """Per metric: the largest size's best value minus the smallest's at the most steps, with a bootstrap
    interval (one row per metric; empty with fewer than two sizes)."""
    rows = []
    if cells["width"].nunique() < 2:
        return pd.DataFrame(rows)
    small, large = cells["width"].min(), cells["width"].max()
    for metric in METRICS:
        curve, boots = metric_curve(cells, metric, n_boot, rng)
        top = curve[curve["steps"] == curve["steps"].max()]
        best = {w: top[top["width"] == w]["value"].idxmax() for w in (small, large) if (top["width"] == w).any()}
        if len(best) < 2:
            continue
        lo, hi = _interval(boots[:, best[large]] - boots[:, best[small]])
        rows.append({"metric": metric, "steps": int(top["steps"].max()), "smaller_width": int(small),
                     "larger_width": int(large),
                     "gap": float(curve.loc[best[large], "value"] - curve.loc[best[small], "value"]),
                     "low": lo, "high": hi})
    return pd.DataFrame(rows)


def plain_end(sizes: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per size, its best subject fidelity at the most steps against the plain-class end of the scale (what the
    real images the evaluation's prompts ask for score without the subject's style; the evaluator's
    subject_fidelity_plain): `at_plain_end` when its interval does not clear it."""
    if "subject_fidelity_plain" not in cells or cells["subject_fidelity_plain"].isna().all():
        return pd.DataFrame()
    plain = float(cells["subject_fidelity_plain"].mean())
    sub = sizes[(sizes["metric"] == "subject_fidelity") & (sizes["steps"] == sizes["steps"].max())]
    best = sub.loc[sub.groupby("width")["value"].idxmax()]
    return best.assign(plain=plain, at_plain_end=~(best["low"] > plain))[
        ["width", "params", "value", "low", "high", "plain", "at_plain_end"]].reset_index(drop=True)


@claim("dreambooth_size", EXPERIMENT, "DreamBooth: size",
       "Larger pretrained models give better personalised images (Fig. 11; pictures only, no number).",
       "dreambooth")
def dreambooth_size(ev: Evidence):
    """Reproduced when the largest size beats the smallest beyond noise on a fidelity and loses on none."""
    a = ev.analyses.get(EXPERIMENT)
    if not a or "size_gaps" not in a["tables"]:
        return None
    gaps = a["tables"]["size_gaps"]
    if gaps.empty:
        return "one size only", UNRESOLVED, "fine-tune at least two sizes"
    found = "; ".join(f"{r.metric} largest minus smallest at {r.steps} steps: {num(r.gap)} {bracket(r.low, r.high)}"
                      for r in gaps.itertuples())
    plain = a["tables"].get("plain_end", pd.DataFrame())
    at_plain = plain[plain["width"].isin([gaps["smaller_width"].iloc[0], gaps["larger_width"].iloc[0]])
                     & plain["at_plain_end"]] if len(plain) else plain
    if len(at_plain):
        return (found + "; below the baseline (subject fidelity not above the plain class's beyond noise): "
                + "; ".join(f"{size_label(r.params)} {num(r.value)} {bracket(r.low, r.high)} vs the plain class "
                            f"{num(r.plain)}" for r in at_plain.itertuples()), UNDERTRAINED,
                "fine-tune longer (dreambooth.train_images) or at a higher learning rate: a verdict needs sizes "
                "that learned the subject")
    better, worse = (gaps["low"] > 0).any(), (gaps["high"] < 0).any()
    if better and not worse:
        return found, REPRODUCED, ""
    if worse and not better:
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, ("more samples per prompt and several seeds per size narrow the intervals; a real "
                               "subject (Google's DreamBooth set) with DINO/CLIP at the paper's sizes tests it where "
                               "it was made")


def analyze(table: pd.DataFrame, out: Path, n_boot: int = 500, seed: int = 0) -> dict:
    """Figures (PNG), CSVs and tables of the DreamBooth rows of a results table; dreambooth_size checks the
    paper's claim."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = "DreamBooth: subject and prompt fidelity of every fine-tuned size"
    cells = best_cells(table) if "experiment" in table else pd.DataFrame()
    if cells.empty:
        return {"title": title, "figures": {}, "captions": {}, "tables": {}}
    rng = np.random.default_rng(seed)
    sizes = size_table(cells, n_boot, rng)
    drift = drift_table(cells)
    cross = crossover_table(cells, n_boot, rng)
    for name, frame in (("sizes", sizes), ("drift", drift), ("crossovers", cross)):
        frame.to_csv(out / f"dreambooth_{name}.csv", index=False)
    figures = {"fidelity_vs_size": _fig_vs_size(sizes, cells, out), "fidelity_vs_cost": _fig_vs_cost(sizes, out),
               "language_drift": _fig_drift(drift, out), "grids": _fig_grids(cells, out)}
    captions = {
        "fidelity_vs_size": "Subject and prompt fidelity at each size's searched guidance; the dashed line is what a "
                            "copy of the instances scores, the dash-dotted one the true subject in each prompt's "
                            "context, the dotted one the real images the prompts ask for without the subject's style "
                            "(both on the evaluation's own prompts).",
        "fidelity_vs_cost": "The same against sampling cost, one curve per size; the black step is the frontier: "
                            "where a smaller size lies on it, it wins at that cost.",
        "language_drift": "Class-prompt samples before and after fine-tuning against real class images: a rise is "
                          "language drift (prior preservation should keep it small).",
        "grids": "Per size: the instance images, then the same prompts and noise through every fine-tuned size.",
    }
    figures = {k: v for k, v in figures.items() if v}
    return {"title": title, "figures": figures, "captions": {k: captions[k] for k in figures},
            "tables": {"sizes": sizes, "drift": drift, "crossovers": cross,
                       "size_gaps": size_gaps(cells, n_boot, rng), "plain_end": plain_end(sizes, cells)}}
