"""The paper's claims about models derived from the ladder: distillation, 4x super-resolution and
DreamBooth. Each applies only when the results table has rows of its `experiment`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.verdicts import (CONTRADICTED, REPRODUCED, UNRESOLVED, Z, Evidence, _diff, _final, _more_data, _sd,
                             _sign, claim, cost_tradeoff, size_order)
from analysis.findings import bracket, num
from analysis.table import size_label


def _rows(ev: Evidence, experiment: str) -> pd.DataFrame:
    if "experiment" not in ev.table:
        return ev.table.iloc[:0]
    return ev.table[ev.table["experiment"] == experiment]


def _curves(ev: Evidence, experiment: str, metric: str = "fid") -> pd.DataFrame:
    res = ev.experiments.get(experiment, {}).get(metric)
    return _final(res, "curves") if res is not None else pd.DataFrame()


@claim("distill_gain", "distillation", "Distillation at 4 steps",
       "Distilling to 4 steps improves the FID of every size at 4 steps (Fig. 9).", "distillation")
def distill_gain(ev: Evidence):
    dist, base = _curves(ev, "distillation"), _final(ev.results["fid"], "curves") if "fid" in ev.results else None
    if dist.empty or base is None or base.empty:
        return None
    steps = 4 if (dist["steps"] == 4).any() else int(dist["steps"].min())
    parts, signs = [], []
    for w, g in dist[dist["steps"] == steps].groupby("width"):
        d_row = g.sort_values("value").iloc[0]
        b = base[(base["width"] == w) & (base["steps"] == steps)]
        if b.empty:
            continue
        b_row = b.sort_values("value").iloc[0]  # the undistilled model's best sampler at those steps
        gain, lo, hi = _diff(b_row["value"], _sd(b_row), d_row["value"], _sd(d_row))
        signs.append(_sign(lo, hi))
        parts.append(f"{size_label(d_row['params'])} {num(b_row['value'])} -> {num(d_row['value'])} "
                     f"({num(gain)} {bracket(lo, hi)})")
    if not parts:
        return None
    found = f"FID at {steps} steps, undistilled (its best sampler) -> distilled: " + "; ".join(parts)
    if all(s > 0 for s in signs):
        return found, REPRODUCED, ""
    if any(s < 0 for s in signs):
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, _more_data(_rows(ev, "distillation"))


def _cost_to_reach(curve: pd.DataFrame, target: float) -> float:
    """Lowest sampling cost at which a size's curve (any sampler) reaches FID <= target (log-linear)."""
    best = np.inf
    for _, g in curve.groupby("sampler"):
        g = g.sort_values("sampling_cost")
        c, v = np.log(g["sampling_cost"].to_numpy(float)), g["value"].to_numpy(float)
        hit = np.flatnonzero(v <= target)
        if hit.size == 0:
            continue
        j = hit[0]
        if j == 0:
            best = min(best, float(np.exp(c[0])))
            continue
        t = (v[j - 1] - target) / (v[j - 1] - v[j])
        best = min(best, float(np.exp(c[j - 1] + t * (c[j] - c[j - 1]))))
    return best


@claim("distill_match", "distillation", "Undistilled small vs distilled large",
       "At a sampling cost of about 8, the undistilled 83M model matches the distilled 866M model "
       "(Fig. 9; cost counts a guided step as one step).", "distillation")
def distill_match(ev: Evidence):
    dist, base = _curves(ev, "distillation"), _final(ev.results["fid"], "curves") if "fid" in ev.results else None
    if dist.empty or base is None or base.empty:
        return None
    steps = 4 if (dist["steps"] == 4).any() else int(dist["steps"].min())
    top = dist[dist["steps"] == steps].sort_values(["params", "value"]).iloc[-1:]
    if top.empty:
        return None
    big = top.iloc[0]
    target, sd = float(big["value"]), _sd(big)
    # The cost at which each smaller undistilled size reaches the distilled largest model's FID, with the
    # interval of that cost from the noise of the target (+-1.96 sd).
    hits = []
    for w, g in base[base["params"] < big["params"]].groupby("width"):
        c = _cost_to_reach(g, target)
        if math.isfinite(c):
            # An easier target (FID + 1.96 sd) is reached at a lower cost: the low end of the interval.
            lo = _cost_to_reach(g, target + Z * sd) if math.isfinite(sd) else float("nan")
            hi = _cost_to_reach(g, target - Z * sd) if math.isfinite(sd) else float("nan")
            hits.append((c, g["params"].iloc[0], lo, hi))
    d_cost = float(big["sampling_cost"])
    head = (f"distilled {size_label(big['params'])} at {steps} steps: FID {num(target)} at cost {num(d_cost)}")
    if not hits:
        top_cost = float(base[base["params"] < big["params"]]["sampling_cost"].max())
        return (head + f"; no smaller undistilled size reaches it up to cost {num(top_cost)}", CONTRADICTED, "")
    c, p, lo, hi = min(hits)
    top_cost = float(base[base["params"] == p]["sampling_cost"].max())
    span = (bracket(lo, hi) if math.isfinite(hi) or not math.isfinite(lo)
            else f"[{num(lo)}, beyond {num(top_cost)}]")  # the harder target is out of the measured range
    found = head + f"; the undistilled {size_label(p)} reaches it at cost {num(c)} {span}"

    if "unet_calls" in _rows(ev, "distillation"):
        found += " (guided steps cost two UNet calls, distilled steps one)"
    return found, REPRODUCED, ""



@claim("superres_size", "superres", "Super-resolution: size",
       "In 4x super-resolution fine-tuned from each size, FID improves with model size (Fig. 10).", "superres")
def superres_size(ev: Evidence):
    res = ev.experiments.get("superres", {}).get("fid")
    return size_order(res, _rows(ev, "superres"))


@claim("superres_cost", "superres", "Super-resolution: sampling cost",
       "Under a fixed sampling budget, smaller super-resolution models win below about 20 steps and "
       "larger ones above (Fig. 10).", "superres")
def superres_cost(ev: Evidence):
    res = ev.experiments.get("superres", {}).get("fid")
    return cost_tradeoff(res, _rows(ev, "superres"), steps_of_larger=True)


@claim("dreambooth_size", "dreambooth", "DreamBooth: size",
       "Larger pretrained models give better personalised images (Fig. 11; pictures only, no number).",
       "dreambooth")
def dreambooth_size(ev: Evidence):
    rows = _rows(ev, "dreambooth")
    metric = "subject_fidelity"
    if rows.empty or metric not in rows or rows[metric].isna().all():
        return None
    if "best" in rows and rows["best"].any():
        rows = rows[rows["best"].astype(bool)]
    # Each size at its best cell (the sampler, steps and guidance the search settled on).
    per = rows.loc[rows.groupby("width")[metric].idxmax()].sort_values("params")
    if len(per) < 2:
        return None
    std_col = f"{metric}_std"
    sd = lambda r: float(r[std_col]) if std_col in r and pd.notna(r[std_col]) else float("nan")  # noqa: E731
    small, large = per.iloc[0], per.iloc[-1]
    d, lo, hi = _diff(large[metric], sd(large), small[metric], sd(small))
    values = ", ".join(f"{size_label(r['params'])} {num(r[metric])}" for _, r in per.iterrows())
    found = (f"subject fidelity at each size's best cell: {values}; the largest beats the smallest by "
             f"{num(d)} {bracket(lo, hi)}")
    if "prompt_fidelity" in per:
        found += "; prompt fidelity " + ", ".join(f"{size_label(r['params'])} {num(r['prompt_fidelity'])}"
                                                for _, r in per.iterrows())
    s = _sign(lo, hi)
    if s > 0:
        return found, REPRODUCED, ""
    if s < 0:
        return found, CONTRADICTED, ""
    why = ("the table has no subject_fidelity_std and one seed: record it or train 2+ seeds"
           if math.isnan(lo) else _more_data(rows))
    return found, UNRESOLVED, why
