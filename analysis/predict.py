"""Predict before you train: a joint law of quality against model size, sampling steps and training
budget, fitted on the evaluated cells, that predicts a width's quality-vs-sampling-cost curve and its
crossovers with the other sizes before that width is trained.

The law, per sampler (one curve family), in log space as the other laws of this package:

    FID(N, s, D) = E + A (N / N0)^-alpha + B (s / s0)^-beta [+ C (D / D0)^-delta]

N: parameters, s: sampling steps, D: training images (the D term only where the table holds several
training budgets of that sampler). Each term is what the paper reads off its figures: bigger models reach
lower FID, more steps help with diminishing returns, and so does more training. It is separable by
design: a size's steps curve is the same shape shifted down, so its crossovers on the cost axis
(normalized cost x steps) come only from the cost factor, which the ladder knows before training.
The backtest (fit without the largest size, predict it) says how far that assumption carries, and the
goodness-of-fit test (analysis.gof, on the cells' own noise) whether the law fits the cells at all: where it
does not, `study predict`, `plan` and `recommend` refuse with the worst cell named instead of quoting numbers.

Intervals: residual bootstrap in log space (resample the fit's residuals, refit from the estimate),
which keeps every size and step count in each resample (a point bootstrap over few cells would drop
whole sizes and widen the intervals far beyond the estimator's real spread). Measured coverage on
synthetic studies with a known law (tests/analysis/test_predict.py; 12 replications, 3 sizes x 4 step
counts, 2 % noise, predicting a fourth size): the nominal 95 % band held the true curve at 83 % of the
points. The intervals are honest in order of magnitude, somewhat short of their nominal coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.gof import fits as law_fits, goodness_of_fit, not_fit_text, point_noise
from analysis.loss import loss_cells
from analysis.table import cells, curves, headline, size_label

LEVEL = 0.95
MAX_EXP = 4.0  # exponents beyond this are steps, not power laws: bounded so the fit stays defined


@dataclass
class JointFit:
    """One sampler's joint law: the estimate, its bootstrap draws, and the data it was fitted on."""

    curve: str
    names: tuple[str, ...]
    theta: np.ndarray  # (P,) internal: log E, log A, alpha, log B, beta[, log C, delta]
    boot: np.ndarray  # (K, P) bootstrap draws of theta
    scale: dict  # N0, s0, D0: the centring of each variable
    points: pd.DataFrame  # the fitted points (width, params, steps, train_images, value)
    rmse_log: float  # residual RMS in log FID
    has_budget: bool
    notes: list[str] = field(default_factory=list)
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))  # centred, inflated log residuals
    gof: dict = field(default_factory=dict)  # goodness of fit on the cells' noise (analysis.gof)

    def predict(self, params, steps, train_images=None, theta: np.ndarray | None = None) -> np.ndarray:
        """FID at (N, s, D) for one theta (default: the estimate); arrays broadcast."""
        return np.exp(_log_law(self.theta if theta is None else theta, self._u(params, steps, train_images),
                               self.has_budget))

    def predict_band(self, params, steps, train_images=None, observed: bool = False,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(estimate, low, high) of FID at (N, s, D): the 95 % bootstrap band of the law's mean, or with
        observed=True of one new evaluation (the law's uncertainty plus the scatter of cells about it)."""
        est = self.predict(params, steps, train_images)
        if len(self.boot) == 0:
            return est, np.full_like(est, np.nan), np.full_like(est, np.nan)
        u = self._u(params, steps, train_images)
        logd = np.stack([_log_law(t, u, self.has_budget) for t in self.boot])
        if observed and len(self.residuals):
            logd = logd + np.random.default_rng(seed).choice(self.residuals, size=logd.shape)
        draws = np.exp(logd)
        lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=0)
        return est, lo, hi

    def _u(self, params, steps, train_images) -> list[np.ndarray]:
        d = self.scale["D0"] if train_images is None else train_images
        return [np.log(np.asarray(params, float) / self.scale["N0"]),
                np.log(np.asarray(steps, float) / self.scale["s0"]),
                np.log(np.asarray(d, float) / self.scale["D0"])]


def _log_law(theta: np.ndarray, u: list[np.ndarray], has_budget: bool) -> np.ndarray:
    terms = [np.broadcast_to(theta[0], np.broadcast(*u).shape), theta[1] - theta[2] * u[0],
             theta[3] - theta[4] * u[1]]
    if has_budget:
        terms.append(theta[5] - theta[6] * u[2])
    return np.logaddexp.reduce(np.stack(np.broadcast_arrays(*terms)), axis=0)


def _bounds(has_budget: bool) -> tuple[np.ndarray, np.ndarray]:
    n_par = 7 if has_budget else 5
    lo = np.full(n_par, -np.inf)
    hi = np.full(n_par, np.inf)
    for i in (2, 4, 6)[: 3 if has_budget else 2]:
        lo[i], hi[i] = 0.0, MAX_EXP
    return lo, hi


def _fit(u: list[np.ndarray], logy: np.ndarray, has_budget: bool, inits: list[np.ndarray]) -> np.ndarray:
    lo, hi = _bounds(has_budget)
    best, best_cost = None, np.inf
    for t0 in inits:
        t0 = np.clip(t0[:len(lo)], lo + 1e-9, hi - 1e-9)
        res = least_squares(lambda t: _log_law(t, u, has_budget) - logy, t0, bounds=(lo, hi), loss="soft_l1",
                            f_scale=0.1, max_nfev=2000)
        if res.cost < best_cost:
            best, best_cost = res.x, res.cost
    return best


def _inits(logy: np.ndarray, has_budget: bool) -> list[np.ndarray]:
    m = float(np.min(logy))
    grid = []
    for e_off in (-1.0, -0.1):
        for alpha in (0.3, 1.0):
            for beta in (0.5, 1.5):
                t = [m + e_off, m - 0.5, alpha, m - 0.5, beta]
                grid.append(np.array(t + ([m - 1.0, 0.5] if has_budget else [])))
    return grid


def fit_joint(table: pd.DataFrame, curve: str, n_boot: int = 200, seed: int = 0,
              exclude_widths=()) -> JointFit:
    """Fit the joint law of one sampler's cells (each at its FID-best guidance, averaged over seeds). Checkpoints
    evaluated by their held-out loss alone enter with the FID their loss predicts (analysis.loss.loss_cells), weighed
    by its interval in the goodness-of-fit test and the planner; `points.from_loss` marks them."""
    extra = loss_cells(table, curve)
    measured = cells(table, "fid")
    pts = curves(pd.concat([measured, extra.drop(columns=["low", "high", "from_loss"])], ignore_index=True)
                 if len(extra) else measured)
    by_loss = set(zip(extra["width"], extra["train_images"])) if len(extra) else set()
    pts["from_loss"] = [(w, d) in by_loss for w, d in zip(pts["width"], pts["train_images"])]
    pts = pts[(pts["curve"] == curve) & np.isfinite(pts["value"]) & (pts["value"] > 0)]
    pts = pts[~pts["width"].isin(list(exclude_widths))]
    n_sizes = pts["width"].nunique()
    if n_sizes < 2 or pts["steps"].nunique() < 2:
        raise ValueError(f"the joint law of {curve} needs at least 2 sizes and 2 step counts; the table has "
                         f"{n_sizes} size(s) and {pts['steps'].nunique()} step count(s): evaluate more cells")
    has_budget = pts["train_images"].nunique() >= 3
    n_par = 7 if has_budget else 5
    if not has_budget:  # one budget per size: predict at the final budget only
        pts = headline(pts)
    if len(pts) <= n_par:
        raise ValueError(f"the joint law of {curve} has {n_par} parameters and only {len(pts)} cells: "
                         "evaluate more step counts or sizes")
    scale = {"N0": float(np.exp(np.log(pts["params"]).mean())), "s0": float(np.exp(np.log(pts["steps"]).mean())),
             "D0": float(pts["train_images"].max())}
    fit = JointFit(curve, ("E", "A", "alpha", "B", "beta") + (("C", "delta") if has_budget else ()),
                   np.zeros(n_par), np.empty((0, n_par)), scale,
                   # n_seeds, num_samples, std ride along: the planner weighs a point by the evaluations behind it.
                   pts.reindex(columns=["width", "params", "normalized_cost", "steps", "train_images", "value",
                                        "n_seeds", "num_samples", "std", "seed_sd", "from_loss"]
                               ).reset_index(drop=True),
                   np.nan,
                   has_budget)
    u = fit._u(pts["params"].to_numpy(), pts["steps"].to_numpy(), pts["train_images"].to_numpy())
    logy = np.log(pts["value"].to_numpy(float))
    fit.theta = _fit(u, logy, has_budget, _inits(logy, has_budget))
    resid = logy - _log_law(fit.theta, u, has_budget)
    labels = [f"{size_label(r.params)} at {int(r.steps)} steps, {int(r.train_images):,} images"
              for r in fit.points.itertuples()]
    fit.gof = goodness_of_fit(lambda t: _log_law(t, u, has_budget), fit.theta, np.exp(logy),
                              point_noise(fit.points), labels, list(zip(*_bounds(has_budget))))
    fit.rmse_log = float(np.sqrt(np.mean(resid ** 2)))
    rng = np.random.default_rng(seed)
    # Residuals centred and inflated for the parameters spent (as in a residual bootstrap of a regression).
    r = (resid - resid.mean()) * np.sqrt(len(resid) / max(1, len(resid) - n_par))
    draws = []
    for _ in range(int(n_boot)):
        logy_b = _log_law(fit.theta, u, has_budget) + rng.choice(r, size=len(r), replace=True)
        draws.append(_fit(u, logy_b, has_budget, [fit.theta]))
    fit.boot = np.array(draws) if draws else np.empty((0, n_par))
    fit.residuals = r
    for name, i in (("alpha", 2), ("beta", 4), ("delta", 6)):
        if i < n_par and (fit.theta[i] <= 1e-6 or fit.theta[i] >= MAX_EXP - 1e-6):
            fit.notes.append(f"{name} sits on its bound ({fit.theta[i]:.3g}): not determined by these points")
    return fit


def require_fit(fit: JointFit) -> None:
    """ValueError naming the worst cell when the joint law fails its goodness-of-fit test: what it would
    predict, plan or recommend are numbers of the wrong model for these cells."""
    if not law_fits({"gof": fit.gof}):
        raise ValueError(f"the joint law of {fit.curve}: {not_fit_text({'gof': fit.gof})}; its predictions "
                         "would be numbers of the wrong model: look at the worst cell (a diverged run, a bad "
                         "checkpoint) or evaluate more step counts and budgets")


def public_params(fit: JointFit) -> dict[str, dict[str, float]]:
    """The published parameters with 95 % bootstrap intervals (E, A, B, C in FID units)."""
    def pub(t):
        out = {"E": np.exp(t[0]), "A": np.exp(t[1]), "alpha": t[2], "B": np.exp(t[3]), "beta": t[4]}
        if fit.has_budget:
            out.update({"C": np.exp(t[5]), "delta": t[6]})
        return out

    est = pub(fit.theta)
    boots = [pub(t) for t in fit.boot]
    res = {}
    for k, v in est.items():
        vals = np.array([b[k] for b in boots]) if boots else np.array([])
        lo, hi = (np.percentile(vals, [2.5, 97.5]) if len(vals) else (np.nan, np.nan))
        res[k] = {"value": float(v), "low": float(lo), "high": float(hi)}
    return res


def _cost_grid(c_small: float, c_large: float, max_steps: float, n: int = 400) -> np.ndarray:
    lo, hi = c_large * 1.0, c_small * max_steps  # both sizes take at least one step; the cheaper at most max
    return np.geomspace(lo, hi, n) if hi > lo else np.array([])


def _crossings(x: np.ndarray, gap: np.ndarray) -> list[float]:
    """Costs where gap (smaller minus larger FID) changes sign, interpolated in log cost."""
    out = []
    s = np.sign(gap)
    for j in np.flatnonzero(s[:-1] * s[1:] < 0):
        t = gap[j] / (gap[j] - gap[j + 1])
        out.append(float(np.exp(np.log(x[j]) + t * (np.log(x[j + 1]) - np.log(x[j])))))
    return out


def crossovers_between(fit: JointFit, a: dict, b: dict, max_steps: float, train_images=None) -> dict:
    """Where the predicted curves of two sizes cross on the sampling-cost axis, with the bootstrap share that
    crosses and the 95 % interval of the first crossing. a, b: {"params", "normalized_cost", "label"}."""
    small, large = sorted([a, b], key=lambda r: r["normalized_cost"])
    x = _cost_grid(small["normalized_cost"], large["normalized_cost"], max_steps)
    if len(x) == 0:
        return {"smaller": small["label"], "larger": large["label"], "crossover_cost": np.nan, "low": np.nan,
                "high": np.nan, "p_cross": np.nan, "n_crossings": 0, "verdict": "no shared cost range"}

    def gap(theta):
        return (fit.predict(small["params"], x / small["normalized_cost"], train_images, theta)
                - fit.predict(large["params"], x / large["normalized_cost"], train_images, theta))

    est = _crossings(x, gap(fit.theta))
    firsts = [c[0] for t in fit.boot if (c := _crossings(x, gap(t)))]
    p = len(firsts) / len(fit.boot) if len(fit.boot) else np.nan
    lo, hi = np.percentile(firsts, [2.5, 97.5]) if len(firsts) >= 10 else (np.nan, np.nan)
    verdict = ("crossing" if est and p >= 0.9 else "no evidence of crossing" if not est and (p <= 0.1 or np.isnan(p))
               else "not resolved (the bootstrap splits)")
    return {"smaller": small["label"], "larger": large["label"], "crossover_cost": est[0] if est else np.nan,
            "low": float(lo), "high": float(hi), "p_cross": float(p), "n_crossings": len(est), "verdict": verdict,
            "all_crossings": est}


def predict_width(table: pd.DataFrame, params: float, normalized_cost: float, label: str | None = None,
                  curve: str | None = None, n_boot: int = 200, seed: int = 0, fit: JointFit | None = None,
                  steps: np.ndarray | None = None) -> dict:
    """The predicted FID-vs-steps (and vs cost) curve of a size, trained or not, and its predicted crossovers
    with every size of the table."""
    curve = curve or _default_curve(table)
    fit = fit or fit_joint(table, curve, n_boot, seed)
    max_steps = float(fit.points["steps"].max())
    steps = np.unique(np.geomspace(1, max_steps, 24).round()) if steps is None else np.asarray(steps, float)
    est, lo, hi = fit.predict_band(params, steps)
    label = label or size_label(params)
    pred = pd.DataFrame({"steps": steps, "sampling_cost": steps * normalized_cost, "fid": est, "low": lo,
                         "high": hi})
    new = {"params": params, "normalized_cost": normalized_cost, "label": label}
    sizes = fit.points.groupby("width").agg(params=("params", "first"),
                                            normalized_cost=("normalized_cost", "first")).reset_index()
    cross = [crossovers_between(fit, new, {"params": r.params, "normalized_cost": r.normalized_cost,
                                           "label": size_label(r.params)}, max_steps)
             for r in sizes.itertuples() if not np.isclose(r.params, params)]
    return {"curve": curve, "fit": fit, "prediction": pred, "crossovers": pd.DataFrame(cross),
            "params": public_params(fit), "rmse_log": fit.rmse_log, "notes": fit.notes, "gof": fit.gof}


def _default_curve(table: pd.DataFrame) -> str:
    names = list(pd.unique(table["sampler"].astype(str)))
    return next((n for n in names if n.lower().startswith("ddim")), names[0])


def _measured_crossings(pts: pd.DataFrame, a: float, b: float) -> list[float]:
    """Crossings of two measured curves (final budget) on the cost axis, by interpolation in log cost."""
    ca = pts[pts["params"] == a].sort_values("sampling_cost")
    cb = pts[pts["params"] == b].sort_values("sampling_cost")
    lo = max(ca["sampling_cost"].min(), cb["sampling_cost"].min())
    hi = min(ca["sampling_cost"].max(), cb["sampling_cost"].max())
    if not hi > lo:
        return []
    x = np.geomspace(lo, hi, 200)
    fa = np.interp(np.log(x), np.log(ca["sampling_cost"]), ca["value"])
    fb = np.interp(np.log(x), np.log(cb["sampling_cost"]), cb["value"])
    small_first = ca["normalized_cost"].iloc[0] < cb["normalized_cost"].iloc[0]
    return _crossings(x, (fa - fb) if small_first else (fb - fa))


def backtest(table: pd.DataFrame, curve: str | None = None, n_boot: int = 200, seed: int = 0) -> dict:
    """Fit without the largest size, predict its curve and crossovers, compare with what was measured."""
    curve = curve or _default_curve(table)
    pts = headline(curves(cells(table, "fid")))
    pts = pts[pts["curve"] == curve]
    largest = pts.loc[pts["params"].idxmax()]
    fit = fit_joint(table, curve, n_boot, seed, exclude_widths=[int(largest["width"])])
    held = pts[pts["width"] == largest["width"]].sort_values("steps")
    # A measured cell is one noisy evaluation: compare it with the interval of a new observation.
    est, lo, hi = fit.predict_band(largest["params"], held["steps"].to_numpy(), observed=True, seed=seed)
    curve_rows = pd.DataFrame({"steps": held["steps"].to_numpy(), "measured": held["value"].to_numpy(),
                               "predicted": est, "low": lo, "high": hi})
    curve_rows["inside"] = (curve_rows["measured"] >= curve_rows["low"]) & (curve_rows["measured"] <= curve_rows["high"])
    max_steps = float(pts["steps"].max())
    rows = []
    for other in pts[pts["width"] != largest["width"]].groupby("width").first().reset_index().itertuples():
        pred = crossovers_between(fit, {"params": largest["params"], "normalized_cost": largest["normalized_cost"],
                                        "label": size_label(largest["params"])},
                                  {"params": other.params, "normalized_cost": other.normalized_cost,
                                   "label": size_label(other.params)}, max_steps)
        meas = _measured_crossings(pts, float(other.params), float(largest["params"]))
        m = meas[0] if meas else np.nan
        inside = bool(np.isfinite(m) and pred["low"] <= m <= pred["high"]) if np.isfinite(pred["low"]) else None
        agree = (not meas) == np.isnan(pred["crossover_cost"])
        rows.append({**{k: v for k, v in pred.items() if k != "all_crossings"}, "measured_cost": m,
                     "measured_crossings": len(meas), "inside_interval": inside, "same_answer": agree})
    return {"curve": curve, "held_out": size_label(largest["params"]), "held_out_width": int(largest["width"]),
            "curve_points": curve_rows, "crossovers": pd.DataFrame(rows),
            "coverage": float(curve_rows["inside"].mean()) if len(curve_rows) else np.nan, "rmse_log": fit.rmse_log,
            "gof": fit.gof}


def predict_run(run_dir, params: float, normalized_cost: float, label: str, curve: str | None = None,
                n_boot: int = 200, seed: int = 0) -> dict:
    """`study predict`: the predicted curve and crossovers of a size from a run's table, written to
    RUN_DIR/analysis/predict-<label>-<curve>.{csv,png,json}; returns what it wrote and found."""
    from pathlib import Path

    from analysis.export import jsonable, write_json
    from analysis.plot_predict import plot_prediction
    from analysis.table import load_results

    table = load_results(run_dir)
    curve = curve or _default_curve(table)
    fit = fit_joint(table, curve, n_boot, seed)
    require_fit(fit)
    res = predict_width(table, params, normalized_cost, label, curve, n_boot, seed, fit=fit)
    out = Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"predict-{label}-{res['curve']}".replace("/", "_").replace("+", "p")
    res["prediction"].to_csv(out / f"{stem}.csv", index=False)
    figure = plot_prediction(table, res, label, out, stem)
    cross = res["crossovers"].drop(columns=["all_crossings"], errors="ignore")
    summary = {"width": label, "curve": res["curve"], "params": res["params"], "rmse_log": res["rmse_log"],
               "notes": res["notes"], "gof": res["gof"], "crossovers": cross.to_dict(orient="records"),
               "prediction": res["prediction"].to_dict(orient="records"), "figure": figure["png"],
               "csv": str(out / f"{stem}.csv")}
    # Budgets scored by their held-out loss alone: the FID each predicts through the loss-to-FID map, with its 95 %
    # prediction interval (they are in the joint law's points too).
    only = loss_cells(table, res["curve"])
    cols = ["width", "seed", "train_images", "curve", "steps", "heldout_loss", "value", "low", "high"]
    summary["from_loss"] = (only[cols].rename(columns={"value": "fid"}).to_dict(orient="records")
                            if len(only) else [])
    write_json(out / f"{stem}.json", summary)
    return jsonable(summary)
