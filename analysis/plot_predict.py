"""The figure of `study predict`: measured curves of the trained sizes and a width's predicted curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import new_figure, save
from analysis.table import cells, curves, headline, size_label


def plot_prediction(table: pd.DataFrame, result: dict, label: str, out_dir: Path, name: str) -> dict[str, str]:
    """FID against sampling cost: each trained size measured (final budget), the predicted width as a band."""
    fig, (ax,) = new_figure(1)
    pts = headline(curves(cells(table, "fid")))
    pts = pts[pts["curve"] == result["curve"]]
    for width, g in pts.groupby("width"):
        g = g.sort_values("sampling_cost")
        ax.plot(g["sampling_cost"], g["value"], "o-", lw=1.2, ms=3, label=f"{size_label(g['params'].iloc[0])} measured")
    p = result["prediction"]
    ax.plot(p["sampling_cost"], p["fid"], "k--", lw=1.6, label=f"{label} predicted")
    if np.isfinite(p["low"]).any():
        ax.fill_between(p["sampling_cost"], p["low"], p["high"], color="k", alpha=0.15, lw=0,
                        label="95% interval of the law")
    ax.set_xscale("log")
    ax.set_xlabel("sampling cost (normalized cost x steps)")
    ax.set_ylabel("FID")
    ax.set_title(f"predicted {label}, {result['curve']} (joint law; log-RMS {result['rmse_log']:.3f})")
    ax.legend(fontsize=7)
    return save(fig, Path(out_dir), name)
