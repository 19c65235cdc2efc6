"""The held-out denoising loss as the cheap signal: its points per (size, budget), and the map from loss to FID.

Liang et al. (2024) show for diffusion transformers that the pretraining loss tracks FID across sizes and budgets;
if it does here, a budget evaluated by its loss alone (a few forward passes) predicts its FID (thousands of
samples). The map is fitted per curve (sampler) and step count, on each cell's FID at its best guidance, as a
line in log-log (FID = c loss^k), and judged on checkpoints it did not see: leave-one-checkpoint-out errors and
the share of those held-out FIDs inside their 95 % prediction intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.table import cells

MIN_POINTS = 4  # a line and its residual spread need a few more points than parameters


def loss_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (width, train_images): params, train_flops, the held-out loss (mean over seeds) and its
    standard error (evaluation noise of each seed's loss and the seed spread)."""
    if "heldout_loss" not in table or table["heldout_loss"].isna().all():
        return pd.DataFrame()
    ck = table.dropna(subset=["heldout_loss"]).groupby(["width", "seed", "train_images"]).agg(
        params=("params", "first"), train_flops=("train_flops", "first"), loss=("heldout_loss", "first"),
        se=("heldout_loss_se", "first")).reset_index()
    g = ck.groupby(["width", "train_images"])
    out = g.agg(params=("params", "first"), train_flops=("train_flops", "mean"), loss=("loss", "mean"),
                n_seeds=("seed", "nunique")).reset_index()
    # The std of a mean of seeds: their own noise over n, plus the seed spread over sqrt(n).
    noise = np.sqrt(g["se"].apply(lambda s: float(np.sum(np.square(s)))).values) / out["n_seeds"].values
    spread = g["loss"].std().fillna(0.0).values / np.sqrt(out["n_seeds"].values)
    out["std"] = np.hypot(noise, spread)
    return out.sort_values(["params", "train_flops"]).reset_index(drop=True)


def loss_to_fid(table: pd.DataFrame) -> pd.DataFrame:
    """Per (curve, steps): the fit log FID = a + k log loss over the checkpoints that have both, its
    leave-one-checkpoint-out error (RMS of log FID, and relative) and the coverage of its 95 % prediction
    intervals on those held-out checkpoints."""
    if "heldout_loss" not in table or table["heldout_loss"].isna().all():
        return pd.DataFrame()
    c = cells(table.assign(heldout_loss=pd.to_numeric(table["heldout_loss"], errors="coerce")), "fid")
    rows = []
    for (curve, steps), g in c.dropna(subset=["heldout_loss"]).groupby(["curve", "steps"]):
        x, y = np.log(g["heldout_loss"].to_numpy(float)), np.log(g["value"].to_numpy(float))
        if len(x) < MIN_POINTS or np.ptp(x) == 0:
            continue
        fit = _line(x, y)
        errs, inside = [], []
        for i in range(len(x)):
            keep = np.arange(len(x)) != i
            f = _line(x[keep], y[keep])
            pred, half = _predict(f, x[i])
            errs.append(y[i] - pred)
            inside.append(abs(y[i] - pred) <= half)
        errs = np.asarray(errs)
        rows.append({"curve": curve, "steps": int(steps), "n": len(x), "slope": fit["k"], "intercept": fit["a"],
                     "r2": fit["r2"], "loo_rms_log": float(np.sqrt(np.mean(errs ** 2))),
                     "loo_rel_error": float(np.mean(np.abs(np.expm1(errs)))),
                     "loo_coverage": float(np.mean(inside))})
    return pd.DataFrame(rows)


def predict_fid(table: pd.DataFrame, loss: float, curve: str, steps: int) -> dict:
    """FID predicted for a checkpoint known by its held-out loss alone, with its 95 % prediction interval,
    from the (curve, steps) map fitted on every checkpoint that has both."""
    c = cells(table, "fid").dropna(subset=["heldout_loss"])
    g = c[(c["curve"] == curve) & (c["steps"] == steps)]
    if len(g) < MIN_POINTS:
        raise ValueError(f"{len(g)} checkpoint(s) with both a held-out loss and an FID at {curve}, {steps} steps: "
                         f"the loss-to-FID map needs >= {MIN_POINTS}")
    f = _line(np.log(g["heldout_loss"].to_numpy(float)), np.log(g["value"].to_numpy(float)))
    pred, half = _predict(f, float(np.log(loss)))
    return {"fid": float(np.exp(pred)), "low": float(np.exp(pred - half)), "high": float(np.exp(pred + half))}


def _line(x: np.ndarray, y: np.ndarray) -> dict:
    k, a = np.polyfit(x, y, 1)
    resid = y - (a + k * x)
    dof = max(len(x) - 2, 1)
    s2 = float(np.sum(resid ** 2) / dof)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"k": float(k), "a": float(a), "s2": s2, "n": len(x), "xbar": float(x.mean()),
            "sxx": float(np.sum((x - x.mean()) ** 2)), "dof": dof,
            "r2": 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else float("nan")}


def _predict(f: dict, x0: float) -> tuple[float, float]:
    """The line's prediction at x0 and the half-width of its 95 % prediction interval (a new point's)."""
    se = np.sqrt(f["s2"] * (1 + 1 / f["n"] + (x0 - f["xbar"]) ** 2 / f["sxx"]))
    return f["a"] + f["k"] * x0, float(stats.t.ppf(0.975, f["dof"]) * se)
