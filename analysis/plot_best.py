"""Figure: the best model size at each sampling budget, a band along the cost axis per sampler,
with stretches where sizes are within noise of each other drawn as ties, not as flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from analysis.figures import new_figure, save, size_colors
from analysis.inference import FINAL, InferenceResult
from analysis.plot_inference import _log_cost_axis, cost_label
from analysis.table import size_label

SURE = 0.8  # a budget whose best size wins in fewer resamples than this is a tie within noise


def best_segments(best: pd.DataFrame, top_cost: float) -> list[dict]:
    """Cost ranges of one sampler's best-size table: {from, to, params: [sizes], tied, label}.

    Where the analysis lists the sizes tied with the best (`tied_widths`, within noise), a run of
    budgets with the same tie set is one segment. Without that column, a run of budgets whose winner
    is not sure (p_best < SURE) is one tied segment naming every size that wins somewhere in it.
    """
    rows = best.sort_values("cost_budget")
    segs: list[dict] = []
    for r in rows.itertuples():
        if "tied_widths" in rows:
            members = [int(w) for w in str(r.tied_widths).split(";") if w] or [int(r.width)]
            tied = len(members) > 1
            same = bool(segs) and segs[-1]["widths"] == members
        else:
            p_best = getattr(r, "p_best", np.nan)
            tied = bool(np.isfinite(p_best) and p_best < SURE)
            members = [int(r.width)]
            same = bool(segs) and segs[-1]["tied"] == tied and (tied or segs[-1]["widths"] == members)
        if same:
            segs[-1]["widths"] = sorted(set(segs[-1]["widths"]) | set(members))
            continue
        if segs:
            segs[-1]["to"] = float(r.cost_budget)
        segs.append({"from": float(r.cost_budget), "to": None, "widths": members, "tied": tied})
    if segs:
        segs[-1]["to"] = max(top_cost, segs[-1]["from"] * 1.05)
    return segs


def _sizes(segs: list[dict], curve: pd.DataFrame) -> list[dict]:
    """Each segment's tied sizes as parameter counts, smallest first, and its label."""
    params = curve.groupby("width")["params"].first()
    for s in segs:
        s["params"] = sorted(int(params[w]) for w in s["widths"] if w in params.index)
        s["label"] = " ~ ".join(size_label(p) for p in s["params"])
    return segs


def segment_table(res: InferenceResult) -> pd.DataFrame:
    """The bands of the figure as a table: sampler, from_cost, to_cost, best size(s), tied."""
    best = res.best_size[res.best_size["budget"] == FINAL]
    cur = res.curves[res.curves["budget"] == FINAL]
    rows = []
    for sampler, g in best.groupby("sampler", sort=False):
        top = float(cur.loc[cur["sampler"] == sampler, "sampling_cost"].max())
        for s in _sizes(best_segments(g, top), cur[cur["sampler"] == sampler]):
            rows.append({"sampler": sampler, "from_cost": s["from"], "to_cost": s["to"],
                         "best": s["label"], "tied": s["tied"]})
    return pd.DataFrame(rows, columns=["sampler", "from_cost", "to_cost", "best", "tied"])


def plot_best_size(res: InferenceResult, out_dir: str | Path, name: str = "best_size_per_budget"
                   ) -> dict[str, str]:
    """One horizontal band per sampler: which size is best at each sampling cost."""
    best = res.best_size[res.best_size["budget"] == FINAL]
    cur = res.curves[res.curves["budget"] == FINAL]
    samplers = list(pd.unique(best["sampler"]))
    fig, (ax,) = new_figure(1, panel_size=(7.0, 0.9 + 0.55 * max(len(samplers), 1)))
    colors = size_colors(cur["params"])
    bands = []
    for y, sampler in enumerate(samplers):
        top = float(cur.loc[cur["sampler"] == sampler, "sampling_cost"].max())
        for s in _sizes(best_segments(best[best["sampler"] == sampler], top), cur[cur["sampler"] == sampler]):
            width = s["to"] - s["from"]
            k = len(s["params"])
            for i, p in enumerate(s["params"]):  # a tie: the tied sizes' colours stacked in the band
                ax.barh(y - 0.35 + 0.7 * i / k, width, left=s["from"], height=0.7 / k, align="edge",
                        color=colors[float(p)], hatch="//" if s["tied"] else None,
                        edgecolor="white", linewidth=0.5)
            bands.append((y, s))
    _log_cost_axis(ax)
    lo, hi = ax.get_xlim()
    inches = ax.get_position().width * fig.get_figwidth()
    for y, s in bands:
        # Label a band only where the label fits in it (about 0.065 inch per character at 7 pt);
        # the table beside the figure names every band anyway.
        if np.log(s["to"] / s["from"]) / np.log(hi / lo) * inches > 0.065 * len(s["label"]):
            ax.text(np.sqrt(s["from"] * s["to"]), y, s["label"], ha="center", va="center", fontsize=7,
                    color="white", fontweight="bold", clip_on=True)
    ax.set_yticks(range(len(samplers)), samplers)
    ax.set_ylim(len(samplers) - 0.5, -0.5)
    ax.set_xlabel(cost_label(cur), fontsize=8)
    ax.set_title("best model size at each sampling budget (final checkpoints; hatched: tied within "
                 "noise)", fontsize=9)
    handles = [Patch(color=colors[p], label=size_label(p)) for p in sorted(colors)]
    ax.legend(handles=handles, title="parameters", fontsize=7, title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, out_dir, name)
