"""The inference-aware choice (Sardana et al. 2023, arXiv 2401.00448, for diffusion): given how many images
a user will generate, the size, training budget and step count that reach a quality target at the least
total compute, training plus inference, read off the joint law (analysis/predict.py).

    total FLOPs = 3 F(N) D  (training: forward + backward per image seen)
                + M u(s) F(N)  (inference: M images, u(s) UNet calls per image at s steps)

F(N): forward FLOPs per image of width N (the ladder's count); u(s) = s unguided or 2 s with classifier-free
guidance (the paper's guided samplers). The compute-optimal size ignores M; as M grows, the best choice moves
to smaller models sampled with more steps, or trained longer: the counterpart of "bigger is not always better".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.predict import JointFit, fit_joint, require_fit


def recommend(fit: JointFit, sizes: pd.DataFrame, target_fid: float, n_images: float, guided: bool = True,
              steps=None, budgets=None) -> dict:
    """The cheapest (size, training images, steps) predicted to reach target_fid, and the share of bootstrap
    draws of the law in which that choice reaches it. sizes: width, params, gflops (forward, per image)."""
    if not fit.has_budget:
        raise ValueError("the joint law has no training-budget term (the table holds fewer than 3 training "
                         "budgets for this sampler): evaluate the quality-vs-compute cell at more budgets")
    if target_fid <= 0 or n_images < 0:
        raise ValueError(f"target FID {target_fid} and images {n_images}: expected a positive target and a "
                         "non-negative number of images")
    seen = fit.points
    steps = np.arange(1, int(seen["steps"].max()) * 2 + 1) if steps is None else np.asarray(steps)
    d_max = float(seen["train_images"].max())
    budgets = np.geomspace(seen["train_images"].min(), 8 * d_max, 25) if budgets is None else np.asarray(budgets)
    calls = steps * (2 if guided else 1)
    rows = []
    for r in sizes.itertuples():
        f = float(r.gflops) * 1e9
        fid = fit.predict(r.params, steps[None, :], budgets[:, None])  # (budgets, steps)
        ok = fid <= target_fid
        if not ok.any():
            continue
        total = 3 * f * budgets[:, None] + n_images * calls[None, :] * f
        total = np.where(ok, total, np.inf)
        i, j = np.unravel_index(np.argmin(total), total.shape)
        rows.append({"width": int(r.width), "params": float(r.params), "train_images": float(budgets[i]),
                     "steps": int(steps[j]), "predicted_fid": float(fid[i, j]), "train_flops": 3 * f * budgets[i],
                     "inference_flops": n_images * calls[j] * f, "total_flops": float(total[i, j]),
                     "extrapolated": bool(budgets[i] > d_max or steps[j] > seen["steps"].max())})
    if not rows:
        return {"choice": None, "table": pd.DataFrame(), "message": f"no size of the ladder reaches FID {target_fid} "
                "within the budgets and steps searched: relax the target or add larger widths"}
    table = pd.DataFrame(rows).sort_values("total_flops").reset_index(drop=True)
    best = table.iloc[0]
    hits = [fit.predict(best["params"], best["steps"], best["train_images"], t) <= target_fid for t in fit.boot]
    return {"choice": best.to_dict(), "table": table, "p_reach": float(np.mean(hits)) if hits else np.nan}


def recommend_run(table: pd.DataFrame, sizes: pd.DataFrame, target_fid: float, n_images: float,
                  curve: str | None = None, n_boot: int = 100, seed: int = 0) -> dict:
    """`study recommend`: fit the sampler's joint law on a run's table, then recommend for the ladder's sizes."""
    from analysis.predict import _default_curve

    curve = curve or _default_curve(table)
    fit = fit_joint(table, curve, n_boot, seed)
    require_fit(fit)  # a law that misses its cells would recommend from the wrong model
    return {"curve": curve, **recommend(fit, sizes, target_fid, n_images)}
