"""The post-hoc EMA experiment's analysis (EDM2, Karras et al. 2024): each size's held-out loss and FID against the
EMA length (sigma_rel) its final weights were reconstructed at, the best length per size, and whether the order
of the sizes at the training's fixed EMA (`variant` = fixed) survives when each size gets its own best length.

Reads only the results table (experiment = ema). The best length is chosen by the held-out loss, the cheap
signal, and confirmed by FID; the interval of a loss is +-1.96 of its standard error (the evaluation's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import new_figure, save, size_colors
from analysis.findings import num
from analysis.table import size_label
from analysis.verdicts import REPRODUCED, UNRESOLVED, Evidence, claim

EXPERIMENT = "ema"
Z = 1.96


def lengths_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (size, EMA form): sigma_rel (NaN for the fixed EMA), held-out loss and FID with their noise,
    averaged over seeds."""
    rows = table[table["experiment"] == EXPERIMENT].copy()
    if rows.empty:
        return rows
    rows["sigma_rel"] = pd.to_numeric(rows["variant"].str.removeprefix("sigma-"), errors="coerce")
    for col in ("fid", "fid_std", "heldout_loss", "heldout_loss_se", "params"):
        rows[col] = pd.to_numeric(rows.get(col, np.nan), errors="coerce")
    g = rows.groupby(["width", "variant"], dropna=False)
    out = g.agg(params=("params", "first"), sigma_rel=("sigma_rel", "first"), fid=("fid", "mean"),
                fid_std=("fid_std", "mean"), loss=("heldout_loss", "mean"), loss_se=("heldout_loss_se", "mean"),
                n_seeds=("seed", "nunique")).reset_index()
    return out.sort_values(["params", "sigma_rel"], na_position="first").reset_index(drop=True)


def best_table(lengths: pd.DataFrame) -> pd.DataFrame:
    """Per size: the EMA length with the lowest held-out loss, the lengths within noise of it, the FID there, the
    FID-best length, and the fixed EMA's FID and loss."""
    out = []
    for width, g in lengths.groupby("width"):
        swept, fixed = g[g["sigma_rel"].notna()], g[g["sigma_rel"].isna()]
        if swept.empty:
            continue
        b = swept.loc[swept["loss"].idxmin()]
        near = swept[swept["loss"] - Z * np.hypot(swept["loss_se"], b["loss_se"]) <= b["loss"]]
        f = swept.loc[swept["fid"].idxmin()]
        out.append({"width": int(width), "params": float(b["params"]), "best_sigma_rel": float(b["sigma_rel"]),
                    "plausible": sorted(near["sigma_rel"].tolist()), "loss_at_best": float(b["loss"]),
                    "fid_at_best": float(b["fid"]), "fid_best_sigma_rel": float(f["sigma_rel"]),
                    "fixed_fid": float(fixed["fid"].iloc[0]) if len(fixed) else np.nan,
                    "fixed_loss": float(fixed["loss"].iloc[0]) if len(fixed) else np.nan})
    return pd.DataFrame(out)


def _figure(lengths: pd.DataFrame, out: Path) -> str:
    fig, (ax_l, ax_f) = new_figure(2)
    colors = size_colors(lengths["params"].unique())
    for params, g in lengths.groupby("params"):
        swept = g[g["sigma_rel"].notna()].sort_values("sigma_rel")
        for ax, col, err in ((ax_l, "loss", "loss_se"), (ax_f, "fid", "fid_std")):
            ax.errorbar(swept["sigma_rel"], swept[col], yerr=Z * swept[err].fillna(0), marker="o",
                        color=colors[float(params)], label=size_label(params), capsize=2)
            fixed = g[g["sigma_rel"].isna()]
            if len(fixed):
                ax.axhline(float(fixed[col].iloc[0]), color=colors[float(params)], linestyle=":", linewidth=1)
    for ax, label in ((ax_l, "held-out loss"), (ax_f, "FID")):
        ax.set_xlabel("post-hoc EMA length (sigma_rel)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
    ax_l.legend(fontsize=8)
    return save(fig, out, "ema_per_size")["png"]


def analyze(table: pd.DataFrame, out: Path, n_boot: int = 200, seed: int = 0) -> dict:
    """The lengths and best-length tables and their figure; ema_per_size checks EDM2's claim."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = lengths_table(table)
    if lengths.empty:
        return {"title": "Post-hoc EMA per size", "figures": {}, "captions": {}, "tables": {}}
    best = best_table(lengths)
    lengths.to_csv(out / "ema_lengths.csv", index=False)
    best.to_csv(out / "ema_best.csv", index=False)
    return {"title": "Post-hoc EMA: the best EMA length per size", "figures": {"ema_per_size": _figure(lengths, out)},
            "captions": {"ema_per_size": "Held-out loss (left) and FID (right) of each size's final weights against "
                                         "the EMA length reconstructed after training; dotted: the training's fixed "
                                         "EMA. Bars: 95 % of the evaluation noise."},
            "tables": {"lengths": lengths, "best": best}}


def _order(values: dict[int, float], params: dict[int, float]) -> str:
    return " < ".join(size_label(params[w]) for w in sorted(values, key=values.get))


@claim("ema_per_size", EXPERIMENT, "EMA length per size",
       "(Beyond the paper; EDM2, Karras et al. 2024, Fig. 5) The best EMA length differs by model size, so one "
       "fixed EMA for every size biases size comparisons.", "exp_ema")
def ema_per_size(ev: Evidence):
    """Reproduced when two sizes' sets of lengths within noise of their best (by held-out loss) do not overlap."""
    a = ev.analyses.get(EXPERIMENT)
    best = a["tables"].get("best") if a else None
    if best is None or len(best) < 2:
        return None
    params = dict(zip(best["width"], best["params"]))
    found = "best EMA length by held-out loss: " + ", ".join(
        f"{size_label(r.params)} {r.best_sigma_rel:g} (within noise: {', '.join(f'{x:g}' for x in r.plausible)}; "
        f"FID {num(r.fid_at_best)}, {num(r.fixed_fid)} at the fixed EMA)" for r in best.itertuples())
    fixed = dict(zip(best["width"], best["fixed_fid"]))
    own = dict(zip(best["width"], best["fid_at_best"]))
    if all(np.isfinite(list(fixed.values()))):
        same = _order(fixed, params) == _order(own, params)
        found += (f"; FID order at the fixed EMA {_order(fixed, params)}, at each size's best "
                  f"{_order(own, params)}: {'unchanged' if same else 'changed'}")
    sets = [set(p) for p in best["plausible"]]
    disjoint = any(not (x & y) for i, x in enumerate(sets) for y in sets[i + 1:])
    if disjoint:
        return found, REPRODUCED, ""
    return found, UNRESOLVED, ("more held-out samples (eval.heldout_samples) narrow the loss intervals; longer "
                               "training separates the lengths")
