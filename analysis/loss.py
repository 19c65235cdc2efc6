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

from analysis.gof import goodness_of_fit
from analysis.table import cells, size_label

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


def loss_to_fid(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (curve, steps): the fit log FID = a + k log loss over the checkpoints that have both (k with its 95 %
    interval), its goodness of fit against the cells' own noise (FID's and the loss's, analysis.gof), its
    leave-one-checkpoint-out error (RMS of log FID; mean relative error with a 95 % bootstrap interval over the
    held-out checkpoints) and the coverage of its 95 % prediction intervals on them (with a Wilson interval)."""
    if "heldout_loss" not in table or table["heldout_loss"].isna().all():
        return pd.DataFrame()
    c = cells(table.assign(heldout_loss=pd.to_numeric(table["heldout_loss"], errors="coerce")), "fid")
    rng = np.random.default_rng(seed)
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
        log_errs = np.asarray(errs)
        errs = np.abs(np.expm1(log_errs))  # relative errors of the held-out FIDs
        boot = errs[rng.integers(0, len(errs), (n_boot, len(errs)))].mean(axis=1)
        k_half = float(stats.t.ppf(0.975, fit["dof"]) * np.sqrt(fit["s2"] / fit["sxx"]))
        cov_lo, cov_hi = wilson(int(np.sum(inside)), len(inside))
        gof = _gof(g, fit)
        rows.append({"curve": curve, "steps": int(steps), "n": len(x), "slope": fit["k"],
                     "slope_low": fit["k"] - k_half, "slope_high": fit["k"] + k_half, "intercept": fit["a"],
                     "r2": fit["r2"], "loo_rms_log": float(np.sqrt(np.mean(log_errs ** 2))),
                     "loo_rel_error": float(errs.mean()), "loo_rel_error_low": float(np.percentile(boot, 2.5)),
                     "loo_rel_error_high": float(np.percentile(boot, 97.5)),
                     "loo_coverage": float(np.mean(inside)), "loo_coverage_low": cov_lo, "loo_coverage_high": cov_hi,
                     "fits": gof["fits"], "gof_p": gof["gof_p"], "gof_note": gof["worst"] or gof["reason"]})
    return pd.DataFrame(rows)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95 % interval of a share hits / n (a coverage measured on few checkpoints)."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    mid, half = (p + z * z / (2 * n)), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((mid - half) / (1 + z * z / n)), float((mid + half) / (1 + z * z / n))


def _gof(g: pd.DataFrame, fit: dict) -> dict:
    """The line against each checkpoint's own noise: FID's evaluation noise and the loss's standard error carried
    through the slope, both in log FID."""
    x, fid = np.log(g["heldout_loss"].to_numpy(float)), g["value"].to_numpy(float)
    rel = np.hypot(g["std"].to_numpy(float) / fid,
                   fit["k"] * g["heldout_loss_se"].to_numpy(float) / g["heldout_loss"].to_numpy(float)) \
        if "heldout_loss_se" in g else g["std"].to_numpy(float) / fid
    return goodness_of_fit(lambda t: t[0] + t[1] * x, np.array([fit["a"], fit["k"]]), fid, rel * fid,
                           [f"{size_label(r.params)} at {int(r.train_images):,} images" for r in g.itertuples()])


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


def loss_only(table: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints (width, seed, train_images) evaluated by their held-out loss alone: a finite heldout_loss
    and no finite FID on any of their rows (a budget scored by a few forward passes instead of an FID)."""
    if "heldout_loss" not in table:
        return pd.DataFrame()
    t = table.assign(heldout_loss=pd.to_numeric(table["heldout_loss"], errors="coerce"),
                     fid=pd.to_numeric(table["fid"], errors="coerce"))
    key = ["width", "seed", "train_images"]
    g = t.groupby(key)
    ck = g.agg(params=("params", "first"), normalized_cost=("normalized_cost", "first"),
               train_flops=("train_flops", "first"), heldout_loss=("heldout_loss", "first"),
               heldout_loss_se=("heldout_loss_se", "first") if "heldout_loss_se" in t else ("heldout_loss", "size"),
               has_fid=("fid", lambda v: bool(np.isfinite(v).any()))).reset_index()
    if "heldout_loss_se" not in t:
        ck["heldout_loss_se"] = np.nan
    return ck[~ck["has_fid"] & ck["heldout_loss"].notna()].drop(columns="has_fid").reset_index(drop=True)


def loss_cells(table: pd.DataFrame, curve: str | None = None) -> pd.DataFrame:
    """Cells (as analysis.table.cells shapes them) of the loss-only checkpoints: at every (curve, steps) whose
    loss-to-FID map has >= MIN_POINTS checkpoints, the FID predicted from the checkpoint's loss (predict_fid), its
    95 % prediction interval (low, high) and `std` = FID x the interval's half-width in log / 1.96, so that a fit
    weighs it by its uncertainty as it does an evaluation noise. `from_loss` = True marks them. A checkpoint whose
    loss lies outside the losses the map was fitted on gets no FID: the line is evidence only over its own range
    (steep maps extrapolated a few budgets back predicted FIDs of 10^6)."""
    only = loss_only(table)
    if only.empty:
        return pd.DataFrame()
    c = cells(table, "fid").dropna(subset=["heldout_loss"]) if "heldout_loss" in table else pd.DataFrame()
    if c.empty:
        return pd.DataFrame()
    rows = []
    for (cv, steps), g in c.groupby(["curve", "steps"]):
        if (curve is not None and cv != curve) or len(g) < MIN_POINTS:
            continue
        spacing = g["timestep_spacing"].iloc[0] if "timestep_spacing" in g else ""
        seen = g["heldout_loss"].to_numpy(float)
        f = _line(np.log(seen), np.log(g["value"].to_numpy(float)))
        for r in only.itertuples():
            if not seen.min() <= r.heldout_loss <= seen.max():
                continue
            pred, half = _predict(f, float(np.log(r.heldout_loss)))  # as predict_fid, the map fitted once
            p = {"fid": float(np.exp(pred)), "low": float(np.exp(pred - half)), "high": float(np.exp(pred + half))}
            rows.append({"width": r.width, "seed": r.seed, "train_images": r.train_images, "curve": cv,
                         "steps": int(steps), "timestep_spacing": spacing, "params": r.params,
                         "normalized_cost": r.normalized_cost, "train_flops": r.train_flops,
                         "sampling_cost": r.normalized_cost * steps, "unet_calls": np.nan, "guidance": np.nan,
                         "value": p["fid"], "low": p["low"], "high": p["high"], "std": p["fid"] * half / 1.96,
                         "floor": np.nan, "heldout_loss": r.heldout_loss, "heldout_loss_se": r.heldout_loss_se,
                         "from_loss": True})
    return pd.DataFrame(rows)
