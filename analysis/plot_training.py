"""Figure: FID against training compute per size, with the fitted laws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import floor_line, legend_by_size, new_figure, save, size_colors
from analysis.laws import get_law
from analysis.table import size_label


def _values(fit: dict) -> dict[str, float]:
    return {k: v["value"] for k, v in fit["params"].items()}


def plot_training(pts: pd.DataFrame, fits: dict, ref: dict, out_dir: str | Path,
                  floor: float = float("nan")) -> dict[str, str]:
    """FID vs training FLOPs per size, per-size power fits and the compute-optimal envelope."""
    fig, (ax,) = new_figure(1, panel_size=(7.0, 4.8))
    colors = size_colors(pts["params"])
    power = get_law("power")
    for width, g in pts.groupby("width"):
        p = float(g["params"].iloc[0])
        ax.errorbar(g["train_flops"], g["fid"], yerr=g["std"].fillna(0.0), fmt="o",
                    color=colors[p], label=size_label(p), capsize=2)
        fit = fits["per_size"].get(str(width), {})
        if not fit.get("skipped", True):
            x = np.geomspace(g["train_flops"].min(), g["train_flops"].max() * 3, 100)
            ax.plot(x, power.predict(_values(fit), {"x": x}), color=colors[p], linewidth=1.2)
    env = pts[pts["envelope"]]
    ax.plot(env["train_flops"], env["fid"], "s", markerfacecolor="none", markeredgecolor="k",
            markersize=10, label="compute-optimal points")
    if not fits["envelope"].get("skipped", True):
        v = _values(fits["envelope"])
        x = np.geomspace(pts["train_flops"].min(), pts["train_flops"].max() * 3, 100)
        ax.plot(x, power.predict(v, {"x": x}), "k--", linewidth=1.5,
                label=f"envelope fit: {v['E']:.3g} + {v['A']:.3g} C^-{v['alpha']:.3f}")
    floor_line(ax, floor)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 3 x forward FLOPs x images)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(f"Quality vs training compute ({ref['sampler']}, {ref['steps']} steps, "
                 "best guidance)\nlines: E + A C^-alpha fitted per size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    legend_by_size(ax)
    return save(fig, out_dir, "fid_vs_training_compute")
