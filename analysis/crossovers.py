"""Crossover costs between two sizes' quality-vs-sampling-cost curves.

Both curves are piecewise linear in log cost; on the overlap of their cost ranges they are
evaluated at the union of their knots, where their difference is linear between knots,
so each sign change of the difference gives one exact crossing of the two interpolants.
Everything is vectorised over bootstrap resamples (rows).
"""

from __future__ import annotations

import numpy as np

from analysis.bootstrap import interval


def _interp_matrix(knots: np.ndarray, xp: np.ndarray) -> np.ndarray:
    """W (m, n) with W @ fp = np.interp(knots, xp, fp) for any fp (xp sorted)."""
    j = np.clip(np.searchsorted(xp, knots, side="right") - 1, 0, xp.size - 2)
    t = (knots - xp[j]) / (xp[j + 1] - xp[j])
    w = np.zeros((knots.size, xp.size))
    w[np.arange(knots.size), j] = 1.0 - t
    w[np.arange(knots.size), j + 1] = t
    return w


def overlap_knots(cost_a: np.ndarray, cost_b: np.ndarray) -> np.ndarray | None:
    """Log-cost knots of both curves inside the overlap of their ranges (None if < 2)."""
    la, lb = np.log(cost_a), np.log(cost_b)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    if not hi > lo:
        return None
    knots = np.unique(np.r_[la, lb, lo, hi])
    return knots[(knots >= lo) & (knots <= hi)]


def gap_on_knots(cost_s: np.ndarray, val_s: np.ndarray, cost_l: np.ndarray,
                 val_l: np.ndarray, lower_is_better: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(knots, gap (K, m)): how much the smaller size beats the larger (positive: small wins)."""
    knots = overlap_knots(cost_s, cost_l)
    if knots is None or cost_s.size < 2 or cost_l.size < 2:
        return None
    os_, ol = np.argsort(cost_s), np.argsort(cost_l)
    ws = _interp_matrix(knots, np.log(cost_s[os_]))
    wl = _interp_matrix(knots, np.log(cost_l[ol]))
    fs = np.atleast_2d(val_s)[:, os_] @ ws.T
    fl = np.atleast_2d(val_l)[:, ol] @ wl.T
    gap = fl - fs if lower_is_better else fs - fl
    return knots, gap


def crossings(knots: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First crossing cost per row (NaN if none) and the number of crossings per row."""
    sign = np.sign(gap)
    sign[sign == 0] = 1.0  # a tie counts as "the larger size is not worse"
    change = sign[:, 1:] != sign[:, :-1]  # (K, m-1)
    count = change.sum(axis=1)
    first = change.argmax(axis=1)
    rows = np.arange(gap.shape[0])
    g0, g1 = gap[rows, first], gap[rows, first + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(g0 != g1, g0 / (g0 - g1), 0.0)
    t = np.where(count > 0, t, 0.0)  # rows without a sign change have no meaningful t
    log_c = knots[first] + t * (knots[first + 1] - knots[first])
    return np.where(count > 0, np.exp(log_c), np.nan), count


def gap_at(knots: np.ndarray, gap: np.ndarray, cost: float) -> np.ndarray:
    """The gap of every row at one cost inside the overlap."""
    w = _interp_matrix(np.array([np.log(cost)]), knots)
    return (gap @ w.T)[:, 0]


def compare_pair(cost_s: np.ndarray, val_s: np.ndarray, boot_s: np.ndarray,
                 cost_l: np.ndarray, val_l: np.ndarray, boot_l: np.ndarray,
                 lower_is_better: bool, noisy: bool) -> dict | None:
    """Crossing and gaps of one pair: point estimate, bootstrap interval, share crossing."""
    point = gap_on_knots(cost_s, val_s, cost_l, val_l, lower_is_better)
    if point is None:
        return None
    knots, gap = point
    boot_gap = gap_on_knots(cost_s, boot_s, cost_l, boot_l, lower_is_better)[1]
    first, count = crossings(knots, gap)
    b_first, b_count = crossings(knots, boot_gap)
    lo, hi = interval(b_first) if noisy else (np.nan, np.nan)
    out = {"crossover_cost": float(first[0]), "n_crossings": int(count[0]),
           "low": lo, "high": hi,
           "p_cross": float((b_count > 0).mean()) if noisy else np.nan,
           "overlap_low": float(np.exp(knots[0])), "overlap_high": float(np.exp(knots[-1])),
           # which side the smaller size wins on, read at the low end of the overlap
           "smaller_wins_below": bool(gap[0, 0] > 0), "gaps": []}
    for c in (np.exp(knots[0]), np.exp(knots[-1])):
        g_lo, g_hi = interval(gap_at(knots, boot_gap, c)) if noisy else (np.nan, np.nan)
        out["gaps"].append({"cost": float(c), "gap": float(gap_at(knots, gap, c)[0]),
                            "low": g_lo, "high": g_hi})
    return out
