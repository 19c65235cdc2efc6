"""Figures of the inference budget: quality vs steps, quality vs sampling cost with the
frontier and the crossovers, and the samplers side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import floor_line, legend_by_size, new_figure, save, size_colors
from analysis.inference import FINAL, InferenceResult
from analysis.table import METRIC_LABEL, size_label


def cost_label(curves: pd.DataFrame) -> str:
    """The sampling-cost axis, naming the reference model whose one step costs 1."""
    ref = curves.loc[np.isclose(curves["normalized_cost"], 1.0), "params"] if "normalized_cost" in curves else []
    who = f"the {size_label(float(ref.iloc[0]))} model" if len(ref) else "the reference model"
    return f"sampling cost (normalized cost x steps; 1 = one step of {who})"


def _log_cost_axis(ax) -> None:
    # Cost spans one or two decades: plain numbers read better than 2x10^-1, and minor labels collide.
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    # '%g' keeps 0.05 as 0.05 (a fixed-precision formatter rounded it to 0.1, next to the real 0.1).
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _ylabel(res: InferenceResult) -> str:
    return f"{METRIC_LABEL[res.metric]} ({'lower' if res.lower_is_better else 'higher'} is better)"


def _floor(curve: pd.DataFrame) -> float:
    f = curve["floor"].dropna()
    return float(f.mean()) if len(f) else float("nan")


def _final(res: InferenceResult) -> pd.DataFrame:
    return res.curves[res.curves["budget"] == FINAL]


def plot_steps(res: InferenceResult, out_dir: str | Path) -> dict[str, str]:
    """Metric vs number of sampling steps per size, one panel per sampler."""
    cur = _final(res)
    samplers = list(pd.unique(cur["sampler"]))
    fig, axes = new_figure(len(samplers))
    colors = size_colors(cur["params"])
    for ax, sampler in zip(axes, samplers):
        sub = cur[cur["sampler"] == sampler]
        for _, g in sub.groupby("params"):
            p = float(g["params"].iloc[0])
            ax.errorbar(g["steps"], g["value"], yerr=g["std"].fillna(0.0), marker="o",
                        markersize=3, color=colors[p], label=size_label(p), capsize=2)
        if res.metric == "fid":
            floor_line(ax, _floor(sub))
        ax.set_xscale("log")
        steps = sorted(sub["steps"].unique())
        ax.set_xticks(steps, [str(int(s)) for s in steps], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(_ylabel(res))
        ax.set_title(f"{sampler}: at the FID-best guidance of each cell, final checkpoints",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        legend_by_size(ax)
    return save(fig, out_dir, f"{res.metric}_vs_steps")


def _crossings(ax, res: InferenceResult, sampler: str, sub: pd.DataFrame) -> None:
    cross = res.crossing(FINAL)
    cross = cross[cross["sampler"] == sampler] if len(cross) else cross
    for row in cross.itertuples():
        small = sub[sub["width"] == row.smaller_width].sort_values("sampling_cost")
        y = np.interp(np.log(row.crossover_cost), np.log(small["sampling_cost"]), small["value"])
        xerr = None
        if np.isfinite(row.low):
            xerr = [[max(row.crossover_cost - row.low, 0)], [max(row.high - row.crossover_cost, 0)]]
        ax.errorbar([row.crossover_cost], [y], xerr=xerr, fmt="X", color="crimson",
                    markersize=8, capsize=3, zorder=5)
        ax.annotate(f"{size_label(row.smaller_params)} = {size_label(row.larger_params)}",
                    (row.crossover_cost, y), textcoords="offset points", xytext=(4, 6),
                    fontsize=7, color="crimson")
    if len(cross):
        ax.plot([], [], "X", color="crimson", label="crossover [95% interval]")


def plot_cost(res: InferenceResult, out_dir: str | Path, name: str | None = None) -> dict[str, str]:
    """Metric vs sampling cost per size, frontier across sizes, crossovers marked (file NAME)."""
    cur = _final(res)
    samplers = list(pd.unique(cur["sampler"]))
    fig, axes = new_figure(len(samplers), panel_size=(6.5, 4.6), max_cols=2)
    colors = size_colors(cur["params"])
    for ax, sampler in zip(axes, samplers):
        sub = cur[cur["sampler"] == sampler]
        for _, g in sub.groupby("params"):
            p = float(g["params"].iloc[0])
            ax.plot(g["sampling_cost"], g["value"], marker="o", markersize=3, color=colors[p],
                    label=size_label(p))
        front = res.frontier[(res.frontier["budget"] == FINAL)
                             & (res.frontier["sampler"] == sampler)]
        ax.step(front["sampling_cost"], front["value"], where="post", color="0.2",
                linewidth=2.5, alpha=0.35, label="frontier (best size per budget)")
        _crossings(ax, res, sampler, sub)
        if res.metric == "fid":
            floor_line(ax, _floor(sub))
        _log_cost_axis(ax)
        ax.set_xlabel(cost_label(cur), fontsize=8)
        ax.set_ylabel(_ylabel(res))
        ax.set_title(f"{sampler}: {METRIC_LABEL[res.metric]} vs sampling cost, final "
                     "checkpoints", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        legend_by_size(ax)
    return save(fig, out_dir, name or f"{res.metric}_vs_sampling_cost")


def plot_samplers(res: InferenceResult, out_dir: str | Path) -> dict[str, str]:
    """One panel per size: the samplers' curves against sampling cost."""
    cur = _final(res)
    sizes = sorted(pd.unique(cur["params"]))
    fig, axes = new_figure(len(sizes), panel_size=(4.6, 3.6))
    styles = ["-o", "--s", ":^", "-.D", "-v", "--P"]
    samplers = list(pd.unique(cur["sampler"]))
    for ax, p in zip(axes, sizes):
        sub = cur[cur["params"] == p]
        for k, sampler in enumerate(samplers):
            g = sub[sub["sampler"] == sampler]
            ax.plot(g["sampling_cost"], g["value"], styles[k % len(styles)], markersize=3,
                    label=sampler)
        _log_cost_axis(ax)
        ax.set_xlabel("sampling cost (normalized cost x steps)", fontsize=8)
        ax.set_ylabel(_ylabel(res), fontsize=8)
        ax.set_title(f"{size_label(p)} parameters", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="sampler", fontsize=8, title_fontsize=8)
    return save(fig, out_dir, f"{res.metric}_sampler_comparison")


def plot_overlay(base: InferenceResult, other: InferenceResult, out_dir: str | Path, name: str,
                 label: str) -> dict[str, str]:
    """A derived experiment's curves (solid) over the base models' (dashed, the reference sampler) on one
    sampling-cost axis, with both frontiers: e.g. distilled vs undistilled models at equal cost."""
    b, o = _final(base), _final(other)
    ref = b["sampler"].iloc[0] if len(b) else None
    b = b[b["sampler"] == ref]
    fig, (ax,) = new_figure(1, panel_size=(7.5, 4.8))
    colors = size_colors(np.r_[b["params"].to_numpy(), o["params"].to_numpy()])
    for frame, style, tag in ((b, "--", f"base ({ref})"), (o, "-", label)):
        for p, g in frame.groupby("params"):
            ax.plot(g["sampling_cost"], g["value"], style, marker="o" if style == "-" else None, markersize=3,
                    color=colors[float(p)], label=f"{size_label(p)} {tag}")
    for res, sampler, color, tag in ((base, ref, "0.6", f"base frontier ({ref})"), (other, None, "0.1",
                                                                                   f"{label} frontier")):
        front = res.frontier[res.frontier["budget"] == FINAL]
        if sampler is not None:
            front = front[front["sampler"] == sampler]
        front = front.sort_values("sampling_cost")
        ax.step(front["sampling_cost"], front["value"], where="post", color=color, linewidth=2.5, alpha=0.4,
                label=tag)
    if base.metric == "fid":
        floor_line(ax, _floor(b))
    _log_cost_axis(ax)
    ax.set_xlabel(cost_label(b), fontsize=8)
    ax.set_ylabel(_ylabel(base))
    ax.set_title(f"{label} vs base models at equal sampling cost (final checkpoints)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir, name)
