"""The super-resolution experiment's analysis (issue 12): FID and LPIPS of each size's 4x fine-tune against
sampling cost (frontiers, crossovers with intervals), against the base model's training compute, the paper's
claim checked, and the image grid LR | bicubic | each size | HR. Bicubic upsampling's scores on the same
patches are drawn on every figure and listed in every table.

Reads only the results table (rows with experiment = superres; base rows for the base's training compute) and
the output strips the evaluation wrote (paths in the rows). Intervals are bootstrap percentiles over the
evaluation noise (fid_std, lpips_std) and the seeds (analysis/resample.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.crossovers import compare_pair
from analysis.figures import new_figure, save, size_colors
from analysis.findings import bracket, num
from analysis.frontier import pareto_mask
from analysis.resample import resample_curve
from analysis.table import cells, curves, headline, normalize, size_label
from analysis.verdicts import CONTRADICTED, REPRODUCED, UNDERTRAINED, UNRESOLVED, Evidence, claim

EXPERIMENT = "superres"
METRICS = {"fid": "FID", "lpips": "LPIPS"}
PAPER_STEPS = 20  # "smaller models win below about 20 steps, larger ones above" (Fig. 10)


def _curves(rows: pd.DataFrame, metric: str, n_boot: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    cell = headline(cells(rows, metric))
    if cell.empty:
        return cell, np.empty((n_boot, 0))
    curve = curves(cell)
    return curve, resample_curve(curve, cell, n_boot, rng)


def _baseline(rows: pd.DataFrame, metric: str) -> float:
    col = f"bicubic_{metric}"
    return float(rows[col].mean()) if col in rows and rows[col].notna().any() else float("nan")


def crossover_table(curve: pd.DataFrame, boot: np.ndarray) -> pd.DataFrame:
    """Adjacent sizes' crossing cost on each sampler's curve, in cost and in the larger model's steps."""
    out = []
    for sampler, g in curve.groupby("curve"):
        widths = sorted(g["width"].unique(), key=lambda w: g.loc[g["width"] == w, "params"].iloc[0])
        for ws, wl in zip(widths, widths[1:]):
            s, big = g[g["width"] == ws], g[g["width"] == wl]
            res = compare_pair(s["sampling_cost"].to_numpy(float), s["value"].to_numpy(float), boot[:, s.index],
                               big["sampling_cost"].to_numpy(float), big["value"].to_numpy(float),
                               boot[:, big.index], lower_is_better=True, noisy=bool(np.isfinite(boot).all()))
            if res is None:
                continue
            nc = float(big["normalized_cost"].iloc[0])
            out.append({"sampler": sampler, "smaller": float(s["params"].iloc[0]), "larger": float(big["params"].iloc[0]),
                        "crossover_cost": res["crossover_cost"], "low": res["low"], "high": res["high"],
                        "crossover_steps_larger": res["crossover_cost"] / nc, "p_cross": res["p_cross"],
                        "n_crossings": res["n_crossings"], "smaller_wins_below": res["smaller_wins_below"],
                        "gap_low_cost": res["gaps"][0]["gap"], "gap_low_cost_lo": res["gaps"][0]["low"],
                        "gap_low_cost_hi": res["gaps"][0]["high"], "gap_high_cost": res["gaps"][-1]["gap"],
                        "gap_high_cost_lo": res["gaps"][-1]["low"], "gap_high_cost_hi": res["gaps"][-1]["high"]})
    return pd.DataFrame(out)


def _cost_figure(curves_by: dict, baselines: dict, out: Path) -> dict[str, str]:
    figs = {}
    for metric, (curve, _) in curves_by.items():
        samplers = sorted(curve["curve"].unique())
        fig, axes = new_figure(len(samplers))
        colors = size_colors(curve["params"].unique())
        for ax, sampler in zip(axes, samplers):
            g = curve[curve["curve"] == sampler]
            for p, h in g.groupby("params"):
                h = h.sort_values("sampling_cost")
                ax.errorbar(h["sampling_cost"], h["value"], yerr=1.96 * h["std"].fillna(0), marker="o", ms=4,
                            color=colors[p], label=size_label(p), capsize=2)
            f = g[pareto_mask(g["sampling_cost"].to_numpy(float), g["value"].to_numpy(float), True)]
            ax.step(f.sort_values("sampling_cost")["sampling_cost"], f.sort_values("sampling_cost")["value"],
                    where="post", color="black", lw=1, alpha=0.6, label="frontier")
            if np.isfinite(baselines[metric]):
                ax.axhline(baselines[metric], color="crimson", ls="--", lw=1.2,
                           label=f"bicubic {baselines[metric]:.3g}")
            ax.set_xscale("log")
            ax.set_xlabel("sampling cost (normalized cost x steps)")
            ax.set_ylabel(METRICS[metric])
            ax.set_title(f"4x super-resolution, {sampler}")
            ax.legend(fontsize=8)
        figs[f"superres_{metric}_vs_cost"] = save(fig, out, f"superres_{metric}_vs_cost")["png"]
    return figs


def _compute_figure(per_size: pd.DataFrame, baselines: dict, out: Path) -> str:
    fig, axes = new_figure(len(METRICS))
    colors = size_colors(per_size["params"].unique())
    for ax, metric in zip(axes, METRICS):
        for _, r in per_size.iterrows():
            ax.errorbar(r["base_train_flops"], r[metric], yerr=1.96 * r[f"{metric}_std"], marker="o",
                        color=colors[r["params"]], label=size_label(r["params"]), capsize=2)
        if np.isfinite(baselines[metric]):
            ax.axhline(baselines[metric], color="crimson", ls="--", lw=1.2, label="bicubic")
        ax.set_xscale("log")
        ax.set_xlabel("training compute of the base model (FLOPs)")
        ax.set_ylabel(f"{METRICS[metric]} ({per_size['cell'].iloc[0]})")
        ax.legend(fontsize=8)
    return save(fig, out, "superres_vs_training_compute")["png"]


def _grid(rows: pd.DataFrame, cell: tuple[str, int], out: Path) -> str | None:
    """LR | bicubic | each size | HR, from the strips the evaluation wrote (nearest-neighbour enlarged)."""
    from PIL import Image

    sub = rows[(rows["sampler"] == cell[0]) & (rows["steps"] == cell[1])]
    need = ["lr_strip_path", "bicubic_strip_path", "hr_strip_path", "strip_path"]
    if sub.empty or any(c not in sub for c in need):
        return None
    first = sub.iloc[0]
    entries = [("LR input", first["lr_strip_path"]), ("bicubic", first["bicubic_strip_path"])]
    for p, g in sub.sort_values("params").groupby("params", sort=True):
        entries.append((f"{size_label(p)} ({cell[0]}, {cell[1]} steps)", g.iloc[0]["strip_path"]))
    entries.append(("HR", first["hr_strip_path"]))
    if not all(isinstance(path, str) and Path(path).exists() for _, path in entries):
        return None
    fig, axes = new_figure(len(entries), panel_size=(8.0, 1.4), max_cols=1)
    for ax, (label, path) in zip(axes, entries):
        im = np.asarray(Image.open(path))
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_axis_off()
    return save(fig, out, "superres_grid")["png"]


def _analysis(ev: Evidence) -> dict | None:
    return ev.analyses.get(EXPERIMENT)


def baseline_table(per: pd.DataFrame, baselines: dict) -> pd.DataFrame:
    """Per size at the reference cell: FID and LPIPS against bicubic upsampling's on the same patches; `below` when
    the fine-tune is worse than bicubic beyond its noise on either (+-1.96 of its std; bicubic has none), `beats`
    when it is better beyond its noise on both (what a super-resolution model must do before its size or cost is
    compared)."""
    rows = []
    for _, r in per.iterrows():
        row = {"width": int(r["width"]), "params": float(r["params"]), "below": False, "beats": True}
        for m in METRICS:
            if m in per and np.isfinite(baselines.get(m, np.nan)):
                sd = float(r.get(f"{m}_std", np.nan))
                half = 1.96 * sd if np.isfinite(sd) else 0.0
                worse, better = r[m] - half > baselines[m], r[m] + half < baselines[m]
                row |= {m: float(r[m]), f"bicubic_{m}": float(baselines[m]), f"{m}_worse": bool(worse),
                        f"{m}_better": bool(better), f"{m}_low": max(0.0, float(r[m] - half)),  # distances: >= 0
                        f"{m}_high": float(r[m] + half)}
                row["below"] |= bool(worse)
                row["beats"] &= bool(better)
        rows.append(row)
    return pd.DataFrame(rows)


def _undertrained(a: dict, widths=None) -> tuple[str, str, str] | None:
    """(found addendum, verdict, resolve) when a compared size is worse than bicubic upsampling, or not better than
    it beyond noise on FID and LPIPS (the target a fine-tune must reach before its size or cost means anything),
    else None."""
    base = a["tables"].get("superres_baseline", pd.DataFrame())
    if len(base) and widths is not None:
        base = base[base["width"].isin(list(widths))]
    if base.empty or base["beats"].all():
        return None
    below, short = base[base["below"]], base[~base["below"] & ~base["beats"]]
    said = []
    if len(below):
        said.append(" Below the baseline (worse than bicubic upsampling beyond noise): " + "; ".join(
            f"{size_label(r['params'])} " + ", ".join(f"{METRICS[m]} {num(r[m])} vs bicubic {num(r[f'bicubic_{m}'])}"
                                                      for m in METRICS if r.get(f"{m}_worse"))
            for _, r in below.iterrows()))
    if len(short):
        said.append(" Not above the baseline (not better than bicubic upsampling beyond noise): " + "; ".join(
            f"{size_label(r['params'])} " + ", ".join(
                f"{METRICS[m]} {num(r[m])} {bracket(r[f'{m}_low'], r[f'{m}_high'])} vs bicubic "
                f"{num(r[f'bicubic_{m}'])}" for m in METRICS if f"{m}_better" in r and not r[f"{m}_better"])
            for _, r in short.iterrows()))
    return ("".join(said), UNDERTRAINED, "fine-tune longer (superres.train_images), evaluate more patches "
            "(superres.num_eval) or use the residual formulation: a verdict needs fine-tunes that beat bicubic")


@claim("superres_cost", EXPERIMENT, "Super-resolution: sampling cost",
       "Under a fixed sampling budget, smaller super-resolution models win below about 20 steps and larger ones "
       "above (Fig. 10).", "superres")
def superres_cost(ev: Evidence):
    """Reproduced when every pair of sizes crosses with the smaller winning the cheap end (p >= 0.9)."""
    a = _analysis(ev)
    if a is None or "superres_fid_crossovers" not in a["tables"]:
        return None
    cross = a["tables"]["superres_fid_crossovers"]
    resolve = "more fine-tuning images per size (the outputs must beat bicubic first), several seeds, more steps"
    if cross.empty:
        return "no two sizes' curves overlap in sampling cost", UNRESOLVED, resolve
    parts, verdicts = [], []
    for _, r in cross.iterrows():
        pair = f"{size_label(r['smaller'])} vs {size_label(r['larger'])} ({r['sampler']})"
        if r["n_crossings"] > 0 and r["smaller_wins_below"]:
            parts.append(f"{pair}: the smaller wins below cost {num(r['crossover_cost'])} "
                         f"{bracket(r['low'], r['high'])} (~{num(r['crossover_steps_larger'])} steps of the larger)")
            sure = np.isfinite(r["low"]) and r["p_cross"] >= 0.9
            verdicts.append(REPRODUCED if sure else UNRESOLVED)
        else:
            lo, hi = r["gap_high_cost_lo"], r["gap_high_cost_hi"]
            who = "the larger" if r["gap_high_cost"] < 0 else "the smaller"
            parts.append(f"{pair}: no crossing; {who} is better across the overlap (gap at the top cost "
                         f"{num(r['gap_high_cost'])} {bracket(lo, hi)})")
            verdicts.append(CONTRADICTED if np.isfinite(hi) and (hi < 0 or lo > 0) else UNRESOLVED)
    if (refused := _undertrained(a)) is not None:
        return "; ".join(parts) + refused[0], refused[1], refused[2]
    verdict = (REPRODUCED if all(v == REPRODUCED for v in verdicts)
               else CONTRADICTED if all(v == CONTRADICTED for v in verdicts) else UNRESOLVED)
    return "; ".join(parts), verdict, resolve if verdict == UNRESOLVED else ""


@claim("superres_size", EXPERIMENT, "Super-resolution: size",
       "In 4x super-resolution fine-tuned from each size, FID improves with model size (Fig. 10).", "superres")
def superres_size(ev: Evidence):
    """The largest size's FID minus the smallest's at the reference cell, with +-1.96 of their noise."""
    a = _analysis(ev)
    per = a["tables"].get("superres_vs_training_compute") if a else None
    if per is None or "fid" not in per or len(per) < 2:
        return None
    per = per.sort_values("params")
    s, b = per.iloc[0], per.iloc[-1]
    d = b["fid"] - s["fid"]
    sd = float(np.hypot(s["fid_std"], b["fid_std"]))
    lo, hi = d - 1.96 * sd, d + 1.96 * sd
    bicubic = a["baselines"].get("fid", np.nan)
    beats = "" if not np.isfinite(bicubic) else f"; bicubic FID {num(bicubic)}, best size {num(per['fid'].min())}"
    found = f"FID ({per['cell'].iloc[0]}) largest minus smallest {num(d)} {bracket(lo, hi)}{beats}"
    if (refused := _undertrained(a, [s["width"], b["width"]])) is not None:
        return found + refused[0], refused[1], refused[2]
    if hi < 0:
        return found, REPRODUCED, ""
    if lo > 0:
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, "more fine-tuning images per size and several seeds"


@claim("superres_compute", EXPERIMENT, "Super-resolution: training compute",
       "LPIPS tracks the base model's training compute more than its size (Fig. 10).", "superres")
def superres_compute(ev: Evidence):
    """Not testable while every size is fine-tuned from its final milestone only."""
    if _analysis(ev) is None:
        return None
    return ("every size is fine-tuned from its final milestone only, so compute and size move together", UNRESOLVED,
            "fine-tune from several base budgets per size (milestones) and compare at equal compute")


def analyze(table: pd.DataFrame, out: Path, n_boot: int, seed: int) -> dict:
    """FID/LPIPS against sampling cost and training compute, crossovers and the image grid; the paper's claims
    are checked by superres_cost, superres_size and superres_compute."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = normalize(table, "the results table (superres rows)", EXPERIMENT)
    rng = np.random.default_rng(seed)
    curves_by = {m: _curves(rows, m, n_boot, rng) for m in METRICS if m in rows and rows[m].notna().any()}
    baselines = {m: _baseline(rows, m) for m in METRICS}
    figures = _cost_figure(curves_by, baselines, out)
    tables, captions = {}, {}
    for metric, (curve, boot) in curves_by.items():
        cross = crossover_table(curve, boot)
        tables[f"superres_{metric}_crossovers"] = cross
        cross.to_csv(out / f"superres_{metric}_crossovers.csv", index=False)
        captions[f"superres_{metric}_vs_cost"] = (f"{METRICS[metric]} of each size's 4x fine-tune against sampling "
                                                  f"cost (lower is better); dashed red: bicubic upsampling")
    # The cells table: every (size, sampler, steps) with bicubic's scores on the same patches beside it.
    cols = [c for c in ["width", "params", "seed", "sampler", "steps", "sampling_cost", "fid", "fid_std", "lpips",
                        "lpips_std", "psnr", "ssim", "bicubic_fid", "bicubic_lpips", "bicubic_psnr", "bicubic_ssim"]
            if c in rows]
    tables["superres_cells"] = rows[cols].sort_values(["width", "sampler", "steps"]).reset_index(drop=True)
    tables["superres_cells"].to_csv(out / "superres_cells.csv", index=False)

    # Against the base model's training compute: each size at one reference cell (DDIM, its most steps).
    sampler = "ddim" if (rows["sampler"] == "ddim").any() else rows["sampler"].iloc[0]
    steps = int(rows.loc[rows["sampler"] == sampler, "steps"].max())
    ref = rows[(rows["sampler"] == sampler) & (rows["steps"] == steps)]
    per = ref.groupby("width").agg(params=("params", "first"), **{m: (m, "mean") for m in curves_by},
                                   **{f"{m}_std": (f"{m}_std", "mean") for m in curves_by if f"{m}_std" in ref},
                                   sr_flops=("train_flops", "mean")).reset_index()
    base = table[table.get("experiment", pd.Series(index=table.index, dtype=str)) == "base"] \
        if "experiment" in table else table.iloc[:0]
    base_flops = base.groupby("width")["train_flops"].max() if not base.empty else pd.Series(dtype=float)
    per["base_train_flops"] = per["width"].map(base_flops).fillna(per["sr_flops"]).astype(float)
    per["cell"] = f"{sampler}, {steps} steps"
    for m in METRICS:
        per[f"{m}_std"] = per.get(f"{m}_std", np.nan)
    tables["superres_vs_training_compute"] = per
    tables["superres_baseline"] = baseline_table(per, baselines)
    if set(METRICS) <= set(per.columns):
        figures["superres_vs_training_compute"] = _compute_figure(per, baselines, out)
        captions["superres_vs_training_compute"] = (f"FID and LPIPS ({sampler}, {steps} steps) against the base "
                                                    "model's training compute; dashed red: bicubic")
    grid = _grid(rows, (sampler, steps), out)
    if grid:
        figures["superres_grid"] = grid
        captions["superres_grid"] = f"LR input, bicubic, each size's output ({sampler}, {steps} steps), HR"

    return {"title": "4x super-resolution", "figures": figures, "captions": captions, "tables": tables,
            "baselines": baselines}
