"""Bootstrap refits of all resamples at once: a batched Levenberg-Marquardt on the same
Huber objective, with iteratively reweighted least squares (IRLS) weights.

One scipy L-BFGS-B call costs ~80 us of overhead per evaluation and a near-L1 Huber loss
takes ~100 evaluations, so 200 resamples one by one take seconds per law. Here every
iteration updates all resamples with a few array operations. IRLS majorises the Huber
loss (weight psi(r)/r), LM damping keeps each step a descent step, and a step is only
accepted where the true objective decreases, so each resample ends at a local optimum
of exactly the objective L-BFGS-B minimises; starting from the full-data optimum, which
is near every resample's optimum, it lands where a warm-started L-BFGS-B would.
"""

from __future__ import annotations

import numpy as np

from analysis.fitting import FitData
from analysis.laws import Law


def huber_batch(law: Law, data: FitData, theta: np.ndarray, counts: np.ndarray,
                delta: float, v: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objective (K,) as in fitting.huber_objective, residuals (K, n), Jacobians (K, P, n).

    v: per-row targets (K, n) in place of data.v (a residual bootstrap's resampled y)."""
    pred, jac = law.log_predict(theta, data.u)
    r = pred - (data.v if v is None else v)
    a = np.abs(r)
    loss = np.where(a <= delta, 0.5 * r * r / delta, a - 0.5 * delta)
    return (counts * loss).sum(axis=1), r, jac


def refit_batch(law: Law, data: FitData, theta0: np.ndarray, counts: np.ndarray,
                delta: float, max_iter: int = 400, tol: float = 1e-12,
                v: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the weighted Huber objective for every row of counts (and of v, per-row
    targets, when given): thetas (K, P), and whether each row stopped on a negligible gain
    (False: stalled, worth a polish)."""
    k, p = counts.shape[0], len(law.theta_names)
    lo = np.array([-np.inf if b[0] is None else b[0] for b in law.bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in law.bounds])
    theta = np.tile(np.asarray(theta0, float), (k, 1))
    f, r, jac = huber_batch(law, data, theta, counts, delta, v)
    lam = np.full(k, 1e-3)
    settled = np.zeros(k, dtype=bool)
    idx = np.arange(k)  # rows still iterating
    for _ in range(max_iter):
        c, ri, ji = counts[idx], r[idx], jac[idx]
        # IRLS weight psi(r)/r of the delta-scaled Huber loss: 1/delta inside, 1/|r| outside.
        w = c / np.maximum(np.abs(ri), delta)
        jw = ji * w[:, None, :]
        g = (jw * ri[:, None, :]).sum(axis=-1)
        h = jw @ ji.swapaxes(1, 2)
        diag = np.einsum("kpp->kp", h)
        damped = h + (lam[idx, None] * diag + 1e-12)[:, :, None] * np.eye(p)
        trial = np.clip(theta[idx] - np.linalg.solve(damped, g[:, :, None])[:, :, 0], lo, hi)
        f_new, r_new, jac_new = huber_batch(law, data, trial, c, delta,
                                            None if v is None else v[idx])
        better = f_new < f[idx]
        gain = f[idx] - f_new
        up = idx[better]
        theta[up], r[up], jac[up], f[up] = trial[better], r_new[better], jac_new[better], \
            f_new[better]
        lam[idx] = np.where(better, lam[idx] / 3.0, lam[idx] * 4.0)
        # Done: a negligible accepted gain, or damping so large that no step helps any more.
        small = better & (gain <= tol * np.maximum(f[idx], 1.0))
        settled[idx[small]] = True
        idx = idx[~(small | (lam[idx] > 1e12))]
        if idx.size == 0:
            break
    return theta, settled
