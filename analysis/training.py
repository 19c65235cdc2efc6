"""Quality against training compute: per-size power laws, the compute-optimal envelope,
the compute-optimal size N_opt = k C^a and the joint law E + A/N^alpha + B/D^beta.

All on FID at the best guidance of one reference sampler and step count (`reference_cell`),
averaged over seeds. A fit the data cannot support is recorded with the reason instead; every fit
carries its goodness-of-fit test against the points' own noise (analysis.gof, under "gof").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit
from analysis.frontier import pareto_mask
from analysis.gof import point_noise
from analysis.laws import get_law
from analysis.table import cells, curves, reference_cell, size_label

# More points than parameters: with as many points as parameters the fit is exact, the residuals are
# zero, and a bootstrap over points returns a zero-width interval that claims a precision it lacks.
MIN_POWER = 4  # points per size for E + A x^-alpha (3 parameters)
MIN_OPT = 3  # envelope points for N_opt = k C^a (2 parameters)
MIN_JOINT = 6  # points for the joint law (5 parameters), with >= 2 sizes and >= 2 budgets


def training_points(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """FID per (width, train_images) at the reference sampler and steps, and that choice."""
    c = curves(cells(table, "fid"))
    sampler, steps = reference_cell(c)
    pts = c[(c["curve"] == sampler) & (c["steps"] == steps)]
    pts = pts[["width", "params", "train_images", "train_flops", "value", "std", "n_seeds", "seed_sd"]]
    pts = pts.rename(columns={"value": "fid"}).sort_values(["params", "train_flops"])
    mask = pareto_mask(pts["train_flops"].values, pts["fid"].values, lower_is_better=True)
    pts = pts.assign(envelope=mask).reset_index(drop=True)
    ref = {"sampler": sampler, "steps": steps,
           "note": f"FID at the best guidance of {sampler} with {steps} steps (the most-"
                   "evaluated step count of the reference sampler), mean over seeds"}
    return pts, ref


def regressions(pts: pd.DataFrame, z: float = 3.0) -> list[dict]:
    """Sizes whose FID got worse with more training, beyond the evaluation noise.

    More training should not make a model worse; when it does (a loss spike, a diverged run, a bad
    checkpoint) the per-size fit, the envelope and that budget's frontier inherit the damage. For each
    size, the largest rise of FID over the best earlier budget, kept when it exceeds z standard errors
    of the difference (FID std of both points), or 25 % where the table has no std.
    """
    out = []
    for width, g in pts.sort_values("train_flops").groupby("width", sort=False):
        best, worst = None, None
        for row in g.itertuples():
            if best is not None:
                rise = row.fid - best.fid
                noise = float(np.hypot(row.std, best.std)) if np.isfinite([row.std, best.std]).all() else np.nan
                beyond = rise > z * noise if np.isfinite(noise) and noise > 0 else rise > 0.25 * best.fid
                if beyond and (worst is None or rise > worst["rise"]):
                    worst = {"width": int(width), "params": int(row.params), "rise": float(rise),
                             "from_images": int(best.train_images), "from_fid": float(best.fid),
                             "to_images": int(row.train_images), "to_fid": float(row.fid)}
            if best is None or row.fid < best.fid:
                best = row
        if worst:
            out.append(worst)
    return out


def _skip(reason: str) -> dict:
    return {"skipped": True, "reason": reason}


def _labels(pts: pd.DataFrame) -> list[str]:
    return [f"{size_label(r.params)} at {int(r.train_images):,} images" for r in pts.itertuples()]


def _fit(law: str, xs: dict[str, np.ndarray], cols: dict[str, str], y: np.ndarray,
         y_col: str, n_boot: int, seed: int, derived: dict | None, progress: bool,
         pts: pd.DataFrame, sd: np.ndarray) -> dict:
    out = bootstrap_fit(get_law(law), list(xs.values()), y, n_boot=n_boot, seed=seed,
                        derived=derived, progress=progress, sd=sd, labels=_labels(pts))
    out.update(variables=cols, y=y_col, skipped=False)
    return out


def fit_training(pts: pd.DataFrame, n_boot: int = 200, seed: int = 0,
                 progress: bool = False) -> dict:
    """All training-compute fits, each with bootstrap intervals or a skip reason."""
    fits: dict = {"per_size": {}}
    pts = pts.assign(noise=point_noise(pts))
    for width, g in pts.groupby("width"):
        label = size_label(g["params"].iloc[0])
        if g["train_flops"].nunique() < MIN_POWER:
            fits["per_size"][str(width)] = _skip(
                f"{label}: {g['train_flops'].nunique()} training budget(s), the power law "
                f"needs >= {MIN_POWER} (more than its 3 parameters): add train.milestones")
            continue
        top = float(g["train_flops"].max())
        fits["per_size"][str(width)] = _fit(
            "power", {"x": g["train_flops"].values}, {"x": "train_flops"}, g["fid"].values,
            "fid", n_boot, seed, {"fid_at_10x_compute": lambda p, t=top: p["E"] + p["A"] * (
                10 * t) ** -p["alpha"]}, progress, g, g["noise"].values)
        fits["per_size"][str(width)]["label"] = label
    env = pts[pts["envelope"]]
    fits["envelope"] = (_skip(f"{len(env)} compute-optimal point(s), need >= {MIN_POWER}")
                        if len(env) < MIN_POWER else _fit(
        "power", {"x": env["train_flops"].values}, {"x": "train_flops"}, env["fid"].values,
        "fid", n_boot, seed, None, progress, env, env["noise"].values))
    fits["optimal_size"] = _optimal_size(env, n_boot, seed, progress, pts["params"].unique())
    fits["chinchilla"] = _joint(pts, n_boot, seed, progress)
    fits["regressions"] = regressions(pts)
    return fits


def _optimal_size(env: pd.DataFrame, n_boot: int, seed: int, progress: bool, ladder: np.ndarray) -> dict:
    # N_opt from the envelope: the size on the frontier at each compute it was evaluated.
    if len(env) < MIN_OPT or env["params"].nunique() < 2:
        return _skip(f"{len(env)} compute-optimal point(s) over {env['params'].nunique()} "
                     f"size(s): N_opt = k C^a needs >= {MIN_OPT} points and >= 2 sizes")
    top = float(env["train_flops"].max())
    # The noise of a compute-optimal size is the ladder's: the best size at a compute lies anywhere within
    # half a rung of the rung that won, uniform in log size, sd = rung / sqrt(12) (median rung, in log).
    rung = float(np.median(np.diff(np.log(np.sort(ladder)))))
    n = env["params"].values.astype(float)
    return _fit("optimal_size", {"C": env["train_flops"].values}, {"C": "train_flops"}, n, "params",
                n_boot, seed, {"n_opt_at_10x_compute": lambda p: p["k"] * (10 * top) ** p["a"]}, progress,
                env, n * rung / np.sqrt(12))


def _joint(pts: pd.DataFrame, n_boot: int, seed: int, progress: bool) -> dict:
    n_sizes, n_budgets = pts["params"].nunique(), pts["train_images"].nunique()
    if len(pts) < MIN_JOINT or n_sizes < 2 or n_budgets < 2:
        return _skip(f"{len(pts)} point(s), {n_sizes} size(s), {n_budgets} budget(s): the joint "
                     f"law needs >= {MIN_JOINT} points, >= 2 sizes and >= 2 budgets")
    # FLOPs per parameter per image, to turn a compute budget C into N x D (C = c N D);
    # it varies across the UNet ladder, so the mean is an approximation (stated in the JSON).
    c = float(np.mean(pts["train_flops"] / (pts["params"] * pts["train_images"])))
    top = float(pts["train_flops"].max())

    def _n_opt(p: dict[str, float], compute: float = top) -> float:
        # Chinchilla eq. 4: N_opt = G (C/c)^(beta/(alpha+beta)), G = (alpha A / beta B)^(1/(a+b))
        s = p["alpha"] + p["beta"]
        g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / s)
        return g * (compute / c) ** (p["beta"] / s)

    out = _fit("chinchilla", {"N": pts["params"].values.astype(float),
                              "D": pts["train_images"].values.astype(float)},
               {"N": "params", "D": "train_images"}, pts["fid"].values, "fid", n_boot, seed,
               {"n_opt_exponent": lambda p: p["beta"] / (p["alpha"] + p["beta"]),
                "d_opt_exponent": lambda p: p["alpha"] / (p["alpha"] + p["beta"]),
                "n_opt_at_max_compute": _n_opt}, progress, pts, pts["noise"].values)
    out["flops_per_param_image"] = c
    out["max_compute"] = top
    if "alpha" in (out.get("at_bound") or {}):
        out["evidence"] = {"alpha": size_tie_evidence(pts)}
    return out


def size_tie_evidence(pts: pd.DataFrame) -> str:
    """Why the points leave the joint law's size exponent open, in their own numbers: each size's FID at the
    largest training budget every size reached (with its 95 % noise), and whether the largest size beats the
    smallest there beyond it."""
    shared = pts.groupby("train_images")["params"].nunique()
    shared = shared[shared == pts["params"].nunique()]
    if shared.empty:
        return "no training budget holds every size, so no size comparison at equal data"
    d = int(shared.index.max())
    at = pts[pts["train_images"] == d].groupby("params").agg(fid=("fid", "mean"), sd=("noise", "max")).sort_index()
    fids = ", ".join(f"{size_label(n)} {r.fid:.3g} ± {1.96 * r.sd:.2g}" for n, r in at.iterrows())
    small, large = at.iloc[0], at.iloc[-1]
    gap, noise = small.fid - large.fid, 1.96 * float(np.hypot(small.sd, large.sd))
    verdict = (f"the largest beats the smallest by {gap:.3g} ± {noise:.2g}" if gap > noise else
               f"the largest does not beat the smallest beyond noise ({gap:.3g} ± {noise:.2g}), so the size term has "
               f"nothing to fit")
    return f"at {d:,} training images FID is {fids} (95 % noise): {verdict}"
