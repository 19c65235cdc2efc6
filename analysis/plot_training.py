"""Figure: FID against training compute per size, with the fitted laws that fit their points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis.figures import floor_line, legend_by_size, new_figure, save, size_colors
from analysis.gof import fits as law_fits
from analysis.laws import get_law
from analysis.table import size_label


def _values(fit: dict) -> dict[str, float]:
    return {k: v["value"] for k, v in fit["params"].items()}


def draw_training(ax, pts: pd.DataFrame, fits: dict) -> dict[str, list[str]]:
    """Points per size and the laws that pass their goodness-of-fit test (analysis.gof); a law that does
    not fit is not drawn, and the legend says so. Returns the laws {"drawn": [...], "not_fit": [...]}."""
    colors = size_colors(pts["params"])
    power = get_law("power")
    laws: dict[str, list[str]] = {"drawn": [], "not_fit": []}
    for width, g in pts.groupby("width"):
        p = float(g["params"].iloc[0])
        ax.errorbar(g["train_flops"], g["fid"], yerr=g["std"].fillna(0.0), fmt="o",
                    color=colors[p], label=size_label(p), capsize=2)
        fit = fits["per_size"].get(str(width), {})
        if fit.get("skipped", True):
            continue
        if not law_fits(fit):
            laws["not_fit"].append(size_label(p))
            continue
        x = np.geomspace(g["train_flops"].min(), g["train_flops"].max() * 3, 100)
        ax.plot(x, power.predict(_values(fit), {"x": x}), color=colors[p], linewidth=1.2)
        laws["drawn"].append(size_label(p))
    env = pts[pts["envelope"]]
    ax.plot(env["train_flops"], env["fid"], "s", markerfacecolor="none", markeredgecolor="k",
            markersize=10, label="compute-optimal points")
    envelope = fits["envelope"]
    if not envelope.get("skipped", True) and law_fits(envelope):
        v = _values(envelope)
        x = np.geomspace(pts["train_flops"].min(), pts["train_flops"].max() * 3, 100)
        ax.plot(x, power.predict(v, {"x": x}), "k--", linewidth=1.5,
                label=f"envelope fit: {v['E']:.3g} + {v['A']:.3g} C^-{v['alpha']:.3f}")
        laws["drawn"].append("envelope")
    elif not envelope.get("skipped", True):
        laws["not_fit"].append("envelope")
    if laws["not_fit"]:  # a legend entry without a line: the laws left out, and why
        ax.add_line(Line2D([], [], linestyle="none", label="law does not fit its points, not drawn: "
                           + ", ".join(laws["not_fit"])))
    return laws


def plot_training(pts: pd.DataFrame, fits: dict, ref: dict, out_dir: str | Path,
                  floor: float = float("nan")) -> dict[str, str]:
    """FID vs training FLOPs per size, per-size power fits and the compute-optimal envelope."""
    fig, (ax,) = new_figure(1, panel_size=(7.0, 4.8))
    draw_training(ax, pts, fits)
    floor_line(ax, floor)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 3 x forward FLOPs x images)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(f"Quality vs training compute ({ref['sampler']}, {ref['steps']} steps, "
                 "best guidance)\nlines: E + A C^-alpha per size, drawn where the law fits its points",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    legend_by_size(ax)
    return save(fig, out_dir, "fid_vs_training_compute")
