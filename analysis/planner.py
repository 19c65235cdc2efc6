"""The planner: which run to do next. Each candidate (a new width, another seed of a trained width, a
trained width taken to the next training budget, more samples for the cells of a width) is scored by how
much it would shrink the 95 % interval of a target quantity, per FLOP it costs.

The shrinkage comes from the fitted joint law (analysis/predict.py) by its Fisher information, the
cost-weighted design of "Spend Less, Fit Better" (arXiv 2604.22753): with J the Jacobian of the law's log
prediction at the cells (rows weighted by 1 / their noise variance), the target's variance is
g' (J' W J)^-1 g s^2, where g is the target's gradient in the law's parameters and s^2 the scatter of the
cells about the law. A candidate adds rows (a new width, another seed: its cells again; the next budget:
its cells at twice the images) or reweights them (4x the samples: a quarter of the evaluation variance).
This is deterministic and fast, where re-simulating and refitting every candidate is noisy enough to
rank cheap candidates first by chance.

Targets: an exponent of the law (`alpha`, `beta`, `delta`), the FID of a width at a step count
(`fid:W@S`), or the crossover cost of two widths (`crossover:W1-W2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.predict import JointFit, _log_law, crossovers_between, fit_joint

PARAM_INDEX = {"alpha": 2, "beta": 4, "delta": 6}


@dataclass(frozen=True)
class Candidate:
    """One possible next run: what it adds to the table and what it costs."""

    kind: str  # new_width | seed | next_budget | more_samples
    width: int
    flops: float
    note: str = ""


def target_values(fit: JointFit, target: str, sizes: pd.DataFrame) -> np.ndarray:
    """The target under every bootstrap draw of the law (NaN where it is undefined in a draw)."""
    f = _target_fn(fit, target, sizes)
    return np.array([f(t) for t in fit.boot], float)


def interval_width(values: np.ndarray) -> float:
    """Width of the 95 % interval of the finite values (inf when fewer than 10 are defined)."""
    v = values[np.isfinite(values)]
    if len(v) < 10:
        return np.inf
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(hi - lo)


def _size(sizes: pd.DataFrame, width: int) -> dict:
    row = sizes[sizes["width"] == width]
    if row.empty:
        raise ValueError(f"width {width} is not in the ladder given to the planner ({sorted(sizes['width'])})")
    r = row.iloc[0]
    return {"params": float(r["params"]), "normalized_cost": float(r["normalized_cost"])}


def candidates(fit: JointFit, sizes: pd.DataFrame, num_samples: int, guided: bool = True) -> list[Candidate]:
    """Every next run the planner weighs, with its FLOPs (training 3 F D; evaluation samples x calls x F)."""
    pts = fit.points
    steps = sorted(pts["steps"].unique())
    d_final = float(pts["train_images"].max())
    calls = sum(steps) * (2 if guided else 1)
    trained = set(pts["width"])
    out = []
    for r in sizes.itertuples():
        f = float(r.gflops) * 1e9
        evaluate = num_samples * calls * f
        if r.width not in trained:
            out.append(Candidate("new_width", int(r.width), 3 * f * d_final + evaluate, "train and evaluate"))
        else:
            out.append(Candidate("seed", int(r.width), 3 * f * d_final + evaluate, "another training seed"))
            out.append(Candidate("next_budget", int(r.width), 3 * f * d_final + evaluate,
                                 f"train on to {2 * d_final:.3g} images"))
            out.append(Candidate("more_samples", int(r.width), 3 * evaluate, "4x the samples of its cells"))
    return out


def _target_fn(fit: JointFit, target: str, sizes: pd.DataFrame):
    """The target as a function of the law's parameters theta."""
    if target in PARAM_INDEX:
        i = PARAM_INDEX[target]
        if i >= len(fit.theta):
            raise ValueError(f"target {target!r}: the law has no budget term (too few training budgets)")
        return lambda t: t[i]
    m = re.fullmatch(r"fid:(\d+)@(\d+)", target)
    if m:
        row, s = _size(sizes, int(m.group(1))), int(m.group(2))
        return lambda t: float(fit.predict(row["params"], s, None, t))
    m = re.fullmatch(r"crossover:(\d+)-(\d+)", target)
    if m:
        a, b = (_size(sizes, int(m.group(k))) for k in (1, 2))
        max_steps = float(fit.points["steps"].max())

        def cross(t):
            single = JointFit(fit.curve, fit.names, t, np.empty((0, len(t))), fit.scale, fit.points, fit.rmse_log,
                              fit.has_budget)
            return crossovers_between(single, {**a, "label": "a"}, {**b, "label": "b"}, max_steps)["crossover_cost"]
        return cross
    raise ValueError(f"unknown target {target!r}: use alpha, beta, delta, fid:WIDTH@STEPS or crossover:W1-W2")


def _grad(f, theta: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    g = np.zeros_like(theta)
    for i in range(len(theta)):
        up, dn = theta.copy(), theta.copy()
        up[i] += eps
        dn[i] -= eps
        g[i] = (f(up) - f(dn)) / (2 * eps)
    return g


def _jacobian(fit: JointFit, params, steps, images) -> np.ndarray:
    """d log FID / d theta at cells (n, P), by central differences of the law."""
    u = fit._u(params, steps, images if fit.has_budget else None)
    cols = []
    for i in range(len(fit.theta)):
        up, dn = fit.theta.copy(), fit.theta.copy()
        up[i] += 1e-5
        dn[i] -= 1e-5
        cols.append((_log_law(up, u, fit.has_budget) - _log_law(dn, u, fit.has_budget)) / 2e-5)
    return np.stack(cols, axis=1)


def _rows(fit: JointFit, widths, params, steps, images, weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    J = _jacobian(fit, np.asarray(params, float), np.asarray(steps, float), np.asarray(images, float))
    return J, np.full(len(J), float(weight)), np.asarray(widths)


def target_sd(fit: JointFit, f, J: np.ndarray, w: np.ndarray) -> float:
    """The target's standard deviation by the delta method: sqrt(g' (J' W J)^-1 g) s."""
    g = _grad(f, fit.theta)
    if not np.all(np.isfinite(g)):
        return np.inf
    info = J.T @ (w[:, None] * J)
    cov = np.linalg.pinv(info, rcond=1e-10)
    s2 = float(np.mean(fit.residuals ** 2)) if len(fit.residuals) else fit.rmse_log ** 2
    return float(np.sqrt(max(g @ cov @ g, 0.0) * s2))


def plan(fit: JointFit, target: str, sizes: pd.DataFrame, num_samples: int, seed: int = 0) -> pd.DataFrame:
    """Candidates ranked by the expected shrinkage of the target's 95 % interval per FLOP (Fisher information
    of the joint law at its estimate; the interval is 2 x 1.96 standard deviations)."""
    f = _target_fn(fit, target, sizes)
    pts = fit.points
    J, w, which = _rows(fit, pts["width"], pts["params"], pts["steps"], pts["train_images"], 1.0)
    now = 2 * 1.96 * target_sd(fit, f, J, w)
    steps = np.array(sorted(pts["steps"].unique()), float)
    d_final = float(pts["train_images"].max())
    rows = []
    for cand in candidates(fit, sizes, num_samples):
        size = _size(sizes, cand.width)
        n = len(steps)
        if cand.kind == "more_samples":  # its cells' evaluation variance falls 4x (the scatter is mostly that)
            w2 = np.where(which == cand.width, 4.0, w)
            J2 = J
        else:
            d = 2 * d_final if cand.kind == "next_budget" else d_final
            if cand.kind == "next_budget" and not fit.has_budget:
                continue  # a law without a budget term cannot value a longer run
            Jn, wn, _ = _rows(fit, [cand.width] * n, [size["params"]] * n, steps, [d] * n, 1.0)
            J2, w2 = np.vstack([J, Jn]), np.concatenate([w, wn])
        after = 2 * 1.96 * target_sd(fit, f, J2, w2)
        gain = max(now - after, 0.0) if np.isfinite(now) else (np.inf if np.isfinite(after) else 0.0)
        rows.append({"kind": cand.kind, "width": cand.width, "note": cand.note, "flops": cand.flops,
                     "interval_now": now, "interval_after": after, "shrinkage": gain,
                     "shrinkage_per_pflop": gain / (cand.flops / 1e15)})
    return pd.DataFrame(rows).sort_values("shrinkage_per_pflop", ascending=False).reset_index(drop=True)


def plan_run(table: pd.DataFrame, target: str, sizes: pd.DataFrame, num_samples: int, curve: str | None = None,
             n_boot: int = 60, seed: int = 0) -> dict:
    """`study plan`: fit the sampler's joint law on a run's table and rank the next runs for a target."""
    from analysis.predict import _default_curve

    curve = curve or _default_curve(table)
    fit = fit_joint(table, curve, n_boot, seed)
    return {"curve": curve, "target": target, "ranking": plan(fit, target, sizes, num_samples, seed=seed)}
