"""Figure: heat map of the FID-optimal guidance scale over size x steps, per sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import new_figure, save
from analysis.table import size_label


def plot_guidance(guid: pd.DataFrame, out_dir: str | Path) -> dict[str, str]:
    """Optimal guidance per (size, steps) cell at the final checkpoints, one panel per sampler."""
    samplers = list(pd.unique(guid["sampler"]))
    fig, axes = new_figure(len(samplers), panel_size=(5.5, 3.8))
    lo, hi = float(guid["guidance"].min()), float(guid["guidance"].max())
    for ax, sampler in zip(axes, samplers):
        grid = guid[guid["sampler"] == sampler].pivot_table(
            index="params", columns="steps", values="guidance", aggfunc="mean")
        grid = grid.sort_index()
        im = ax.imshow(grid.values, aspect="auto", origin="lower", cmap="magma",
                       vmin=lo, vmax=hi if hi > lo else lo + 1)
        for (i, j), v in np.ndenumerate(grid.values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if v < (lo + hi) / 2 else "black")
        ax.set_xticks(range(grid.shape[1]), [str(int(s)) for s in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [size_label(p) for p in grid.index])
        ax.set_xlabel("sampling steps")
        ax.set_ylabel("model size (parameters)")
        ax.set_title(f"{sampler}: FID-optimal guidance scale", fontsize=10)
        fig.colorbar(im, ax=ax, label="classifier-free guidance scale")
    return save(fig, out_dir, "optimal_guidance_heatmap")
