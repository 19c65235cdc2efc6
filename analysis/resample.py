"""Bootstrap resamples of curves from the evaluation noise and the training seeds.

Each resample draws, for each size, its training seeds with replacement and perturbs every
cell by N(0, std) with std the bootstrap std of that FID over generated samples (`fid_std`);
the curve is then the mean over the drawn seeds, as for the point estimate. One set of
resamples per size is shared by every pair it belongs to, so pairwise results agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["width", "train_images", "curve", "steps"]


def has_noise(cell_df: pd.DataFrame) -> bool:
    """Whether the cells carry any noise estimate: a positive std or several seeds."""
    std = cell_df["std"].to_numpy(dtype=float)
    several = (cell_df.groupby("width")["seed"].nunique() > 1).any()
    return bool(np.any(np.nan_to_num(std) > 0) or several)


def resample_curve(curve: pd.DataFrame, cell_df: pd.DataFrame, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(n_boot, len(curve)) resampled values aligned with the rows of `curve`."""
    out = np.tile(curve["value"].to_numpy(dtype=float), (n_boot, 1))
    pos = curve[KEYS].reset_index(drop=True).reset_index(names="pos")
    located = cell_df.merge(pos, on=KEYS)
    for _, g in located.groupby("width"):
        rows, row_ids = pd.factorize(g["pos"])
        seeds, seed_ids = pd.factorize(g["seed"])
        vals = np.full((len(row_ids), len(seed_ids)), np.nan)  # (points, seeds)
        sds = np.zeros_like(vals)
        vals[rows, seeds] = g["value"].to_numpy(dtype=float)
        sds[rows, seeds] = np.nan_to_num(g["std"].to_numpy(dtype=float))
        n_seeds = vals.shape[1]
        idx = (rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1
               else np.zeros((n_boot, 1), dtype=int))
        draw = vals[:, idx] + rng.standard_normal((vals.shape[0], n_boot, n_seeds)) * sds[:, idx]
        ok = np.isfinite(draw)
        count = ok.sum(axis=-1)
        mean = np.where(ok, draw, 0.0).sum(axis=-1) / np.maximum(count, 1)  # (points, K)
        target = np.asarray(row_ids, dtype=int)
        # A point none of whose drawn seeds evaluated it keeps its point estimate.
        out[:, target] = np.where(count.T > 0, mean.T, out[:, target])
    return out
