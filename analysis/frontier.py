"""The Pareto frontier of quality against sampling cost across sizes, and the best size
for each sampling-cost budget.

Only evaluated points count: a budget buys whole steps, so the best size at budget b is
the best point whose cost is at most b, and that is the frontier read as a step function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.table import size_label

ROUNDING = 1e-9  # relative: values this close are equal up to rounding


def pareto_mask(cost: np.ndarray, value: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """True for points no other point beats at equal or lower cost."""
    cost, score = np.asarray(cost, float), np.asarray(value, float)
    score = score if lower_is_better else -score
    order = np.lexsort((score, cost))  # by cost, ties broken by the better score
    mask = np.zeros(cost.size, dtype=bool)
    best = np.inf
    for j in order:
        if score[j] < best:
            mask[j] = True
            best = score[j]
    return mask


def frontier(curve: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """Frontier points of one (sampler, budget) curve table, sorted by sampling cost."""
    mask = pareto_mask(curve["sampling_cost"].values, curve["value"].values, lower_is_better)
    return curve[mask].sort_values("sampling_cost").reset_index(drop=True)


def best_at_budgets(cost: np.ndarray, score: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Index of the best point (lowest score) with cost <= each budget; -1 when none.

    score may be (K, n) for K bootstrap resamples; the result is then (K, len(budgets)).
    """
    score = np.atleast_2d(score)
    afford = cost[None, :] <= budgets[:, None]  # (B, n)
    masked = np.where(afford[None, :, :], score[:, None, :], np.inf)  # (K, B, n)
    idx = masked.argmin(axis=-1)
    idx[~afford.any(axis=1)[None, :].repeat(score.shape[0], axis=0)] = -1
    return idx


def best_by_width(cost: np.ndarray, score: np.ndarray, widths: np.ndarray,
                  budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique widths (W,), best affordable score (K, B, W)): per width and budget, the lowest
    score among its points with cost <= budget (inf when it has none)."""
    score = np.atleast_2d(score)
    uniq = np.unique(widths)
    out = np.full((score.shape[0], budgets.size, uniq.size), np.inf)
    afford = cost[None, :] <= budgets[:, None]  # (B, n)
    for i, w in enumerate(uniq):
        m = widths == w
        masked = np.where(afford[None, :, m], score[:, None, m], np.inf)
        out[:, :, i] = masked.min(axis=-1)
    return uniq, out


def best_size_table(curve: pd.DataFrame, lower_is_better: bool,
                    resampled: np.ndarray | None = None) -> pd.DataFrame:
    """Best size for each budget (the frontier's costs), the share of resamples agreeing
    (p_best), and the sizes tied with it within noise.

    A size is tied with the best at a budget when its best affordable point is not worse
    beyond noise: the 95 % bootstrap interval of its deficit includes zero (no resamples:
    equal up to rounding). Each size's ties then span from the first to the last budget where
    it is best or tied, so sizes that alternate never flip-flop. `tied_widths` lists the
    best size and its ties, ';'-separated in parameter order; `tied_label` reads "1.74M ~ 3.67M".
    """
    cost = curve["sampling_cost"].values.astype(float)
    sign = 1.0 if lower_is_better else -1.0
    budgets = frontier(curve, lower_is_better)["sampling_cost"].values.astype(float)
    score = sign * curve["value"].values.astype(float)
    best = best_at_budgets(cost, score, budgets)[0]
    widths = curve["width"].values
    rows = pd.DataFrame({
        "cost_budget": budgets, "width": widths[best], "params": curve["params"].values[best],
        "steps": curve["steps"].values[best], "sampling_cost": cost[best],
        "value": curve["value"].values[best]})
    uniq, point = best_by_width(cost, score, widths, budgets)
    deficit = point[0] - point[0].min(axis=1, keepdims=True)  # (B, W), >= 0
    scale = ROUNDING * max(1.0, float(np.nanmax(np.abs(score))))
    tied = deficit <= scale
    if resampled is not None and len(resampled):
        boot = best_at_budgets(cost, sign * resampled, budgets)  # (K, B)
        rows["p_best"] = (widths[boot] == widths[best][None, :]).mean(axis=0)
        _, bw = best_by_width(cost, sign * resampled, widths, budgets)  # (K, B, W)
        win = np.array([np.flatnonzero(uniq == w)[0] for w in widths[best]])
        diff = bw - bw[:, np.arange(budgets.size), win][:, :, None]  # (K, B, W)
        finite = np.isfinite(point[0])
        # A size with no affordable point at a budget has inf there: never tied, never NaN.
        low = np.percentile(np.where(np.isfinite(diff), diff, 1e300), 2.5, axis=0)
        tied |= finite & (low <= scale)
    else:
        rows["p_best"] = np.nan
    # A size is in the range from the first to the last budget where it is best or tied: a
    # hand-over between two sizes that alternates within noise reads as one "A ~ B" range.
    seen = np.flatnonzero(tied.any(axis=0))
    for w in seen:
        hit = np.flatnonzero(tied[:, w])
        tied[hit[0]:hit[-1] + 1, w] = True
    params = curve.groupby("width")["params"].first()
    labels, members = [], []
    for b in range(budgets.size):
        ws = sorted(uniq[tied[b]], key=lambda w: params[w])
        members.append(";".join(str(int(w)) for w in ws))
        labels.append(" ~ ".join(size_label(params[w]) for w in ws))
    rows["tied_widths"], rows["tied_label"] = members, labels
    return rows


def winner_ranges(table: pd.DataFrame) -> list[dict]:
    """Collapse a best-size table into cost ranges won by one size or one set of tied sizes.

    Consecutive budgets with the same tie set are one range, so sizes within noise read
    "1.74M ~ 3.67M from cost a to b" instead of flipping between them. Each range: width and
    params of its first budget's point winner, `label` (the tie set), `widths` (all of it),
    from_cost, to_cost (None: up to the largest budget evaluated).
    """
    out: list[dict] = []
    has_ties = "tied_widths" in table
    for row in table.itertuples():
        key = row.tied_widths if has_ties else str(int(row.width))
        if out and out[-1]["key"] == key:
            continue
        if out:
            out[-1]["to_cost"] = float(row.cost_budget)
        out.append({"width": int(row.width), "params": int(row.params),
                    "label": row.tied_label if has_ties else size_label(row.params),
                    "widths": [int(w) for w in key.split(";")], "tied": ";" in key,
                    "from_cost": float(row.cost_budget), "to_cost": None, "key": key})
    for r in out:
        del r["key"]
    return out
