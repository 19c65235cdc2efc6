"""The library of scaling laws: each a named law with its variables, parameters and bounds.

Every law is written in log space, log y = LSE(terms), the form of Chinchilla's approach 3
as replicated by Besiroglu et al. (2024): fitting log y keeps points of very different
magnitude equally weighted and LSE keeps E, A, B positive without constraints.

The optimiser works on internal parameters `theta` after centring each log variable
(u = log x - shift_x) and log y (log y - shift_y). Centring changes nothing about the
optimum, but makes the grid of initialisations and the bounds independent of units
(FLOPs near 1e20 and FIDs near 20 need the same grid) and the problem well conditioned.
`to_public` maps theta back to the published parameters (E, A, alpha, ...).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

# A law's log prediction: (theta (..., P), u (V, n)) -> (log y_hat (..., n), d/d theta (..., P, n)).
LogPredict = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# Maps (theta, shift_x (V,), shift_y) to the published parameters.
ToPublic = Callable[[np.ndarray, np.ndarray, float], dict[str, float]]


@dataclass(frozen=True)
class Law:
    """A named law: variables, published and internal parameters, bounds, init grid."""

    name: str
    formula: str
    variables: tuple[str, ...]
    params: tuple[str, ...]
    theta_names: tuple[str, ...]
    # Bounds on the internal (centred, log) parameters; exponents stay non-negative.
    bounds: tuple[tuple[float | None, float | None], ...]
    log_predict: LogPredict
    to_public: ToPublic
    init_grid: tuple[tuple[float, ...], ...]

    def grid(self) -> np.ndarray:
        """All initial theta vectors of the grid, shape (G, P)."""
        return np.array(list(itertools.product(*self.init_grid)), dtype=float)

    def predict(self, public: dict[str, float], xs: dict[str, np.ndarray]) -> np.ndarray:
        """Evaluate the law in natural units from published parameters."""
        return PREDICT[self.name](public, xs)


def _lse_terms(terms: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log-sum-exp of the terms and the softmax weights (its gradient)."""
    top = np.maximum.reduce(terms)
    ex = [np.exp(t - top) for t in terms]
    total = sum(ex)
    return top + np.log(total), [e / total for e in ex]


# Log predictions broadcast over leading axes of theta, so one call serves a single fit
# (theta (P,)) or a batch of bootstrap refits (theta (K, P)): pred (..., n), grad (..., P, n).
def _split(theta: np.ndarray) -> list[np.ndarray]:
    return [theta[..., i, None] for i in range(theta.shape[-1])]


def _power_log(theta: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # theta = (e, a, alpha); log y = LSE(e, a - alpha u)
    e, a, alpha = _split(theta)
    x = u[0]
    out, (w0, w1) = _lse_terms([e + 0.0 * x, a - alpha * x])
    return out, np.stack([w0, w1, -w1 * x], axis=-2)


def _power_public(theta: np.ndarray, sx: np.ndarray, sy: float) -> dict[str, float]:
    e, a, alpha = theta
    return {"E": float(np.exp(e + sy)), "A": float(np.exp(a + sy + alpha * sx[0])),
            "alpha": float(alpha)}


def _chin_log(theta: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # theta = (e, a, b, alpha, beta); log y = LSE(a - alpha uN, b - beta uD, e)
    e, a, b, alpha, beta = _split(theta)
    n, d = u
    out, (w0, w1, w2) = _lse_terms([e + 0.0 * n, a - alpha * n, b - beta * d])
    return out, np.stack([w0, w1, w2, -w1 * n, -w2 * d], axis=-2)


def _chin_public(theta: np.ndarray, sx: np.ndarray, sy: float) -> dict[str, float]:
    e, a, b, alpha, beta = theta
    return {"E": float(np.exp(e + sy)), "A": float(np.exp(a + sy + alpha * sx[0])),
            "B": float(np.exp(b + sy + beta * sx[1])), "alpha": float(alpha),
            "beta": float(beta)}


def _opt_log(theta: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # theta = (logk, a); log N_opt = logk + a u: a straight line in log-log
    logk, a = _split(theta)
    c = u[0]
    out = logk + a * c
    return out, np.stack([np.ones_like(out), c + 0.0 * out], axis=-2)


def _opt_public(theta: np.ndarray, sx: np.ndarray, sy: float) -> dict[str, float]:
    logk, a = theta
    return {"k": float(np.exp(logk + sy - a * sx[0])), "a": float(a)}


def _power_predict(p: dict[str, float], xs: dict[str, np.ndarray]) -> np.ndarray:
    return p["E"] + p["A"] * np.asarray(xs["x"], float) ** -p["alpha"]


def _chin_predict(p: dict[str, float], xs: dict[str, np.ndarray]) -> np.ndarray:
    n, d = np.asarray(xs["N"], float), np.asarray(xs["D"], float)
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _opt_predict(p: dict[str, float], xs: dict[str, np.ndarray]) -> np.ndarray:
    return p["k"] * np.asarray(xs["C"], float) ** p["a"]


PREDICT = {"power": _power_predict, "chinchilla": _chin_predict, "optimal_size": _opt_predict}

# Coefficients and floors are relative to the geometric mean of y (after centring):
# a floor E is a fraction of a typical y, the excess term at the typical x is a fraction too.
_FLOOR = tuple(np.log([0.05, 0.3, 0.6, 0.9]))
_EXCESS = tuple(np.log([0.03, 0.2, 0.6]))
_EXPONENT = (0.1, 0.3, 0.6, 1.0, 2.0)
# The joint law has five parameters: a coarser grid keeps it at 108 starts.
_FLOOR_2 = tuple(np.log([0.1, 0.5, 0.9]))
_EXCESS_2 = tuple(np.log([0.05, 0.5]))
_EXPONENT_2 = (0.2, 0.6, 1.5)
_LOG_BOUND = (-60.0, 60.0)
_EXP_BOUND = (0.0, 5.0)  # no published law of this kind has an exponent above ~2

LAWS: dict[str, Law] = {
    "power": Law(
        name="power", formula="y = E + A * x^-alpha", variables=("x",),
        params=("E", "A", "alpha"), theta_names=("e", "a", "alpha"),
        bounds=(_LOG_BOUND, _LOG_BOUND, _EXP_BOUND),
        log_predict=_power_log, to_public=_power_public,
        init_grid=(_FLOOR, _EXCESS, _EXPONENT)),
    "chinchilla": Law(
        name="chinchilla", formula="y = E + A / N^alpha + B / D^beta", variables=("N", "D"),
        params=("E", "A", "B", "alpha", "beta"), theta_names=("e", "a", "b", "alpha", "beta"),
        bounds=(_LOG_BOUND, _LOG_BOUND, _LOG_BOUND, _EXP_BOUND, _EXP_BOUND),
        log_predict=_chin_log, to_public=_chin_public,
        init_grid=(_FLOOR_2, _EXCESS_2, _EXCESS_2, _EXPONENT_2, _EXPONENT_2)),
    "optimal_size": Law(
        name="optimal_size", formula="N_opt = k * C^a", variables=("C",),
        params=("k", "a"), theta_names=("logk", "a"),
        bounds=(_LOG_BOUND, (-5.0, 5.0)),
        log_predict=_opt_log, to_public=_opt_public,
        init_grid=((-1.0, 0.0, 1.0), (0.0, 0.5, 1.0))),
}


def get_law(name: str) -> Law:
    """Look a law up by name; ValueError naming the known laws otherwise."""
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}: use one of {', '.join(sorted(LAWS))}")
    return LAWS[name]
