"""The distillation experiment's analysis: distilled (LCM) against undistilled (base) models at equal cost.

Reads only the results table (rows with experiment = base and = distillation). Two cost axes throughout:
- "paper": the paper's sampling cost, normalized cost x steps (a guided step counts as one step);
- "calls": normalized cost x UNet calls per sample (a guided step is two calls, an LCM step one),
  i.e. the cost in evaluations of the reference model.
Each finding names its axis. Intervals are bootstrap percentiles over the evaluation noise (and the seed
spread where there are several seeds) of every point (analysis/resample.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import interval
from analysis.figures import floor_line, new_figure, save, size_colors
from analysis.findings import bracket, num
from analysis.frontier import pareto_mask
from analysis.resample import resample_curve
from analysis.table import cells, curves, headline, normalize, size_label
from analysis.verdicts import CONTRADICTED, REPRODUCED, UNDERTRAINED, UNRESOLVED, Evidence, claim

EXPERIMENT = "distillation"
AXES = {"paper": ("sampling_cost", "sampling cost (normalized cost x steps; the paper's)"),
        "calls": ("call_cost", "UNet-call cost (normalized cost x UNet calls per sample)")}
TARGET_STEPS = 4  # the paper distils to 4 steps
PAPER_MATCH_COST = (6.0, 10.0)  # "at a sampling cost of about 8" (Fig. 9: between 7 and 8)


def _curves(table: pd.DataFrame, experiment: str, n_boot: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """The final-budget curve points of one experiment (seed-averaged, best guidance) and their resamples."""
    # A cell's UNet calls are those of its chosen guidance: an undistilled cell at guidance 1 costs one a step.
    cell = headline(cells(normalize(table, f"the results table ({experiment} rows)", experiment)))
    curve = curves(cell)
    curve["call_cost"] = curve["normalized_cost"] * curve["unet_calls"]
    return curve, resample_curve(curve, cell, n_boot, rng)


def _reach_cost(cost: np.ndarray, vals: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(K,) lowest cost at which one curve (points sorted by cost; vals (K, n)) reaches vals <= target (K,),
    interpolated linearly in log cost between the two points around the first crossing; inf where it never does."""
    out = np.full(vals.shape[0], np.inf)
    hit = vals <= target[:, None]
    any_hit = hit.any(axis=1)
    j = np.where(any_hit, hit.argmax(axis=1), 0)
    k = np.arange(vals.shape[0])
    first = any_hit & (j == 0)
    out[first] = cost[0]
    mid = any_hit & (j > 0)
    if mid.any():
        jm, km = j[mid], k[mid]
        v0, v1 = vals[km, jm - 1], vals[km, jm]
        t = np.clip((v0 - target[mid]) / np.where(v0 - v1 == 0, 1.0, v0 - v1), 0.0, 1.0)
        lc = np.log(cost)
        out[mid] = np.exp(lc[jm - 1] + t * (lc[jm] - lc[jm - 1]))
    return out


def _match_cost(base: pd.DataFrame, boots: np.ndarray, width: int, col: str, target: np.ndarray) -> np.ndarray:
    """(K,) the cost at which undistilled `width` first matches the target FID, its best sampler's."""
    best = np.full(target.shape, np.inf)
    for _, g in base[base["width"] == width].groupby("curve"):
        g = g.sort_values(col)
        best = np.minimum(best, _reach_cost(g[col].to_numpy(float), boots[:, g.index.to_numpy()], target))
    return best


def _point(values: np.ndarray, point: float) -> dict:
    finite = np.isfinite(values)
    lo, hi = interval(values[finite]) if finite.mean() >= 0.95 else (float("nan"), float("nan"))
    return {"cost": point, "low": lo, "high": hi, "p_reached": float(finite.mean())}


def match_table(base, b_boot, dist, d_boot, steps: int) -> pd.DataFrame:
    """For every distilled size: the cost at which each undistilled size matches its FID at `steps`."""
    rows = []
    for _, d in dist[dist["steps"] == steps].iterrows():
        target_pt, target_bt = np.array([d["value"]]), d_boot[:, d.name]
        for w in sorted(base["width"].unique()):
            params = float(base.loc[base["width"] == w, "params"].iloc[0])
            for axis, (col, _) in AXES.items():
                point = float(_match_cost(base, base["value"].to_numpy(float)[None, :], w, col, target_pt)[0])
                res = _point(_match_cost(base, b_boot, w, col, target_bt), point)
                rows.append({"distilled_width": int(d["width"]), "distilled_params": float(d["params"]),
                             "steps": steps, "distilled_fid": float(d["value"]), "distilled_cost": float(d[col]),
                             "undistilled_width": int(w), "undistilled_params": params, "axis": axis, **res})
    return pd.DataFrame(rows)


def gain_table(base, b_boot, dist, d_boot, steps: int) -> pd.DataFrame:
    """Per size: undistilled FID at `steps` (its best sampler) minus distilled FID at `steps`, with interval."""
    rows = []
    for w in sorted(set(dist["width"]) & set(base["width"])):
        d = dist[(dist["width"] == w) & (dist["steps"] == steps)]
        b = base[(base["width"] == w) & (base["steps"] == steps)]
        if d.empty or b.empty:
            continue
        d, b = d.iloc[0], b.sort_values("value").iloc[0]
        diff = b_boot[:, b.name] - d_boot[:, d.name]
        lo, hi = interval(diff)
        rows.append({"width": int(w), "params": float(d["params"]), "steps": steps,
                     "undistilled_sampler": b["curve"], "undistilled_fid": float(b["value"]),
                     "undistilled_unet_calls": float(b["unet_calls"]), "distilled_fid": float(d["value"]),
                     "distilled_unet_calls": float(d["unet_calls"]), "gain": float(b["value"] - d["value"]),
                     "low": lo, "high": hi})
    return pd.DataFrame(rows)


def _figure(base: pd.DataFrame, dist: pd.DataFrame, out: Path) -> str:
    """FID against cost on both axes: each size undistilled (dashed, best sampler per step count) and
    distilled (solid), with the frontier of each family."""
    fig, axes = new_figure(2)
    colors = size_colors(pd.concat([base["params"], dist["params"]]).unique())
    for ax, (axis, (col, label)) in zip(axes, AXES.items()):
        for name, frame, style in (("undistilled", base, "--"), ("distilled", dist, "-")):
            env = frame.sort_values("value").groupby(["width", "steps"]).head(1)  # best sampler per step count
            for p, g in env.groupby("params"):
                g = g.sort_values(col)
                ax.plot(g[col], g["value"], style, marker="o" if name == "distilled" else ".", ms=4,
                        color=colors[p], label=f"{size_label(p)} {name}")
            f = frame[pareto_mask(frame[col].to_numpy(float), frame["value"].to_numpy(float), True)]
            f = f.sort_values(col)
            ax.step(f[col], f["value"], where="post", color="black" if name == "undistilled" else "crimson",
                    linewidth=2.2, alpha=0.6, label=f"{name} frontier")
        floor_line(ax, float(np.nanmean(base["floor"])) if "floor" in base else float("nan"))
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("FID")
        ax.set_title(f"{axis} axis")
    axes[0].legend(fontsize=6, ncol=2)
    return save(fig, out, "distillation_fid_vs_cost")["png"]


def _grids(table: pd.DataFrame) -> dict[str, str]:
    """The experiment's undistilled-vs-distilled image grids (RUN_DIR/distillation/grid-*.png), found from the
    distilled rows' checkpoint paths (RUN_DIR/distillation/train/wW-sS/checkpoints/...)."""
    found = {}
    if "checkpoint" not in table:
        return found
    for ck in table.loc[table["experiment"] == EXPERIMENT, "checkpoint"].dropna().unique():
        parents = Path(str(ck)).parents
        if len(parents) > 3:
            for png in sorted(parents[3].glob("grid-w*-s*.png")):
                found[f"grid_{png.stem[5:]}"] = str(png)
    return found


def curve_table(table: pd.DataFrame, base: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Per size and distillation milestone (its rows' train_images: images of distillation): the distilled FID at
    `steps` (best guidance) with its interval, its change since the previous milestone, and its teacher's best
    FID at the same UNet calls (the baseline it must beat): where the curve flattens."""
    cell = cells(normalize(table, f"the results table ({EXPERIMENT} rows)", EXPERIMENT))
    pts = curves(cell)
    pts = pts[pts["steps"] == steps].sort_values(["width", "train_images"])
    rows = []
    for w, g in pts.groupby("width"):
        same = base[(base["width"] == w) & (base["unet_calls"] == g["unet_calls"].iloc[-1])]
        teacher = float(same["value"].min()) if len(same) else np.nan
        prev = None
        for r in g.itertuples():
            half = 1.96 * float(r.std) if np.isfinite(r.std) else np.nan
            # the change's noise: two independent evaluations (common random numbers make it an upper bound)
            step = (np.nan, np.nan, np.nan) if prev is None else (
                float(r.value - prev.value), float(r.value - prev.value - 1.96 * np.hypot(r.std, prev.std)),
                float(r.value - prev.value + 1.96 * np.hypot(r.std, prev.std)))
            rows.append({"width": int(w), "params": float(r.params), "distill_images": int(r.train_images),
                         "steps": steps, "distilled_fid": float(r.value), "low": float(r.value) - half,
                         "high": float(r.value) + half, "change": step[0], "change_low": step[1],
                         "change_high": step[2], "teacher_fid_same_calls": teacher})
            prev = r
    return pd.DataFrame(rows)


def _curve_figure(curve: pd.DataFrame, out: Path) -> str | None:
    """Distilled FID against distillation images, one line per size with its interval; dashed: the teacher's
    FID at the same UNet calls."""
    if curve.empty or curve["distill_images"].nunique() < 2:
        return None
    fig, (ax,) = new_figure(1)
    colors = size_colors(curve["params"].unique())
    for p, g in curve.groupby("params"):
        ax.errorbar(g["distill_images"], g["distilled_fid"], yerr=[g["distilled_fid"] - g["low"],
                    g["high"] - g["distilled_fid"]], marker="o", ms=4, capsize=2, color=colors[p],
                    label=f"{size_label(p)} distilled")
        ax.axhline(g["teacher_fid_same_calls"].iloc[0], color=colors[p], linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("distillation images")
    ax.set_ylabel(f"FID, {int(curve['steps'].iloc[0])}-step LCM")
    ax.legend(fontsize=7)
    return save(fig, out, "distillation_fid_vs_images")["png"]


def _analysis(ev: Evidence) -> dict | None:
    return ev.analyses.get(EXPERIMENT)


def baseline_table(base, b_boot, dist, d_boot, steps: int) -> pd.DataFrame:
    """Per size: the distilled FID at `steps` against its teacher's at the same UNet calls per sample (its best
    sampler among the evaluated points with exactly that many calls), the difference's interval, and whether the
    student is worse beyond noise (`below`: distillation has not yet paid for itself at this budget)."""
    rows = []
    for _, d in dist[dist["steps"] == steps].iterrows():
        same = base[(base["width"] == d["width"]) & (base["unet_calls"] == d["unet_calls"])]
        if same.empty:
            rows.append({"width": int(d["width"]), "params": float(d["params"]), "calls": float(d["unet_calls"]),
                         "distilled_fid": float(d["value"]), "teacher_fid": np.nan, "low": np.nan, "high": np.nan,
                         "below": False, "measured": False})
            continue
        b = same.sort_values("value").iloc[0]
        lo, hi = interval(d_boot[:, d.name] - b_boot[:, b.name])
        rows.append({"width": int(d["width"]), "params": float(d["params"]), "calls": float(d["unet_calls"]),
                     "distilled_fid": float(d["value"]), "teacher_fid": float(b["value"]),
                     "teacher_steps": int(b["steps"]), "low": lo, "high": hi, "below": bool(lo > 0),
                     "measured": True})
    return pd.DataFrame(rows)


def _undertrained(a: dict, widths) -> str | None:
    """The evidence that the distilled models compared are worse than their teachers at equal UNet calls, or None."""
    base = a["tables"].get("baseline", pd.DataFrame())
    hit = base[base["width"].isin(list(widths)) & base["below"]] if len(base) else base
    if hit.empty:
        return None
    return "; ".join(f"distilled {size_label(r.params)} FID {num(r.distilled_fid)} at {int(r.calls)} UNet calls, its "
                     f"teacher {num(r.teacher_fid)} at the same calls (difference {bracket(r.low, r.high)})"
                     for r in hit.itertuples())


def _refuse(found: str, evidence: str):
    return (f"{found} Below the baseline: {evidence}", UNDERTRAINED,
            "distil longer (distill.total_images) or from longer-trained bases: a verdict needs students at least "
            "as good as their teachers at equal UNet calls")


@claim("distill_gain", EXPERIMENT, "Distillation at 4 steps",
       "Distilling to 4 steps improves the FID of every size at 4 steps (Fig. 9).", "distillation")
def distill_gain(ev: Evidence):
    """Reproduced when every size's distilled FID beats its undistilled FID at the same steps beyond noise."""
    a = _analysis(ev)
    gain = a["tables"]["gain"] if a else pd.DataFrame()
    if gain.empty:
        return None
    parts = [f"{size_label(r.params)} {num(r.undistilled_fid)} ({r.undistilled_sampler}, "
             f"{int(r.undistilled_unet_calls)} calls) -> {num(r.distilled_fid)} ({int(r.distilled_unet_calls)} "
             f"calls): gain {num(r.gain)} {bracket(r.low, r.high)}" for r in gain.itertuples()]
    found = (f"At {int(gain['steps'].iloc[0])} steps (equal steps: the paper's axis; the undistilled model spends "
             "2 UNet calls a guided step): " + "; ".join(parts))
    if (evidence := _undertrained(a, gain["width"])) is not None:
        return _refuse(found, evidence)
    if (gain["low"] > 0).all():
        return found, REPRODUCED, ""
    if (gain["high"] < 0).any():
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, "more evaluation samples (eval.num_samples) or seeds, so the gains' intervals exclude zero"


@claim("distill_match", EXPERIMENT, "Undistilled small vs distilled large",
       "At a sampling cost of about 8, the undistilled 83M model matches the distilled 866M model at 4 steps "
       "(Fig. 9; cost counts a guided step as one step).", "distillation")
def distill_match(ev: Evidence):
    """The paper's pair (its second-smallest size undistilled against its reference size distilled; here the
    same ranks of this ladder): reproduced when the match falls inside the paper's cost window."""
    a = _analysis(ev)
    matches = a["tables"]["matches"] if a else pd.DataFrame()
    widths = a["base_widths"] if a else []
    big = int(matches["distilled_width"].max()) if not matches.empty else None
    smaller = [w for w in widths if big is not None and w < big]
    if not smaller:
        return None
    small = smaller[min(1, len(smaller) - 1)]  # the paper's second-smallest rank, where the ladder has one
    m = matches[(matches["distilled_width"] == big) & (matches["undistilled_width"] == small)]
    paper, calls = m[m["axis"] == "paper"].iloc[0], m[m["axis"] == "calls"].iloc[0]
    lo_p, hi_p = PAPER_MATCH_COST

    def say(r, axis):
        if r.p_reached < 0.05:
            return f"never within the evaluated costs ({axis} axis)"
        tail = "" if r.p_reached >= 0.95 else f", reached in only {r.p_reached:.0%} of resamples"
        return f"cost {num(r.cost)} {bracket(r.low, r.high)} ({axis} axis{tail})"

    found = (f"The undistilled {size_label(paper.undistilled_params)} model (the paper's 83M rank) matches the "
             f"{paper.steps}-step FID {num(paper.distilled_fid)} of the distilled "
             f"{size_label(paper.distilled_params)} (the paper's 866M rank; its own cost {num(paper.distilled_cost)}"
             f" paper / {num(calls.distilled_cost)} calls) at {say(paper, 'paper')}; {say(calls, 'calls')}.")
    if (evidence := _undertrained(a, [big])) is not None:
        return _refuse(found, evidence)
    if paper.p_reached < 0.05:
        return found, CONTRADICTED, ""
    if paper.p_reached >= 0.95 and math.isfinite(paper.low):
        return found, (REPRODUCED if paper.low <= hi_p and paper.high >= lo_p else CONTRADICTED), ""
    return found, UNRESOLVED, "evaluate the undistilled sizes at more step counts around the match, or more samples per FID"


def analyze(table: pd.DataFrame, out: Path, n_boot: int = 500, seed: int = 0) -> dict:
    """Figures and tables of the distillation experiment (see the module docstring); its claims are checked by
    distill_gain and distill_match."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    base, b_boot = _curves(table, "base", n_boot, rng)
    dist, d_boot = _curves(table, EXPERIMENT, n_boot, rng)
    steps = TARGET_STEPS if (dist["steps"] == TARGET_STEPS).any() else int(dist["steps"].max())
    matches = match_table(base, b_boot, dist, d_boot, steps)
    gain = gain_table(base, b_boot, dist, d_boot, steps)
    baseline = baseline_table(base, b_boot, dist, d_boot, steps)
    curve = curve_table(table, base, steps)
    out.mkdir(parents=True, exist_ok=True)
    matches.to_csv(out / "distillation_matches.csv", index=False)
    gain.to_csv(out / "distillation_gain.csv", index=False)
    curve.to_csv(out / "distillation_curve.csv", index=False)
    figures = {"fid_vs_cost": _figure(base, dist, out), "fid_vs_images": _curve_figure(curve, out),
               **_grids(table)}
    figures = {k: v for k, v in figures.items() if v}
    captions = {"fid_vs_cost": "Dashed: undistilled sizes (best sampler at each step count); solid: distilled "
                               "(LCM); thick steps: each family's frontier. Left the paper's cost, right UNet calls: "
                               "a distilled point moving left relative to the dashed ones is the guidance it saves.",
                "fid_vs_images": "Distilled FID (best guidance, 95% evaluation-noise interval) against the images "
                                 "of distillation, one line per size; dashed: the same size undistilled at the "
                                 "same UNet calls, the baseline a student must beat. Where a line levels off, "
                                 "more distillation buys nothing at this base."}
    for name in figures:
        if name.startswith("grid_"):
            captions[name] = (f"{name[5:]}: top row the undistilled base model (DDIM), bottom row its distilled "
                              "student (LCM), same prompts, noise, guidance and step count.")
    return {"title": "Distillation: distilled vs undistilled at equal sampling cost", "figures": figures,
            "captions": captions, "tables": {"matches": matches, "gain": gain, "baseline": baseline, "curve": curve},
            "base_widths": sorted(int(w) for w in base["width"].unique())}
