"""Read the tidy results table and reduce it to cells at their best guidance.

A cell is (width, seed, train_images, sampler, steps, timestep_spacing); the table holds
one row per guidance tried in it. Curves are cells averaged over seeds. Rows carry the
`experiment` and `task` they belong to; load_results keeps the base study's rows by default
(the other experiments' modules ask for theirs) and names, then skips or refuses, corrupt rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

# The table's contract (columns, defaults, the best guidance of a cell, sampling cost): the one module of the
# core library the analysis reads.
from study.results import BASE, find_table, with_defaults

REQUIRED = ("width", "params", "normalized_cost", "train_images", "train_flops", "sampler",
            "steps", "guidance", "fid")
# Metric name -> True when lower is better (FID), False when higher is (alignment score).
LOWER_IS_BETTER = {"fid": True, "kid": True, "alignment": False}
METRIC_LABEL = {"fid": "FID", "kid": "KID", "alignment": "alignment score"}
NUMERIC = ("width", "params", "normalized_cost", "train_images", "train_flops", "steps",
           "guidance", "fid")
OPTIONAL_NUMERIC = ("seed", "sampling_cost", "fid_std", "kid", "kid_std", "alignment",
                    "alignment_std", "fid_floor")
LOSS_ONLY_FREE = ("steps", "guidance")  # coordinates a loss-only row may leave empty
MAX_BAD_SHARE = 0.2  # above this share of bad rows the table is refused, not patched


def results_path(run_dir: str | Path) -> Path:
    """The results table of a run folder (study.results.find_table)."""
    return find_table(run_dir)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a parquet or CSV table; ValueError naming the file when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p} does not exist: pass the path of an existing CSV or parquet file")
    try:
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as err:  # pandas raises many types; the user needs one line
        raise ValueError(f"cannot read {p} ({type(err).__name__}): check it is a valid "
                         f"{'parquet' if p.suffix == '.parquet' else 'CSV'} file") from err


def require_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    """ValueError listing the missing columns and the ones present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}: add them "
                         f"(present: {', '.join(map(str, df.columns))})")


def validate(df: pd.DataFrame, source: str = "the results table", numeric: tuple[str, ...] | None = None,
             required: tuple[str, ...] = NUMERIC[:-1]) -> pd.DataFrame:
    """Numeric columns made numeric, rows with a non-numeric value or FID < 0 dropped with a
    warning naming them; ValueError when more than MAX_BAD_SHARE of the rows are bad.

    A missing FID (a cell not evaluated yet) is not bad; a text in a number column, an
    infinite value or a negative FID (FID is a distance) is a corrupt row. `numeric`: the columns
    to check (default: the results table's); `required`: those that cannot be missing either.
    """
    df = df.copy()
    bad = pd.Series(False, index=df.index)
    reasons: dict[int, str] = {}
    # A checkpoint evaluated by its held-out loss alone (analysis.loss.loss_only) has no sampler, steps or guidance.
    loss_only = pd.Series(False, index=df.index)
    if {"fid", "heldout_loss"} <= set(df.columns):
        loss_only = (pd.to_numeric(df["fid"], errors="coerce").isna()
                     & pd.to_numeric(df["heldout_loss"], errors="coerce").notna())
    for col in NUMERIC + OPTIONAL_NUMERIC if numeric is None else numeric:
        if col not in df:
            continue
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        broken = (raw.notna() & num.isna()) | np.isinf(num.astype(float))
        if col in required:  # the grid's coordinates cannot be missing either
            broken |= num.isna() & ~(loss_only & (col in LOSS_ONLY_FREE))
        for i in df.index[broken & ~bad]:
            reasons[i] = f"{col}={raw[i]!r}"
        bad |= broken
        df[col] = num
    negative = df["fid"] < 0 if "fid" in df else pd.Series(False, index=df.index)
    for i in df.index[negative & ~bad]:
        reasons[i] = f"fid={df.at[i, 'fid']:g} < 0"
    bad |= negative.fillna(False)
    if bad.any():
        named = "; ".join(f"row {i}: {r}" for i, r in list(reasons.items())[:5])
        more = f" and {len(reasons) - 5} more" if len(reasons) > 5 else ""
        if bad.mean() > MAX_BAD_SHARE:
            raise ValueError(f"{source}: {int(bad.sum())} of {len(df)} rows are corrupt ({named}"
                             f"{more}): re-run their evaluation or repair the table")
        warnings.warn(f"{source}: skipping {int(bad.sum())} corrupt row(s) ({named}{more})",
                      stacklevel=2)
    return df[~bad]


def load_results(run_dir: str | Path, experiment: str | None = BASE) -> pd.DataFrame:
    """Load, validate and normalise a run folder's results table (defaults for optional
    columns); keep only `experiment`'s rows (None keeps every experiment)."""
    path = results_path(run_dir)
    return normalize(read_table(path), path.name, experiment)


def normalize(df: pd.DataFrame, source: str = "the results table",
              experiment: str | None = BASE) -> pd.DataFrame:
    """A results frame validated, with defaults for optional columns, cut to `experiment`."""
    require_columns(df, REQUIRED, source)
    df = validate(with_defaults(df), source)
    if experiment is not None:
        if not (df["experiment"] == experiment).any():
            raise ValueError(f"the results table has no rows of experiment {experiment!r} (it "
                             f"holds {', '.join(sorted(df['experiment'].unique())) or 'none'}): "
                             "run that experiment's sweep first")
        df = df[df["experiment"] == experiment].reset_index(drop=True)
    if df.empty or not np.isfinite(df["fid"]).any():
        raise ValueError("the results table has no rows with a finite fid: run (or finish) an "
                         "evaluation first")
    if "seed" not in df:
        df["seed"] = 0
    if "timestep_spacing" not in df:
        df["timestep_spacing"] = ""
    df["timestep_spacing"] = df["timestep_spacing"].astype(object).fillna("").astype(str)
    df["sampler"] = df["sampler"].astype(str)
    # One spacing per sampler keeps the sampler's name; several become separate curves.
    n_spacing = df.groupby("sampler")["timestep_spacing"].transform("nunique")
    df["curve"] = np.where(n_spacing > 1, df["sampler"] + "/" + df["timestep_spacing"],
                           df["sampler"])
    return df


CELL = ["width", "seed", "train_images", "curve", "steps"]


def cells(df: pd.DataFrame, metric: str = "fid") -> pd.DataFrame:
    """One row per cell at its best guidance, with `metric` and its noise there.

    Every metric is read at the row the sweep marks `best` (study.results.mark_best: the guidance its search
    found best, by FID unless the experiment searched another objective): one operating point per cell
    keeps FID and alignment comparable (maximising alignment alone would always pick the top scale).
    """
    if metric not in df or df[metric].isna().all():
        return pd.DataFrame()
    best = df[df["best"].astype(bool) & df["fid"].notna() & df[metric].notna()]
    std_col = f"{metric}_std"
    out = best[CELL + ["params", "normalized_cost", "train_flops", "sampling_cost", "unet_calls",
                       "guidance"]].copy()
    out["value"] = best[metric].astype(float).values
    out["std"] = best[std_col].astype(float).values if std_col in best else np.nan
    out["floor"] = (best["fid_floor"].astype(float).values
                    if "fid_floor" in best and metric == "fid" else np.nan)
    if "num_samples" in best:  # the planner weighs a cell by the samples behind it
        out["num_samples"] = pd.to_numeric(best["num_samples"], errors="coerce").values
    for col in ("heldout_loss", "heldout_loss_se"):  # the checkpoint's held-out loss (analysis.loss)
        if col in best:
            out[col] = pd.to_numeric(best[col], errors="coerce").values
    return out.reset_index(drop=True)


def curves(cell_df: pd.DataFrame) -> pd.DataFrame:
    """Average cells over seeds: the curve points, with seed spread and evaluation noise."""
    keys = ["width", "train_images", "curve", "steps"]
    g = cell_df.groupby(keys)
    out = g.agg(params=("params", "first"), normalized_cost=("normalized_cost", "first"),
                train_flops=("train_flops", "mean"), sampling_cost=("sampling_cost", "mean"),
                unet_calls=("unet_calls", "mean"), guidance=("guidance", "mean"), value=("value", "mean"),
                seed_sd=("value", "std"), n_seeds=("seed", "nunique"),
                floor=("floor", "mean")).reset_index()
    # Noise of a mean of independent evaluations: sqrt(sum var) / n.
    var = cell_df.assign(v=cell_df["std"] ** 2).groupby(keys)["v"]
    out["std"] = (np.sqrt(var.sum(min_count=1)) / g.size()).values
    if "num_samples" in cell_df:
        out["num_samples"] = g["num_samples"].mean().values
    return out.sort_values(["curve", "width", "train_images", "sampling_cost"]).reset_index(
        drop=True)


def headline(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep each width's final (largest) training budget: the default headline."""
    final = frame.groupby("width")["train_images"].transform("max")
    return frame[frame["train_images"] == final]


def reference_cell(frame: pd.DataFrame) -> tuple[str, int]:
    """The sampler and step count used for quality vs training compute, chosen from data.

    DDIM when present (the paper's default), else the table's first sampler; then the
    step count evaluated at the most (width, budget) points, ties to the most steps.
    """
    names = list(pd.unique(frame["curve"]))
    sampler = next((n for n in names if n.lower().startswith("ddim")), names[0])
    sub = frame[frame["curve"] == sampler]
    cover = sub[["steps", "width", "train_images"]].drop_duplicates().groupby("steps").size()
    best = cover[cover == cover.max()].index.max()
    return sampler, int(best)


def size_label(params: float) -> str:
    """Parameter count as a legend label: 145e6 -> '145M', 3.5e5 -> '0.35M', 2.2e9 -> '2.2B'."""
    p = float(params)
    return f"{p / 1e9:.3g}B" if p >= 1e9 else f"{p / 1e6:.3g}M"
