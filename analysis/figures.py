"""Shared figure plumbing: pyplot-free figures, PNG + SVG output, one colour per size.

Figures are built as `matplotlib.figure.Figure` objects and never registered with pyplot,
so no global state (current figure, rcParams changes) leaks between figures or into a
caller's session, and nothing needs closing; the Agg canvas renders them headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib import colormaps

DPI = 120


def new_figure(n_panels: int = 1, panel_size: tuple[float, float] = (5.5, 4.2),
               max_cols: int = 3) -> tuple[Figure, list]:
    """A figure with n_panels axes on a grid (flattened list), on an Agg canvas."""
    cols = min(n_panels, max_cols)
    rows = int(np.ceil(n_panels / cols))
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save(fig: Figure, out_dir: str | Path, name: str) -> dict[str, str]:
    """Write the figure as NAME.png and NAME.svg; return both paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in ("png", "svg"):
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=DPI)
        paths[fmt] = str(path)
        # The first save laid the figure out; freezing it halves the cost of the second.
        fig.set_layout_engine("none")
    return paths


def size_colors(params: list[float] | np.ndarray) -> dict[float, tuple]:
    """A colour per parameter count, small (dark) to large (bright) on viridis."""
    sizes = sorted(set(float(p) for p in params))
    cmap = colormaps["viridis"]
    pos = np.linspace(0.0, 0.85, len(sizes)) if len(sizes) > 1 else [0.4]
    return {p: cmap(x) for p, x in zip(sizes, pos)}


def legend_by_size(ax, title: str = "parameters") -> None:
    """Legend whose size entries read '145M', sorted by size, extras kept after them."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, fontsize=8, title_fontsize=8)


def floor_line(ax, floor: float) -> None:
    """Horizontal line at the real-vs-real FID: differences below it are noise."""
    if np.isfinite(floor):
        ax.axhline(floor, color="0.4", linestyle=":", linewidth=1.2,
                   label=f"noise floor (real vs real) {floor:.2f}")
