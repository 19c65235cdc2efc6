"""IsoFLOP profiles (Chinchilla's approach 2; Liang et al. 2024 for diffusion transformers): at each of several
training-compute levels, the quality of every size trained to that compute, a parabola in log size through those
points, and its minimum, the compute-optimal size at that level; then the power law N_opt = k C^a across levels.

Each size's value at a level is read off its own training curve (linear in log compute between its two nearest
budgets; a level outside a size's budgets leaves that size out), so the profiles need no extra training beyond the
milestones the ladder already has. The parabola is fitted to the lowest size and its two neighbours (over a wide
range of sizes a profile is no parabola). Intervals are percentile bootstraps: every point is redrawn with its own
noise (evaluation noise and seed spread, `std`), the curves re-read and the parabolas and the law refitted; each
level's interval is widened by the parabola's own error (how far its minimum moves with two more sizes in the fit),
so it covers the noise of every point behind it and the shape of the profile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.gof import goodness_of_fit

MIN_SIZES = 3  # a parabola needs three points; a minimum needs them to bracket it


def _at_level(pts: pd.DataFrame, values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(params, value at `level`) of every size whose budgets bracket the level (log-linear interpolation)."""
    params, out = [], []
    for p, idx in pts.groupby("params").indices.items():
        c = np.log(pts["train_flops"].to_numpy(float)[idx])
        order = np.argsort(c)
        c, v = c[order], values[idx][order]
        x = np.log(level)
        if len(c) and c[0] <= x <= c[-1]:
            params.append(float(p))
            out.append(float(np.interp(x, c, v)))
    return np.asarray(params), np.asarray(out)


WINDOW = 3  # sizes around the lowest one that the parabola is fitted to


def window(params: np.ndarray, values: np.ndarray, width: int = WINDOW) -> np.ndarray:
    """Indices (into params) of the `width` sizes nearest the lowest point, in order of size: the points a profile's
    parabola is fitted to (a parabola matches a profile near its minimum, not across a 100x range of sizes)."""
    order = np.argsort(params)
    j = int(np.argmin(values[order]))
    lo = max(0, min(j - width // 2, len(order) - width))
    return order[lo:lo + width]


def _vertex(params: np.ndarray, values: np.ndarray, window_size: int = WINDOW) -> float:
    """log N at the minimum of the parabola through (log N, value) of the window's sizes; NaN when it opens
    downward or has fewer than MIN_SIZES points."""
    if len(params) < MIN_SIZES:
        return np.nan
    a, b, _ = parabola(params, values, window_size)
    return float(-b / (2 * a)) if a > 0 else np.nan


def parabola(params: np.ndarray, values: np.ndarray, window_size: int = WINDOW) -> np.ndarray:
    """(a, b, c) of value = a u^2 + b u + c, u = log N, through the window's points."""
    idx = window(params, values, window_size)
    return np.polyfit(np.log(params[idx]), values[idx], 2)


def levels_of(pts: pd.DataFrame, n_levels: int = 5) -> np.ndarray:
    """Compute levels log-spaced over the range that at least MIN_SIZES sizes' training curves cover."""
    lo = pts.groupby("params")["train_flops"].min().sort_values()
    hi = pts.groupby("params")["train_flops"].max().sort_values(ascending=False)
    if len(lo) < MIN_SIZES:
        return np.array([])
    # The widest range inside which MIN_SIZES curves overlap: from the MIN_SIZES-th smallest start to the
    # MIN_SIZES-th largest end.
    start, end = float(lo.iloc[MIN_SIZES - 1]), float(hi.iloc[MIN_SIZES - 1])
    if not end > start:
        return np.array([])
    return np.exp(np.linspace(np.log(start), np.log(end), n_levels))


def isoflop(pts: pd.DataFrame, value: str = "fid", n_levels: int = 5, n_boot: int = 200, seed: int = 0) -> dict:
    """IsoFLOP profiles of training points (params, train_flops, `value`, optional `std`): per level the
    compute-optimal size with its interval, and the law N_opt = k C^a with intervals for a and k."""
    levels = levels_of(pts, n_levels)
    if len(levels) == 0:
        return {"skipped": True, "reason": f"fewer than {MIN_SIZES} sizes share a range of training compute: "
                                           "isoFLOP profiles need their curves to overlap"}
    y = pts[value].to_numpy(float)
    std = pts["std"].to_numpy(float) if "std" in pts else np.zeros(len(pts))
    std = np.nan_to_num(std, nan=0.0)
    rng = np.random.default_rng(seed)

    def solve(values: np.ndarray) -> np.ndarray:
        return np.array([_vertex(*_at_level(pts, values, c)) for c in levels])

    point = solve(y)
    boots = np.array([solve(y + rng.normal(0.0, std)) for _ in range(n_boot)])  # (B, K) log N_opt
    # The parabola's own error: how far the minimum moves when two more sizes enter the fit. It is added to the
    # bootstrap's spread (in quadrature, on log N), so an interval also covers the profile's departure from a
    # parabola where the noise alone is small.
    wide = np.array([_vertex(*_at_level(pts, y, c), window_size=WINDOW + 2) for c in levels])
    shape = np.nan_to_num(np.abs(wide - point), nan=0.0)
    sizes = [float(np.log(pts["params"].min())), float(np.log(pts["params"].max()))]
    rows, profiles = [], []
    for k, c in enumerate(levels):
        params, vals = _at_level(pts, y, c)
        fitted = set(window(params, vals).tolist()) if len(params) >= MIN_SIZES else set()
        profiles += [{"compute": float(c), "params": float(p), "value": float(v), "in_fit": i in fitted}
                     for i, (p, v) in enumerate(zip(params, vals))]
        b = boots[:, k]
        ok = np.isfinite(b)
        lo, hi = np.nan, np.nan
        if ok.mean() >= 0.5 and np.isfinite(point[k]):
            q_lo, q_hi = np.percentile(b[ok], [2.5, 97.5])
            lo = np.exp(point[k] - np.hypot(point[k] - q_lo, 1.96 * shape[k]))
            hi = np.exp(point[k] + np.hypot(q_hi - point[k], 1.96 * shape[k]))
        inside = np.isfinite(point[k]) and sizes[0] <= point[k] <= sizes[1]
        rows.append({"compute": float(c), "n_sizes": len(params), "n_opt": float(np.exp(point[k])),
                     "low": float(lo), "high": float(hi), "share_with_minimum": float(ok.mean()),
                     "shape_error_log": float(shape[k]), "inside_sizes": bool(inside)})
    table = pd.DataFrame(rows)
    # Each resample of the law also draws each level's shape error, so its interval carries it too.
    law = _law(levels, point, boots + rng.normal(0.0, 1.0, boots.shape) * shape, table["inside_sizes"].to_numpy(),
               float(pts["train_flops"].max()), table)
    return {"levels": table, "law": law, "value": value, "profiles": pd.DataFrame(profiles),
            "method": "isoFLOP profiles (Chinchilla approach 2): a parabola in log size per compute level; "
                      f"percentile bootstrap over every point's noise, {n_boot} resamples"}


def _law(levels: np.ndarray, point: np.ndarray, boots: np.ndarray, usable: np.ndarray, top: float,
         table: pd.DataFrame) -> dict:
    """N_opt = k C^a by least squares in log-log over the levels whose minimum lies inside the sizes, with the
    compute-optimal size at the largest training compute `top` (as the joint law quotes it) and a goodness-of-fit
    test of the line against each level's own interval (analysis.gof; sd = the interval's width in log / 3.92)."""
    if usable.sum() < 2:
        return {"skipped": True, "reason": f"{int(usable.sum())} level(s) with a minimum inside the trained sizes: "
                                           "the law needs >= 2"}
    x = np.log(levels[usable])

    def fit(logn: np.ndarray) -> tuple[float, float]:
        if not np.isfinite(logn).all():
            return np.nan, np.nan
        a, logk = np.polyfit(x, logn, 1)
        return float(a), float(logk)

    a, logk = fit(point[usable])
    draws = np.array([fit(b[usable]) for b in boots])
    ok = np.isfinite(draws).all(axis=1)
    at_top = lambda a_, lk: float(np.exp(lk + a_ * np.log(top)))  # noqa: E731
    out = {"params": {"a": {"value": a, "low": np.nan, "high": np.nan},
                      "k": {"value": float(np.exp(logk)), "low": np.nan, "high": np.nan}},
           "derived": {"n_opt_at_max_compute": {"value": at_top(a, logk), "low": np.nan, "high": np.nan}},
           "max_compute": top, "levels_used": int(usable.sum()), "share_resamples_used": float(ok.mean()),
           "skipped": False}
    if ok.mean() >= 0.5:
        d = draws[ok]
        # Percentiles of log k and log N_opt, then exp (a steep resample's log k is beyond exp's range).
        with np.errstate(over="ignore"):
            for name, col, back in (("a", d[:, 0], float), ("k", d[:, 1], np.exp),
                                    ("n_opt_at_max_compute", d[:, 1] + d[:, 0] * np.log(top), np.exp)):
                where = out["derived"] if name == "n_opt_at_max_compute" else out["params"]
                where[name].update(zip(("low", "high"), (float(back(q)) for q in np.percentile(col, [2.5, 97.5]))))
    lv = table[usable]
    sd_log = (np.log(lv["high"]) - np.log(lv["low"])).to_numpy(float) / 3.92
    n_opt = lv["n_opt"].to_numpy(float)
    out["gof"] = goodness_of_fit(lambda t: t[0] + t[1] * x, np.array([logk, a]), n_opt, n_opt * sd_log,
                                 [f"level {c:.3g} FLOPs" for c in lv["compute"]])
    out["a"], out["k"] = out["params"]["a"], out["params"]["k"]  # the short names the tests read
    return out
