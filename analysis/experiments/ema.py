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
    """Per size: the EMA length with the lowest held-out loss, the lengths within noise of it, the loss and FID there
    and at the fixed EMA, each with its 95 % interval (+-1.96 of the evaluation's standard error: the held-out
    samples' for the loss, the FID bootstrap over generated samples for FID; not training-seed variance), and the
    FID-best length."""
    out = []
    for width, g in lengths.groupby("width"):
        swept, fixed = g[g["sigma_rel"].notna()], g[g["sigma_rel"].isna()]
        if swept.empty:
            continue
        b = swept.loc[swept["loss"].idxmin()]
        near = swept[swept["loss"] - Z * np.hypot(swept["loss_se"], b["loss_se"]) <= b["loss"]]
        f = swept.loc[swept["fid"].idxmin()]
        fx = fixed.iloc[0] if len(fixed) else pd.Series({"fid": np.nan, "fid_std": np.nan, "loss": np.nan,
                                                         "loss_se": np.nan})
        row = {"width": int(width), "params": float(b["params"]), "best_sigma_rel": float(b["sigma_rel"]),
               "plausible": sorted(near["sigma_rel"].tolist()), "fid_best_sigma_rel": float(f["sigma_rel"])}
        for name, r in (("at_best", b), ("fixed", fx)):
            for col, err, label in (("loss", "loss_se", "loss"), ("fid", "fid_std", "fid")):
                v, e = float(r[col]), float(r[err]) if np.isfinite(r[err]) else np.nan
                key = f"{label}_{name}" if name == "at_best" else f"fixed_{label}"
                row.update({key: v, f"{key}_low": v - Z * e, f"{key}_high": v + Z * e, f"{key}_std": e})
        out.append(row)
    return pd.DataFrame(out)


def comparison_table(best: pd.DataFrame) -> pd.DataFrame:
    """Every pair of sizes: the FID gap (smaller minus larger) at the fixed EMA and at each size's best length, with
    95 % intervals (evaluation noise of both FIDs), and whether the comparison changes: "reversed" when both gaps
    are resolved (their interval excludes 0) with opposite signs, "unchanged" when both are resolved alike,
    otherwise which one is not resolved."""
    rows = []
    b = best.sort_values("params").reset_index(drop=True)
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            s, lg = b.iloc[i], b.iloc[j]
            row = {"smaller": size_label(s["params"]), "larger": size_label(lg["params"])}
            signs = {}
            for name, col in (("fixed EMA", "fixed_fid"), ("each size's best EMA", "fid_at_best")):
                gap = float(s[col] - lg[col])
                half = Z * float(np.hypot(s[f"{col}_std"], lg[f"{col}_std"]))
                row.update({f"gap at {name}": gap, f"low ({name})": gap - half, f"high ({name})": gap + half})
                signs[name] = np.sign(gap) if np.isfinite(half) and abs(gap) > half else 0.0
            f, o = signs["fixed EMA"], signs["each size's best EMA"]
            row["comparison"] = ("reversed" if f * o < 0 else "unchanged" if f == o != 0 else
                                 "not resolved at either EMA" if f == o == 0 else
                                 "resolved at the fixed EMA only" if o == 0 else "resolved at each size's best only")
            rows.append(row)
    return pd.DataFrame(rows)


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
    pairs = comparison_table(best) if "fixed_fid" in best else pd.DataFrame()
    lengths.to_csv(out / "ema_lengths.csv", index=False)
    best.to_csv(out / "ema_best.csv", index=False)
    pairs.to_csv(out / "ema_comparisons.csv", index=False)
    return {"title": "Post-hoc EMA: the best EMA length per size", "figures": {"ema_per_size": _figure(lengths, out)},
            "captions": {"ema_per_size": "Held-out loss (left) and FID (right) of each size's final weights against "
                                         "the EMA length reconstructed after training; dotted: the training's fixed "
                                         "EMA. Bars: 95 % of the evaluation noise."},
            "side": best_view(best),  # the best EMA length per size, beside the figure
            "tables": {"size comparisons at the fixed and at each size's best EMA": pairs, "best": best,
                       "lengths": lengths}}


def best_view(best: pd.DataFrame) -> pd.DataFrame:
    """The best-length table as a reader wants it: each number with its 95 % interval."""
    from analysis.report import interval_text

    def iv(r, key):
        return interval_text(r[key], r[f"{key}_low"], r[f"{key}_high"])
    return pd.DataFrame([{"size": size_label(r["params"]), "best sigma_rel (held-out loss)": r["best_sigma_rel"],
                          "within noise of it": ", ".join(f"{x:g}" for x in r["plausible"]),
                          "loss there [95%]": iv(r, "loss_at_best"), "FID there [95%]": iv(r, "fid_at_best"),
                          "FID-best sigma_rel": r["fid_best_sigma_rel"], "fixed EMA: loss [95%]": iv(r, "fixed_loss"),
                          "fixed EMA: FID [95%]": iv(r, "fixed_fid")} for _, r in best.iterrows()])


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
    pairs = a["tables"].get("size comparisons at the fixed and at each size's best EMA")
    if pairs is not None and len(pairs):
        found += "; FID gaps, fixed EMA vs each size's best (95% intervals of evaluation noise): " + ", ".join(
            f"{r['smaller']} vs {r['larger']} {r['comparison']}" for _, r in pairs.iterrows())
    sets = [set(p) for p in best["plausible"]]
    disjoint = any(not (x & y) for i, x in enumerate(sets) for y in sets[i + 1:])
    if disjoint:
        return found, REPRODUCED, ""
    return found, UNRESOLVED, ("more held-out samples (eval.heldout_samples) narrow the loss intervals; longer "
                               "training separates the lengths")
