"""Goodness of fit: does a fitted law pass through its points within their noise?

One test serves every law of the package (the training-compute laws of analysis/training.py, any
`study fit`, the joint law behind `study predict`, `plan` and `recommend`). A wide interval says "the
points do not pin this parameter down"; a failed test says "this law is the wrong model for these
points", and nothing derived from the law is then quoted as a value.

The null hypothesis: log y_i = f(x_i; theta) + e_i with e_i independent, normal, of standard deviation
s_i = sd_i / y_i, sd_i being the point's own noise in y's units (see `point_noise`): the evaluation
noise of its FID (fid_std, a bootstrap over the generated samples, of the mean over seeds) and, where
points average several training seeds, the spread between seeds beyond that evaluation noise. The null
does not include the variation between checkpoints of one run beyond their evaluation noise (the state
of the learning rate and the EMA when a checkpoint is taken): with one seed, "does not fit" means the law
misses the points by more than their evaluation noise explains, which is a wrong law or checkpoints
noisier than their evaluation; train 2+ seeds to put the training noise into the null.

Two statistics:
- chi-square: the least sum ((log y_i - f_i) / s_i)^2 the law reaches (weighted least squares started
  from the fit's estimate), on dof = n - k, reported per degree of freedom (`gof_statistic`) with
  p = P(chi2_dof >= chi-square). Not the chi-square at a robust (Huber, near L1) estimate: such an
  estimate passes through some points and leaves larger residuals at the others than least squares
  would, and on synthetic power laws with their true noise its chi-square said "does not fit" in 14 %
  (4 points) to 19 % (8 points) of replicates at a 5 % level. The worst residual named is the quoted
  estimate's (the law a reader sees).
- leave one point out, for laws with few points (n <= LOO_MAX): each point predicted by the law
  refitted (weighted least squares) to the other points, z_i = (log y_i - f_-i(x_i)) /
  sqrt(s_i^2 + var f_-i(x_i)) (the prediction's variance by the delta method), p = n P(|Z| >= max |z|)
  (Bonferroni over the points). It catches one outlier that the chi-square dilutes over many points.
`gof_p` = min(1, 2 min(p_chi2, p_loo)) (Bonferroni over the two), so the rate of false "does not fit"
stays at most LEVEL; benchmarks/gof_level.py measures it on synthetic power laws.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.stats import chi2, norm

LEVEL = 0.05  # a law "does not fit" when gof_p < LEVEL
LOO_MAX = 12  # points up to which the leave-one-out check runs (n refits each)
YES, NO, UNTESTED = "yes", "no", "untested"
DOES_NOT_FIT = "the law does not fit these points"

# A law's log predictions at all n points for parameters theta.
LogModel = Callable[[np.ndarray], np.ndarray]


def point_noise(pts: pd.DataFrame, value: str = "fid") -> np.ndarray:
    """Each point's noise sd in y's units: evaluation noise of its seed mean (`std`) plus the training-seed
    variance (pooled over the points with 2+ seeds, beyond their evaluation noise) over its seed count."""
    std = pd.to_numeric(pts.get("std", pd.Series(np.nan, index=pts.index)), errors="coerce").to_numpy(float)
    k = pd.to_numeric(pts.get("n_seeds", pd.Series(1, index=pts.index)), errors="coerce").fillna(1).to_numpy(float)
    seed_sd = pd.to_numeric(pts.get("seed_sd", pd.Series(np.nan, index=pts.index)),
                            errors="coerce").to_numpy(float)
    many = (k >= 2) & np.isfinite(seed_sd)
    seed_var = 0.0
    if many.any():
        # Between-seed variance of one run: the seeds' spread less one evaluation's variance (std is of the
        # mean of k evaluations: one evaluation's variance is k std^2), pooled with k - 1 weights.
        eval_one = np.where(np.isfinite(std), k * std ** 2, 0.0)
        w = k[many] - 1
        seed_var = max(float(np.sum(w * (seed_sd[many] ** 2 - eval_one[many])) / np.sum(w)), 0.0)
    return np.sqrt(std ** 2 + seed_var / np.maximum(k, 1))


def _jacobian(model: LogModel, theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d theta (n, P) by central differences: every law here is a few log-sum-exps."""
    cols = []
    for j in range(len(theta)):
        h = eps * max(1.0, abs(theta[j]))
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        cols.append((model(up) - model(dn)) / (2 * h))
    return np.stack(cols, axis=1)


def _loo(model: LogModel, theta: np.ndarray, ly: np.ndarray, s: np.ndarray,
         bounds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Standardised leave-one-out prediction errors z_i (NaN where the refit fails)."""
    n, z = len(ly), np.full(len(ly), np.nan)
    lo, hi = bounds
    t0 = np.clip(theta, lo, hi)
    for i in range(n):
        keep = np.arange(n) != i
        try:
            res = least_squares(lambda t: ((model(t) - ly) / s)[keep], t0, bounds=(lo, hi), method="trf")
        except ValueError:
            continue
        J = _jacobian(model, res.x)
        jw = J[keep] / s[keep, None]
        cov = np.linalg.pinv(jw.T @ jw, rcond=1e-10)
        var = float(J[i] @ cov @ J[i])
        z[i] = (ly[i] - model(res.x)[i]) / math.sqrt(s[i] ** 2 + max(var, 0.0))
    return z


def _bounds(bounds, k: int) -> tuple[np.ndarray, np.ndarray]:
    if bounds is None:
        return np.full(k, -np.inf), np.full(k, np.inf)
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds], float)
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds], float)
    return lo, hi


def goodness_of_fit(model: LogModel, theta: np.ndarray, y: np.ndarray, sd: np.ndarray,
                    labels: list[str] | None = None, bounds=None, level: float = LEVEL,
                    loo_max: int = LOO_MAX) -> dict:
    """Test a fitted law against its points' noise (module docstring): y and sd in natural units,
    model(theta) the law's log predictions; bounds per parameter ((low, high), ...), None for none.
    Returns gof_statistic (chi-square per dof), gof_p, fits (yes/no/untested), the worst point, the reason."""
    theta = np.asarray(theta, float)
    y, sd = np.asarray(y, float), np.asarray(sd, float)
    n, k = len(y), len(theta)
    labels = labels or [f"point {i + 1}" for i in range(n)]
    out = {"test": "chi-square" + (" and leave-one-out" if n <= loo_max else ""), "gof_statistic": np.nan,
           "gof_p": np.nan, "p_chi2": np.nan, "p_loo": np.nan, "chi2": np.nan, "dof": n - k,
           "fits": UNTESTED, "worst": "", "worst_z": np.nan, "level": level, "reason": ""}
    if n <= k:
        out["reason"] = f"{n} points for {k} parameters: no degree of freedom left to test the law"
        return out
    if not (np.all(np.isfinite(sd)) and np.all(sd > 0)):
        out["reason"] = "the points carry no noise estimate (std) to test the law against"
        return out
    ly, s = np.log(y), sd / y
    pred = model(theta)
    r = (ly - pred) / s
    lo, hi = _bounds(bounds, k)
    # The least chi-square the law reaches, from the estimate (weighted least squares).
    best = least_squares(lambda t: (model(t) - ly) / s, np.clip(theta, lo, hi), bounds=(lo, hi))
    c2 = float(min(2 * best.cost, r @ r))
    out.update(chi2=c2, gof_statistic=c2 / (n - k), p_chi2=float(chi2.sf(c2, n - k)))
    worst = int(np.argmax(np.abs(r)))
    z = _loo(model, best.x, ly, s, (lo, hi)) if n <= loo_max else np.full(n, np.nan)
    loo_worst = False
    if np.isfinite(z).any():
        j = int(np.nanargmax(np.abs(z)))
        out["p_loo"] = float(min(1.0, n * 2 * norm.sf(abs(z[j]))))
        out["gof_p"] = float(min(1.0, 2 * min(out["p_chi2"], out["p_loo"])))
        if out["p_loo"] < out["p_chi2"]:  # the outlier the leave-one-out singles out
            worst, loo_worst = j, True
    else:
        out["gof_p"] = out["p_chi2"]
    # Named in y's units, as a reader sees the point and the curve: how many noise sds apart.
    fitted = math.exp(pred[worst])
    if loo_worst:  # a point the full fit bends to: near the full law, far from the law fitted without it
        out["worst_z"] = float(z[worst])
        out["worst"] = (f"{labels[worst]}: {y[worst]:.3g} (the law through every point: {fitted:.3g}), "
                        f"{abs(z[worst]):.1f} sds (its noise and the fit's) from the law fitted without it")
    else:
        out["worst_z"] = float(r[worst])
        out["worst"] = (f"{labels[worst]}: {y[worst]:.3g} against the law's {fitted:.3g}, "
                        f"{abs(y[worst] - fitted) / sd[worst]:.1f} times its noise sd {sd[worst]:.2g}")
    out["fits"] = YES if out["gof_p"] >= level else NO
    return out


def fits(fit: dict) -> bool:
    """False only where the fit was tested and failed: a law that fits or could not be tested is used."""
    return (fit.get("gof") or {}).get("fits") != NO


def not_fit_text(fit: dict) -> str:
    """'the law does not fit these points (...; worst residual: ...)' for a fit whose test failed."""
    g = fit.get("gof") or {}
    return (f"{DOES_NOT_FIT} (chi-square/dof {g.get('gof_statistic', float('nan')):.3g}, p = "
            f"{g.get('gof_p', float('nan')):.2g}; worst residual: {g.get('worst', '')})")


def gof_summary(fit: dict) -> str:
    """One clause on the test of a fit: that it fits (chi-square/dof, p), that it does not, or why untested."""
    g = fit.get("gof") or {}
    if g.get("fits") == NO:
        return not_fit_text(fit)
    if g.get("fits") == YES:
        return f"the law fits its points (chi-square/dof {g['gof_statistic']:.3g}, p = {g['gof_p']:.2g})"
    return f"goodness of fit not tested ({g.get('reason') or 'no test recorded'})"
