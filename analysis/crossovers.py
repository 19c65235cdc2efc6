"""Crossovers between two sizes' quality-vs-sampling-cost curves, with ties and a verdict.

Each curve is a monotone cubic (PCHIP) through its evaluated points in log cost, read on a
fine grid over the overlap of the two cost ranges. The straight lines between evaluated step
counts used before put crossings 2-11 % too high on noise-free synthetic curves (a convex curve
lies below its chords); PCHIP's error there was at most 1.8 % (tests/analysis/
test_crossovers.py measures both). What error remains is bounded by half the distance to the
linear interpolant's crossing, and each interval is widened to include it.

Crossing or not: with resamples, the test of analysis/crossing_test.py (intersection-union
tests of a sign change at the two ends of the overlap and over windows of it, false crossings
at most 5 % on ties, near-misses and one-sided gaps). Each change of sign along its chain of
disjoint significant stretches is a crossing, placed where the point estimate's gap best splits
into the two signs between those stretches; every one is listed. Without resamples, a crossing is the gap
going from beyond +slack to beyond -slack (rounding and interpolation error). The verdict:
  "crossing": the test finds at least one;
  "tied within noise": neither end nor any window shows either size better (without
  resamples: the gap stays within the slack);
  "no evidence of crossing": otherwise (one size is better somewhere, never significantly worse).
p_cross: the share of resamples in which the same test, read with the same critical values,
finds a crossing too (how often a repeat of the study would see it).

Coverage of the 95 % crossover interval on the synthetic family (tests/analysis/
test_coverage.py, 300 replications of a curve pair crossing once): 0.94 with one seed and
fid_std (width 0.90x the estimator's spread), 0.94 with three seeds with or without fid_std
(1.3-1.4x). Among the crossings the test finds on the ladder and the family of
benchmarks/crossing_power.py (docs/benchmarks.md): 88-100 % per setting.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from analysis.bootstrap import interval
from analysis.crossing_test import NAME as TEST_NAME
from analysis.crossing_test import locate, sign_test

GRID = 257  # grid points over the overlap in log cost: 0.4 % steps over a 100x cost range
ROUNDING = 1e-9  # relative: gaps this small are equal values written with rounding
INTERP_SHARE = 0.5  # share of |log c_pchip - log c_linear| counted as interpolation error
METHOD = ("curves: monotone cubic (PCHIP) interpolation in log sampling cost between evaluated "
          f"step counts; crossing test: {TEST_NAME}, false crossings at most 5%, the gap read "
          "against its interpolation error; each crossing placed where the gap best splits into "
          "the two signs; interval: 95% bootstrap percentile of the resamples' first crossing in "
          "each crossing's stretch of cost, widened by the interpolation error (half the distance "
          "to the linear interpolant's crossing); p_cross: share of resamples the same test "
          "finds crossing")


def overlap_grid(cost_a: np.ndarray, cost_b: np.ndarray, size: int = GRID) -> np.ndarray | None:
    """Log-cost grid over the overlap of the two cost ranges (None if they do not overlap)."""
    la, lb = np.log(cost_a), np.log(cost_b)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    if not hi > lo:
        return None
    return np.linspace(lo, hi, size)


def on_grid(cost: np.ndarray, vals: np.ndarray, grid: np.ndarray, smooth: bool = True
            ) -> np.ndarray:
    """(K, G) curve values on the log-cost grid: PCHIP (smooth) or straight lines."""
    order = np.argsort(cost)
    x, y = np.log(cost[order]), np.atleast_2d(vals)[:, order]
    if smooth and x.size > 2:
        return PchipInterpolator(x, y, axis=1, extrapolate=False)(grid)
    idx = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, x.size - 2)
    t = (grid - x[idx]) / (x[idx + 1] - x[idx])
    return y[:, idx] * (1.0 - t) + y[:, idx + 1] * t


def gap_on_grid(cost_s: np.ndarray, val_s: np.ndarray, cost_l: np.ndarray, val_l: np.ndarray,
                lower_is_better: bool, smooth: bool = True
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """(grid, gap (K, G)): how much the smaller size beats the larger (positive: small wins)."""
    grid = overlap_grid(cost_s, cost_l)
    if grid is None or cost_s.size < 2 or cost_l.size < 2:
        return None
    fs, fl = on_grid(cost_s, val_s, grid, smooth), on_grid(cost_l, val_l, grid, smooth)
    return grid, (fl - fs if lower_is_better else fs - fl)


def _zero(grid: np.ndarray, g0: np.ndarray, g1: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Log cost where the gap crosses zero between grid points j and j + 1 (linear there)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(g0 != g1, g0 / (g0 - g1), 0.0)
    return grid[j] + np.clip(t, 0.0, 1.0) * (grid[j + 1] - grid[j])


def crossings(grid: np.ndarray, gap: np.ndarray, tol: np.ndarray | float, locate: bool = True
              ) -> tuple[list[list[float]], np.ndarray]:
    """Crossings beyond the tolerance of every row: (costs per row, count per row).

    The gap's state is +1 above tol, -1 below -tol, 0 inside (a tie); a crossing is a change
    between +1 and -1 across any run of ties, placed at the first zero of the gap after the
    last point of the old state.
    """
    gap = np.atleast_2d(gap)
    tol = np.broadcast_to(np.asarray(tol, float), gap.shape[-1:])
    state = np.where(gap > tol, 1, np.where(gap < -tol, -1, 0))
    k, m = gap.shape
    # Forward-fill the last non-tie state: a tie run keeps the state before it.
    idx = np.where(state != 0, np.arange(m), -1)
    last = np.maximum.accumulate(idx, axis=1)
    filled = np.where(last >= 0, np.take_along_axis(state, np.maximum(last, 0), axis=1), 0)
    change = (filled[:, 1:] != filled[:, :-1]) & (filled[:, :-1] != 0)  # at j -> j + 1
    count = change.sum(axis=1)
    out: list[list[float]] = [[] for _ in range(k)]
    rows, cols = np.nonzero(change) if locate else ((), ())
    for r, c in zip(rows, cols):
        start = last[r, c]  # last grid point of the old state
        seg = gap[r, start:c + 2]
        flips = np.flatnonzero(np.sign(seg[1:]) != np.sign(seg[:-1]))
        j = start + (flips[0] if flips.size else c - start)
        out[r].append(float(np.exp(_zero(grid, gap[r, j], gap[r, j + 1], np.array(j)))))
    return out, count


def first_crossing(grid: np.ndarray, gap: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per row, the first sign change of the gap in [lo, hi] (log cost); NaN if none.

    The first, as the point estimate takes the first zero after the gap leaves its old side:
    taking the one nearest the point estimate instead pulled resamples towards it (crossover
    intervals 0.74x the estimator's spread, 91 % coverage; the first: 0.92x, 94.5 %).
    """
    flip = np.sign(gap[:, 1:]) * np.sign(gap[:, :-1]) < 0
    flip &= ((grid[1:] >= lo) & (grid[:-1] <= hi))[None, :]
    pos = _zero(grid, gap[:, :-1], gap[:, 1:], np.arange(grid.size - 1)[None, :])
    j = flip.argmax(axis=1)
    return np.where(flip.any(axis=1), np.exp(pos[np.arange(gap.shape[0]), j]), np.nan)


def compare_pair(cost_s: np.ndarray, val_s: np.ndarray, boot_s: np.ndarray,
                 cost_l: np.ndarray, val_l: np.ndarray, boot_l: np.ndarray,
                 lower_is_better: bool, noisy: bool) -> dict | None:
    """Every crossing of one pair with intervals, the verdict, p_cross, gaps at the ends."""
    point = gap_on_grid(cost_s, val_s, cost_l, val_l, lower_is_better)
    if point is None:
        return None
    grid, gap = point
    scale = ROUNDING * max(1.0, float(np.nanmax(np.abs(np.r_[val_s, val_l]))))
    linear = gap_on_grid(cost_s, val_s, cost_l, val_l, lower_is_better, smooth=False)[1][0]
    # Interpolation error is read as slack against the gap: two sizes on one curve, evaluated
    # at different costs, differ between their knots by interpolation alone. Each curve's error
    # is bounded by INTERP_SHARE of its distance to its chords (PCHIP's error on 20 + 10/c
    # sampled as the ladder's steps was 23 % of that distance).
    slack = scale + INTERP_SHARE * sum(
        np.abs(on_grid(c, v, grid)[0] - on_grid(c, v, grid, smooth=False)[0])
        for c, v in ((cost_s, val_s), (cost_l, val_l)))
    boot_gap, p_cross = None, np.nan
    if noisy:
        boot_gap = gap_on_grid(cost_s, boot_s, cost_l, boot_l, lower_is_better)[1]
        test = sign_test(gap[0], boot_gap, slack)
        found, prev = [], -1
        for (a, _, sign), (_, b, _) in zip(test["chain"], test["chain"][1:]):
            # Between two significant windows of opposite sign: the gap's best sign split.
            prev = locate(gap[0], max(a, prev + 1), b, sign)
            found.append(float(np.exp(_zero(grid, gap[0, prev], gap[0, prev + 1], np.array(prev)))))
        tied = not test["found"]
        p_cross = test["replicated"]
    else:  # no resamples: the gap beyond the slack alone (rounding, interpolation)
        found = crossings(grid, gap[0], slack)[0][0]
        tied = bool(np.all(np.abs(gap[0]) <= slack))
    listed = []
    bounds = np.r_[grid[0], [(np.log(a) + np.log(b)) / 2 for a, b in zip(found, found[1:])],
                   grid[-1]]
    for i, c in enumerate(found):
        lin_c = first_crossing(grid, linear[None, :], bounds[i], bounds[i + 1])[0]
        err = INTERP_SHARE * abs(np.log(c / lin_c)) if np.isfinite(lin_c) else 0.0
        lo, hi = (interval(first_crossing(grid, boot_gap, bounds[i], bounds[i + 1]))
                  if noisy else (np.nan, np.nan))
        if noisy:
            lo, hi = min(lo, c * np.exp(-err)), max(hi, c * np.exp(err))
        listed.append({"cost": c, "low": lo, "high": hi, "interp_error": c * (np.exp(err) - 1)})
    verdict = ("crossing" if listed else "tied within noise" if tied
               else "no evidence of crossing")
    first = listed[0] if listed else {"cost": np.nan, "low": np.nan, "high": np.nan,
                                      "interp_error": np.nan}
    out = {"crossover_cost": float(first["cost"]), "n_crossings": len(listed),
           "low": first["low"], "high": first["high"], "interp_error": first["interp_error"],
           "p_cross": p_cross,
           "verdict": verdict,
           "crossings": "; ".join(_fmt(x) for x in listed),
           "crossing_list": listed,
           "overlap_low": float(np.exp(grid[0])), "overlap_high": float(np.exp(grid[-1])),
           # which side the smaller size wins on, read at the low end of the overlap
           "smaller_wins_below": bool(gap[0, 0] > 0), "gaps": []}
    for j in (0, grid.size - 1):
        g_lo, g_hi = interval(boot_gap[:, j]) if noisy else (np.nan, np.nan)
        out["gaps"].append({"cost": float(np.exp(grid[j])), "gap": float(gap[0, j]),
                            "low": g_lo, "high": g_hi})
    return out


def _fmt(x: dict) -> str:
    if np.isfinite(x["low"]):
        return f"{x['cost']:.4g} [{x['low']:.4g}, {x['high']:.4g}]"
    return f"{x['cost']:.4g}"
