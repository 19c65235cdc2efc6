"""Confidence intervals of a fit by a residual (default) or point bootstrap (percentile intervals)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.batched import refit_batch
from analysis.fitting import HUBER_DELTA, fit_law, optimize
from analysis.gof import goodness_of_fit
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
                  progress: bool = False, method: str = "residual",
                  inits: np.ndarray | None = None, sd: np.ndarray | None = None,
                  labels: list[str] | None = None) -> dict:
    """Fit `law`, refit on n_boot resamples, return values with percentile intervals.

    sd: each point's noise in y's units, for the goodness-of-fit test (analysis.gof; without it the
    test is recorded as untested); labels name the points in its worst residual.

    method "residual" (the default): each resample keeps every x and adds to the fitted log y
    the fit's log residuals drawn with replacement, centred, scaled by sqrt(n / (n - P)) (a fit
    of P parameters leaves residuals smaller than the noise) and by sqrt(dof / chi2_dof) per
    resample (Student-t mixing: a noise level read from n - P degrees of freedom, 5 for 8
    points of a power law, is itself uncertain). method "points": each resample draws the
    points with replacement.
    Chosen by coverage on synthetic power laws (8 points over 3 decades, 2 % noise, 60
    replications, tests/analysis/test_coverage.py): the points bootstrap covered alpha in 98 %
    with intervals 1.6x wider than 3.92 x the estimator's real spread (a resample that drops
    the smallest x cannot pin the curvature); the residual bootstrap covered 95 % at 1.14x.
    Without the t mixing it covered 85 %.
    Both refit from the full-data optimum with the batched solver (analysis.batched).
    """
    if method not in ("residual", "points"):
        raise ValueError(f"unknown bootstrap method {method!r}: use 'residual' or 'points'")
    derived = derived or {}
    fit, data = fit_law(law, xs, y, delta=delta, inits=inits)
    n, n_par = fit.n_points, len(law.params)
    rng = np.random.default_rng(seed)
    names = list(law.params) + list(derived)
    samples = np.full((n_boot, len(names)), np.nan)
    targets = None
    if method == "points":
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        # Fewer distinct points than parameters cannot pin the law down: skipped, counted.
        rows = np.flatnonzero(np.count_nonzero(counts, axis=1) >= n_par)
    else:
        pred, _ = law.log_predict(fit.theta, data.u)
        resid = data.v - pred
        dof = max(n - n_par, 1)
        resid = (resid - resid.mean()) * np.sqrt(n / dof)
        # Student-t mixing: the noise level read from n - P residual degrees of freedom is
        # itself uncertain; each resample scales it by sqrt(dof / chi2_dof).
        kappa = np.sqrt(dof / rng.chisquare(dof, size=n_boot))
        targets = pred[None, :] + kappa[:, None] * resid[rng.integers(0, n, size=(n_boot, n))]
        counts = np.ones((n_boot, n))
        rows = np.arange(n_boot)
    with threadpool_limits(limits=1):  # BLAS threads only contend on these small arrays
        thetas, settled = (refit_batch(law, data, fit.theta, counts[rows], delta,
                                       v=None if targets is None else targets[rows])
                           if rows.size else (np.empty((0, n_par)), np.empty(0, dtype=bool)))
        # Rows where the batched solver stalled get the point fit's L-BFGS-B from there.
        stalled = [i for i in range(rows.size) if not settled[i]]
        for i in track(stalled, len(stalled), f"bootstrap {law.name}", progress):
            row_data = data if targets is None else replace(data, v=targets[rows[i]])
            thetas[i], _, _, _ = optimize(law, row_data, thetas[i], weights=counts[rows[i]],
                                          delta=delta, limit_threads=False)
    for i, k in enumerate(rows):
        pub = law.to_public(thetas[i], data.shift_x, data.shift_y)
        samples[k] = [pub[p] for p in law.params] + [_safe(f, pub) for f in derived.values()]
    valid = int(np.isfinite(samples[:, 0]).sum())
    params = {p: _entry(fit.params[p], samples[:, i], level) for i, p in enumerate(law.params)}
    values = {name: _safe(f, fit.params) for name, f in derived.items()}
    out_derived = {name: _entry(values[name], samples[:, n_par + i], level)
                   for i, name in enumerate(derived)}
    gof = goodness_of_fit(lambda t: law.log_predict(t, data.u)[0] + data.shift_y, fit.theta, y,
                          np.full(n, np.nan) if sd is None else sd, labels, law.bounds)
    return {"law": law.name, "formula": law.formula, "params": params, "derived": out_derived,
            "n_points": n, "loss": fit.loss, "converged": fit.converged, "at_bound": fit.at_bound,
            "gof": gof,
            "bootstrap": {"resamples": n_boot, "valid": valid, "level": level, "seed": seed,
                          "method": method},
            "samples": {name: samples[:, i] for i, name in enumerate(names)}}


def _safe(f: Derived, params: dict[str, float]) -> float:
    """A derived quantity, NaN where it is undefined for these parameters (a resample with B = 0, say):
    intervals are read from the finite samples."""
    with np.errstate(all="ignore"):
        try:
            return float(f(params))
        except (ZeroDivisionError, OverflowError, ValueError):
            return float("nan")
