"""Confidence intervals of a fit by bootstrap over points (percentile intervals)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.batched import refit_batch
from analysis.fitting import HUBER_DELTA, fit_law, optimize
from analysis.laws import Law
from analysis.progress import track

Derived = Callable[[dict[str, float]], float]
LEVEL = 0.95  # two-sided percentile interval


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaNs when there are none."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _entry(value: float, samples: np.ndarray, level: float) -> dict[str, float]:
    lo, hi = interval(samples, level)
    return {"value": float(value), "low": lo, "high": hi}


def bootstrap_fit(law: Law, xs: list[np.ndarray], y: np.ndarray, n_boot: int = 200,
                  seed: int = 0, derived: dict[str, Derived] | None = None,
                  level: float = LEVEL, delta: float = HUBER_DELTA,
                  progress: bool = False) -> dict:
    """Fit `law`, refit on n_boot resamples of the points, return values with intervals.

    Each resample is a vector of counts (the weighted objective equals the fit on the
    duplicated points), refitted from the full-data optimum by the batched solver.
    """
    derived = derived or {}
    fit, data = fit_law(law, xs, y, delta=delta)
    n = fit.n_points
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    names = list(law.params) + list(derived)
    samples = np.full((n_boot, len(names)), np.nan)
    # Fewer distinct points than parameters cannot pin the law down: skipped, counted.
    ok = np.count_nonzero(counts, axis=1) >= len(law.params)
    rows = np.flatnonzero(ok)
    with threadpool_limits(limits=1):  # BLAS threads only contend on these small arrays
        thetas, settled = (refit_batch(law, data, fit.theta, counts[rows], delta) if rows.size
                           else (np.empty((0, len(law.params))), np.empty(0, dtype=bool)))
        # Rows where the batched solver stalled get the point fit's L-BFGS-B from there.
        stalled = [i for i in range(rows.size) if not settled[i]]
        for i in track(stalled, len(stalled), f"bootstrap {law.name}", progress):
            thetas[i], _, _, _ = optimize(law, data, thetas[i], weights=counts[rows[i]],
                                          delta=delta, limit_threads=False)
    for i, k in enumerate(rows):
        pub = law.to_public(thetas[i], data.shift_x, data.shift_y)
        samples[k] = [pub[p] for p in law.params] + [_safe(f, pub) for f in derived.values()]
    valid = int(np.isfinite(samples[:, 0]).sum())
    params = {p: _entry(fit.params[p], samples[:, i], level) for i, p in enumerate(law.params)}
    values = {name: _safe(f, fit.params) for name, f in derived.items()}
    out_derived = {name: _entry(values[name], samples[:, len(law.params) + i], level)
                   for i, name in enumerate(derived)}
    return {"law": law.name, "formula": law.formula, "params": params, "derived": out_derived,
            "n_points": n, "loss": fit.loss, "converged": fit.converged, "at_bound": fit.at_bound,
            "bootstrap": {"resamples": n_boot, "valid": valid, "level": level, "seed": seed},
            "samples": {name: samples[:, i] for i, name in enumerate(names)}}


def _safe(f: Derived, params: dict[str, float]) -> float:
    with np.errstate(all="ignore"):
        return float(f(params))
