"""The planner: which run to do next. Each candidate (a new width, another seed of a trained width, a
trained width taken to the next training budget, more samples for the cells of a width) is scored by how
much it would shrink the 95 % interval of a target quantity, per FLOP it costs.

The shrinkage comes from the fitted joint law (analysis/predict.py) by its Fisher information, the
cost-weighted design of "Spend Less, Fit Better" (arXiv 2604.22753). The state it plans from is the fitted
points with what stands behind each: k seeds (n_seeds) evaluated at m x the study's samples (num_samples),
and the cell's evaluation noise (std). A point's variance in log FID is seed / k + evaluation / (k m)
(noise_parts splits the residual scatter into the two), so a width already sampled 4x is valued, and
costed, from where it stands, and more samples are worth nothing against training-seed noise. The joint law
is fitted unweighted (least squares in log FID), so with J the Jacobian of its log prediction at the points
the target's variance is the sandwich g' A^-1 (J' V J) A^-1 g, A = J' J, V the points' variances and g the
target's gradient in the law's parameters. A candidate adds rows (a new width; the next budget: its cells
at twice the images) or lowers a width's variances (another seed: one more run in each seed average; 4x
the samples: the evaluation share / 4, at 3 k m evaluations' cost). This is deterministic and fast, where
re-simulating and refitting every candidate is noisy enough to rank cheap candidates first by chance.

Validated in tests/analysis/test_planner.py by following the planner on a synthetic study with a known law
(6 widths, FLOPs ~ width^2, 4 step counts, 2 % noise, starting from the 3 cheapest widths). With all the
noise from evaluation it reaches the full grid's interval on alpha at 30.5 % of the full grid's FLOPs.
It does not reach it within half when the target needs the largest width (fid:48@16: 102-139 %), when it
starts from 2 widths (the delta method is then far too confident: alpha is not identified by two sizes),
or, in some noise draws, when half the noise variance is training-seed noise (see the test's docstring).

Targets: an exponent of the law (`alpha`, `beta`, `delta`), the FID of a width at a step count
(`fid:W@S`), the FID gap of two widths at a step count (`gap:W1-W2@S`, W1's FID minus W2's: what the "larger
is better" claims compare), or the crossover cost of two widths (`crossover:W1-W2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.predict import JointFit, _log_law, crossovers_between, fit_joint, require_fit

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


def cell_weights(points: pd.DataFrame, base_samples: float | None = None) -> np.ndarray:
    """Each point's weight in base evaluations: n_seeds x num_samples / base_samples (one seed evaluated at
    the study's sample count = 1; default base: the fewest samples among the points). A point without a
    sample count counts as one base evaluation per seed."""
    k = points["n_seeds"].to_numpy(float) if "n_seeds" in points else np.ones(len(points))
    k = np.where(np.isfinite(k) & (k >= 1), k, 1.0)
    n = points["num_samples"].to_numpy(float) if "num_samples" in points else np.full(len(points), np.nan)
    known = np.isfinite(n) & (n > 0)
    if not known.any():
        return k
    base = float(base_samples) if base_samples else float(n[known].min())
    return k * np.where(known, n / base, 1.0)


def width_flops(sizes: pd.DataFrame, width: int, train_images: float, num_samples: int, steps,
                guided: bool = True) -> tuple[float, float]:
    """(training, evaluation) FLOPs of one run of a width: 3 F D to train (forward and backward), and
    samples x network calls x F to evaluate every step count (classifier-free guidance: 2 calls a step)."""
    row = sizes[sizes["width"] == width]
    if row.empty:
        raise ValueError(f"width {width} is not in the ladder given to the planner ({sorted(sizes['width'])})")
    f = float(row["gflops"].iloc[0]) * 1e9
    return 3 * f * float(train_images), num_samples * sum(steps) * (2 if guided else 1) * f


def candidates(fit: JointFit, sizes: pd.DataFrame, num_samples: int, guided: bool = True) -> list[Candidate]:
    """Every next run the planner weighs, with its FLOPs (width_flops; more samples: 3 w evaluations)."""
    pts = fit.points
    steps = sorted(pts["steps"].unique())
    d_final = float(pts["train_images"].max())
    w = pd.Series(cell_weights(pts, num_samples), index=pts.index).groupby(pts["width"]).mean()
    out = []
    for r in sizes.itertuples():
        train, evaluate = width_flops(sizes, int(r.width), d_final, num_samples, steps, guided)
        if r.width not in w.index:
            out.append(Candidate("new_width", int(r.width), train + evaluate, "train and evaluate"))
        else:
            out.append(Candidate("seed", int(r.width), train + evaluate, "another training seed"))
            out.append(Candidate("next_budget", int(r.width), train + evaluate,
                                 f"train on to {2 * d_final:.3g} images"))
            # Re-evaluating each of its w base evaluations at 4x the samples adds 3 w evaluations.
            out.append(Candidate("more_samples", int(r.width), 3 * w[r.width] * evaluate,
                                 f"4x the samples of its cells (weight {w[r.width]:.3g} -> {4 * w[r.width]:.3g})"))
    return out


TARGET_FORMS = {"fid": r"fid:(\d+)@(\d+)", "gap": r"gap:(\d+)-(\d+)@(\d+)", "crossover": r"crossover:(\d+)-(\d+)"}
TARGET_WIDTHS = {"fid": 1, "gap": 2, "crossover": 2}  # how many of a form's numbers are widths (the rest: steps)


def target_widths(target: str) -> list[int]:
    """The widths a planning target names (none for a law parameter); ValueError for an unknown target."""
    if target in PARAM_INDEX:
        return []
    for kind, pattern in TARGET_FORMS.items():
        m = re.fullmatch(pattern, target)
        if m:
            return [int(g) for g in m.groups()[:TARGET_WIDTHS[kind]]]
    raise ValueError(f"unknown target {target!r}: use alpha, beta, delta, fid:WIDTH@STEPS, gap:W1-W2@STEPS or "
                     "crossover:W1-W2")


def _target_fn(fit: JointFit, target: str, sizes: pd.DataFrame):
    """The target as a function of the law's parameters theta."""
    if target in PARAM_INDEX:
        i = PARAM_INDEX[target]
        if i >= len(fit.theta):
            raise ValueError(f"target {target!r}: the law has no budget term (too few training budgets)")
        return lambda t: t[i]
    target_widths(target)  # an unknown target is refused here
    m = re.fullmatch(TARGET_FORMS["fid"], target)
    if m:
        row, s = _size(sizes, int(m.group(1))), int(m.group(2))
        return lambda t: float(fit.predict(row["params"], s, None, t))
    m = re.fullmatch(TARGET_FORMS["gap"], target)
    if m:  # FID of the first width minus the second's at s steps (positive: the second is better)
        a, b, s = _size(sizes, int(m.group(1))), _size(sizes, int(m.group(2))), int(m.group(3))
        return lambda t: float(fit.predict(a["params"], s, None, t) - fit.predict(b["params"], s, None, t))
    m = re.fullmatch(TARGET_FORMS["crossover"], target)
    if m:
        a, b = (_size(sizes, int(m.group(k))) for k in (1, 2))
        max_steps = float(fit.points["steps"].max())

        def cross(t):
            single = JointFit(fit.curve, fit.names, t, np.empty((0, len(t))), fit.scale, fit.points, fit.rmse_log,
                              fit.has_budget)
            return crossovers_between(single, {**a, "label": "a"}, {**b, "label": "b"}, max_steps)["crossover_cost"]
        return cross



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


def _rows(fit: JointFit, params, steps, images) -> np.ndarray:
    return _jacobian(fit, np.asarray(params, float), np.asarray(steps, float), np.asarray(images, float))


def noise_parts(fit: JointFit, base_samples: float | None = None) -> tuple[float, np.ndarray]:
    """(seed variance, evaluation variance of one base evaluation at each point), in log FID. A point averaged
    over k seeds at m x the samples has variance seed / k + evaluation / (k m): more samples shrink only the
    second. The evaluation part comes from the cells' own noise (std, from the evaluator's FID slices); the
    seed part is what the residuals hold beyond it. Without std, all the scatter counts as evaluation noise."""
    pts = fit.points
    w = cell_weights(pts, base_samples)
    r2 = fit.residuals ** 2 if len(fit.residuals) else np.full(len(pts), fit.rmse_log ** 2)
    rel = (pts["std"] / pts["value"]).to_numpy(float) if "std" in pts else np.full(len(pts), np.nan)
    if not (len(rel) and np.all(np.isfinite(rel))):
        return 0.0, np.full(len(pts), float(np.mean(w * r2)))
    k = pts["n_seeds"].to_numpy(float) if "n_seeds" in pts else np.ones(len(pts))
    return max(float(np.mean(k * (r2 - rel ** 2))), 0.0), rel ** 2 * w


def target_sd(fit: JointFit, f, J: np.ndarray, var: np.ndarray) -> float:
    """The target's standard deviation by the delta method for the unweighted least-squares fit of points of
    variances var: sqrt(g' A^-1 (J' diag(var) J) A^-1 g), A = J' J (the sandwich)."""
    g = _grad(f, fit.theta)
    if not np.all(np.isfinite(g)):
        return np.inf
    a_inv = np.linalg.pinv(J.T @ J, rcond=1e-10)
    cov = a_inv @ (J.T @ (J * var[:, None])) @ a_inv
    return float(np.sqrt(max(g @ cov @ g, 0.0)))


def design_interval(fit: JointFit, target: str, sizes: pd.DataFrame, theta: np.ndarray | None = None,
                    variances: np.ndarray | None = None, base_samples: float | None = None) -> float:
    """Width of the target's 95 % interval (2 x 1.96 sd, delta method) for the fit's points, at theta (default:
    the estimate) and the points' variances (default: from noise_parts). With a known law (theta and
    variances true) it is the precision the design itself buys, free of the luck of one noise draw."""
    at = fit if theta is None else replace(fit, theta=np.asarray(theta, float))
    pts = at.points
    J = _rows(at, pts["params"], pts["steps"], pts["train_images"])
    if variances is None:
        seed_var, ev = noise_parts(fit, base_samples)
        k = pts["n_seeds"].to_numpy(float) if "n_seeds" in pts else np.ones(len(pts))
        variances = seed_var / k + ev / cell_weights(pts, base_samples)
    return 2 * 1.96 * target_sd(at, _target_fn(at, target, sizes), J, np.asarray(variances, float))


def plan(fit: JointFit, target: str, sizes: pd.DataFrame, num_samples: int, seed: int = 0) -> pd.DataFrame:
    """Candidates ranked by the expected shrinkage of the target's 95 % interval per FLOP (Fisher information
    of the joint law at its estimate; the interval is 2 x 1.96 standard deviations)."""
    f = _target_fn(fit, target, sizes)
    if not np.isfinite(f(fit.theta)):  # no interval to shrink: every candidate would rank as nothing gained
        raise ValueError(f"target {target}: the fitted law has no crossing of these two widths within the evaluated "
                         f"steps (1..{int(fit.points['steps'].max())}), so it has no interval to shrink; plan for a "
                         f"crossover the law predicts (`study predict` lists them) or for fid:WIDTH@STEPS")
    pts = fit.points
    J = _rows(fit, pts["params"], pts["steps"], pts["train_images"])
    w = cell_weights(pts, num_samples)
    k = pts["n_seeds"].to_numpy(float) if "n_seeds" in pts else np.ones(len(pts))
    which = pts["width"].to_numpy()
    seed_var, ev = noise_parts(fit, num_samples)
    var = seed_var / k + ev / w
    fresh = seed_var + float(np.median(ev))  # one new seed at the base samples
    now = 2 * 1.96 * target_sd(fit, f, J, var)
    steps = np.array(sorted(pts["steps"].unique()), float)
    d_final = float(pts["train_images"].max())
    rows = []
    for cand in candidates(fit, sizes, num_samples):
        size = _size(sizes, cand.width)
        n = len(steps)
        mine = which == cand.width
        J2 = J
        if cand.kind == "more_samples":  # only the evaluation share of its cells' variance falls 4x
            var2 = np.where(mine, seed_var / k + ev / (4 * w), var)
        elif cand.kind == "seed":
            # table.curves averages seeds unweighted: the mean of k + 1 evaluations, the new one at base samples.
            var2 = np.where(mine, (k ** 2 * var + seed_var + ev) / (k + 1) ** 2, var)
        else:
            d = 2 * d_final if cand.kind == "next_budget" else d_final
            if cand.kind == "next_budget" and not fit.has_budget:
                continue  # a law without a budget term cannot value a longer run
            J2 = np.vstack([J, _rows(fit, [size["params"]] * n, steps, [d] * n)])
            var2 = np.concatenate([var, np.full(n, fresh)])
        after = 2 * 1.96 * target_sd(fit, f, J2, var2)
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
    require_fit(fit)  # a law that misses its cells has no interval worth shrinking
    return {"curve": curve, "target": target, "ranking": plan(fit, target, sizes, num_samples, seed=seed),
            "from_loss": int(fit.points["from_loss"].sum())}
