"""The Pareto frontier of quality against sampling cost across sizes, and the best size
for each sampling-cost budget.

Only evaluated points count: a budget buys whole steps, so the best size at budget b is
the best point whose cost is at most b, and that is the frontier read as a step function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


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


def best_size_table(curve: pd.DataFrame, lower_is_better: bool,
                    resampled: np.ndarray | None = None) -> pd.DataFrame:
    """Best size for each budget (the frontier's costs), with the share of resamples agreeing."""
    cost = curve["sampling_cost"].values.astype(float)
    sign = 1.0 if lower_is_better else -1.0
    budgets = frontier(curve, lower_is_better)["sampling_cost"].values.astype(float)
    best = best_at_budgets(cost, sign * curve["value"].values, budgets)[0]
    widths = curve["width"].values
    rows = pd.DataFrame({
        "cost_budget": budgets, "width": widths[best], "params": curve["params"].values[best],
        "steps": curve["steps"].values[best], "sampling_cost": cost[best],
        "value": curve["value"].values[best]})
    if resampled is not None and len(resampled):
        boot = best_at_budgets(cost, sign * resampled, budgets)  # (K, B)
        rows["p_best"] = (widths[boot] == widths[best][None, :]).mean(axis=0)
    else:
        rows["p_best"] = np.nan
    return rows


def winner_ranges(table: pd.DataFrame) -> list[dict]:
    """Collapse a best-size table into cost ranges won by one size each."""
    out: list[dict] = []
    for row in table.itertuples():
        if out and out[-1]["width"] == row.width:
            continue
        if out:
            out[-1]["to_cost"] = float(row.cost_budget)
        # to_cost None: this size stays best up to the largest budget evaluated
        out.append({"width": int(row.width), "params": int(row.params),
                    "from_cost": float(row.cost_budget), "to_cost": None})
    return out
