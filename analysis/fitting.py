"""Fit a law: Huber loss on log residuals, L-BFGS-B from a grid of initialisations.

This is the procedure of Chinchilla's approach 3 as replicated by Besiroglu et al. (2024):
residual = LSE(terms) - log y, Huber loss (delta 1e-3) summed over points, L-BFGS-B
started from every point of a grid, the lowest optimum kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.laws import Law

HUBER_DELTA = 1e-3  # Besiroglu et al. 2024; small enough that outliers weigh like L1


@dataclass
class FitData:
    """Centred log data of one fit: u (V, n) = log x - shift_x, v (n,) = log y - shift_y."""

    u: np.ndarray
    v: np.ndarray
    shift_x: np.ndarray
    shift_y: float

    @classmethod
    def from_arrays(cls, xs: list[np.ndarray], y: np.ndarray) -> "FitData":
        """Centre log x and log y on their means (geometric means in natural units)."""
        lx = np.log(np.asarray(xs, dtype=float).reshape(len(xs), -1))
        ly = np.log(np.asarray(y, dtype=float))
        sx, sy = lx.mean(axis=1), float(ly.mean())
        return cls(u=lx - sx[:, None], v=ly - sy, shift_x=sx, shift_y=sy)


@dataclass
class FitResult:
    """The kept optimum of one fit, in internal and published parameters."""

    law: str
    theta: np.ndarray
    params: dict[str, float]
    loss: float
    n_points: int
    converged: bool
    # Distinct local optima found from the grid, best first: warm starts for the bootstrap.
    optima: list[np.ndarray] = field(default_factory=list)
    # Published parameters whose optimum sits on a search bound: "lower" or "upper".
    at_bound: dict[str, str] = field(default_factory=dict)


def bound_hits(law: Law, theta: np.ndarray, tol: float = 1e-6) -> dict[str, str]:
    """Published parameters whose internal value sits on one of the law's bounds.

    Such a parameter is not determined by the points (an exponent at its upper bound is a drop too
    steep for the law, a floor at its lower bound is no floor resolved); its interval is the bound's.
    """
    hits = {}
    for name, value, (low, high) in zip(law.params, theta, law.bounds):
        if low is not None and value <= low + tol:
            hits[name] = "lower"
        elif high is not None and value >= high - tol:
            hits[name] = "upper"
    return hits


def huber_objective(theta: np.ndarray, law: Law, data: FitData, weights: np.ndarray,
                    delta: float) -> tuple[float, np.ndarray]:
    """Weighted sum of Huber losses of log residuals, divided by delta, and its gradient."""
    pred, dpred = law.log_predict(theta, data.u)
    r = pred - data.v
    small = np.abs(r) <= delta
    # Divided by delta so the objective is O(sum |r|): L-BFGS-B's tolerances are absolute.
    loss = np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta)
    dr = np.where(small, r / delta, np.sign(r))
    return float(weights @ loss), dpred @ (weights * dr)


# Coarse runs from every grid point find the basins; tight runs polish the best few.
# With delta 1e-3 the loss is nearly L1 and L-BFGS-B needs many small steps to finish,
# which is only worth paying for the candidates that can win.
_COARSE = {"maxiter": 20}  # enough to rank basins (same optimum as 100 on our tests)
_TIGHT = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10}


def _minimize(theta0: np.ndarray, law: Law, data: FitData, weights: np.ndarray,
              delta: float, options: dict):
    return minimize(huber_objective, theta0, args=(law, data, weights, delta), jac=True,
                    method="L-BFGS-B", bounds=law.bounds, options=options)


def _distinct(thetas: list[np.ndarray], keep: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for theta in thetas:
        if all(np.max(np.abs(theta - d)) > 1e-3 for d in out):
            out.append(theta)
        if len(out) == keep:
            break
    return out


def optimize(law: Law, data: FitData, inits: np.ndarray, weights: np.ndarray | None = None,
             delta: float = HUBER_DELTA, keep: int = 3, limit_threads: bool = True
             ) -> tuple[np.ndarray, float, bool, list[np.ndarray]]:
    """Run L-BFGS-B from each init; return the best theta, its loss, success, distinct optima."""
    w = np.ones(data.v.shape[0]) if weights is None else weights
    inits = np.atleast_2d(inits)
    if not limit_threads:  # the caller already holds the limit (bootstrap loops)
        return _optimize(law, data, inits, w, delta, keep)
    # BLAS threads on 5-parameter problems only contend for the cores: 10-50x slower.
    with threadpool_limits(limits=1):
        return _optimize(law, data, inits, w, delta, keep)


def _optimize(law: Law, data: FitData, inits: np.ndarray, w: np.ndarray, delta: float,
              keep: int) -> tuple[np.ndarray, float, bool, list[np.ndarray]]:
    if len(inits) > keep:
        coarse = [_minimize(t, law, data, w, delta, _COARSE) for t in inits]
        coarse = sorted((r for r in coarse if np.isfinite(r.fun)), key=lambda r: r.fun)
        inits = np.array(_distinct([r.x for r in coarse], keep) or inits[:keep])
    found = [_minimize(t, law, data, w, delta, _TIGHT) for t in inits]
    found = sorted((r for r in found if np.isfinite(r.fun)), key=lambda r: r.fun)
    if not found:
        raise ValueError(f"the {law.name} fit found no finite optimum: check the data for "
                         "zeros or infinities")
    best = found[0]
    return best.x, float(best.fun), bool(best.success), _distinct([r.x for r in found], keep)


def fit_law(law: Law, xs: list[np.ndarray], y: np.ndarray, delta: float = HUBER_DELTA,
            inits: np.ndarray | None = None) -> tuple[FitResult, FitData]:
    """Fit `law` to points (xs, y) from the law's grid of initialisations."""
    data = FitData.from_arrays(xs, y)
    grid = law.grid() if inits is None else inits
    theta, loss, ok, optima = optimize(law, data, grid, delta=delta)
    result = FitResult(law=law.name, theta=theta,
                       params=law.to_public(theta, data.shift_x, data.shift_y),
                       loss=loss, n_points=int(data.v.shape[0]), converged=ok, optima=optima,
                       at_bound=bound_hits(law, theta))
    return result, data
