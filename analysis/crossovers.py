"""Crossovers between two sizes' quality-vs-sampling-cost curves, with ties and a verdict.

Each curve is a monotone cubic (PCHIP) through its evaluated points in log cost, read on a
fine grid over the overlap of the two cost ranges. The straight lines between evaluated step
counts used before put crossings 2-11 % too high on noise-free synthetic curves (a convex curve
lies below its chords); PCHIP's error there was at most 1.8 % (tests/analysis/
test_crossovers.py measures both). What error remains is bounded by half the distance to the
linear interpolant's crossing, and each interval is widened to include it.

Ties: the gap between the curves is read against a tolerance, the half-width of a simultaneous
95 % bootstrap band of the gap (no resamples: rounding only) plus the interpolation error of
both curves. A crossing is the gap going from
beyond +tolerance to beyond -tolerance (or back); a gap that stays inside the band is a tie,
never a crossing. Every such crossing is listed. The verdict of a pair:
  "crossing": at least one crossing beyond noise (the band excludes zero on both sides);
  "tied within noise": the band includes zero over the whole overlap;
  "no evidence of crossing": otherwise (one size is better somewhere, never significantly worse).
p_cross: the share of resamples whose own gap crosses beyond the same tolerance (how often a
repeat of the study would see the crossing). Everything is vectorised over resamples (rows).

Coverage of the 95 % crossover interval on the synthetic family (tests/analysis/
test_coverage.py, 300 replications of a curve pair crossing once): 0.94 with one seed and
fid_std (width 0.90x the estimator's spread), 0.94 with three seeds with or without fid_std
(1.3-1.4x).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from analysis.bootstrap import LEVEL, interval

GRID = 257  # grid points over the overlap in log cost: 0.4 % steps over a 100x cost range
ROUNDING = 1e-9  # relative: gaps this small are equal values written with rounding
INTERP_SHARE = 0.5  # share of |log c_pchip - log c_linear| counted as interpolation error
METHOD = ("curves: monotone cubic (PCHIP) interpolation in log sampling cost between evaluated "
          "step counts; crossing: the gap between two sizes goes from beyond +tolerance to beyond "
          "-tolerance, tolerance = half-width of a simultaneous 95% bootstrap band of the gap "
          "plus interpolation error (ties inside it are not crossings); interval: 95% bootstrap "
          "percentile of the resamples' first crossing in each found crossing's stretch of cost, "
          "widened by the interpolation error (half the distance to the linear interpolant's "
          "crossing); p_cross: share of resamples crossing beyond the tolerance")


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


def band_halfwidth(gap: np.ndarray, boot_gap: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Half-width per grid point of a simultaneous `level` band of the gap (sup-t bootstrap)."""
    sd = boot_gap.std(axis=0)
    safe = np.where(sd > 0, sd, np.inf)
    q = np.quantile(np.max(np.abs(boot_gap - gap) / safe, axis=1), level)
    return q * sd


def compare_pair(cost_s: np.ndarray, val_s: np.ndarray, boot_s: np.ndarray,
                 cost_l: np.ndarray, val_l: np.ndarray, boot_l: np.ndarray,
                 lower_is_better: bool, noisy: bool) -> dict | None:
    """Every crossing of one pair with intervals, the verdict, p_cross, gaps at the ends."""
    point = gap_on_grid(cost_s, val_s, cost_l, val_l, lower_is_better)
    if point is None:
        return None
    grid, gap = point
    scale = ROUNDING * max(1.0, float(np.nanmax(np.abs(np.r_[val_s, val_l]))))
    boot_gap = None
    tol = np.full(grid.size, scale)
    if noisy:
        boot_gap = gap_on_grid(cost_s, boot_s, cost_l, boot_l, lower_is_better)[1]
        tol = tol + band_halfwidth(gap[0], boot_gap)
    linear = gap_on_grid(cost_s, val_s, cost_l, val_l, lower_is_better, smooth=False)[1][0]
    # Interpolation error enters the tie tolerance too: two sizes on one curve, evaluated at
    # different costs, differ between their knots by interpolation alone. Each curve's error
    # is bounded by INTERP_SHARE of its distance to its chords (PCHIP's error on 20 + 10/c
    # sampled as the ladder's steps was 23 % of that distance).
    tol = tol + INTERP_SHARE * sum(
        np.abs(on_grid(c, v, grid)[0] - on_grid(c, v, grid, smooth=False)[0])
        for c, v in ((cost_s, val_s), (cost_l, val_l)))
    found, _ = crossings(grid, gap[0], tol)
    found = found[0]
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
    inside = bool(np.all(np.abs(gap[0]) <= tol))
    verdict = ("crossing" if listed else "tied within noise" if inside
               else "no evidence of crossing")
    first = listed[0] if listed else {"cost": np.nan, "low": np.nan, "high": np.nan,
                                      "interp_error": np.nan}
    out = {"crossover_cost": float(first["cost"]), "n_crossings": len(listed),
           "low": first["low"], "high": first["high"], "interp_error": first["interp_error"],
           "p_cross": (float((crossings(grid, boot_gap, tol, locate=False)[1] > 0).mean())
                       if noisy else np.nan),
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
