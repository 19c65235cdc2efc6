"""Read the tidy results table and reduce it to cells at their best guidance.

A cell is (width, seed, train_images, sampler, steps, timestep_spacing); the table holds
one row per guidance tried in it. Curves are cells averaged over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("width", "params", "normalized_cost", "train_images", "train_flops", "sampler",
            "steps", "guidance", "fid")
# Metric name -> True when lower is better (FID), False when higher is (alignment score).
LOWER_IS_BETTER = {"fid": True, "kid": True, "alignment": False}
METRIC_LABEL = {"fid": "FID", "kid": "KID", "alignment": "alignment score"}


def results_path(run_dir: str | Path) -> Path:
    """RUN_DIR/results.parquet, else RUN_DIR/results.csv; ValueError when neither exists."""
    run = Path(run_dir)
    for name in ("results.parquet", "results.csv"):
        if (run / name).is_file():
            return run / name
    raise ValueError(f"no results table in {run}: expected results.parquet or results.csv "
                     "(run the sweep first, or pass the folder that holds it)")


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


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """Load and normalise a run folder's results table (defaults for optional columns)."""
    df = read_table(results_path(run_dir)).copy()
    require_columns(df, REQUIRED, "the results table")
    if df.empty or not np.isfinite(pd.to_numeric(df["fid"], errors="coerce")).any():
        raise ValueError("the results table has no rows with a finite fid: run (or finish) an "
                         "evaluation first")
    if "seed" not in df:
        df["seed"] = 0
    if "timestep_spacing" not in df:
        df["timestep_spacing"] = ""
    df["timestep_spacing"] = df["timestep_spacing"].fillna("").astype(str)
    df["sampler"] = df["sampler"].astype(str)
    if "sampling_cost" not in df or df["sampling_cost"].isna().any():
        df["sampling_cost"] = df["normalized_cost"] * df["steps"]  # paper: cost = nc x steps
    # One spacing per sampler keeps the sampler's name; several become separate curves.
    n_spacing = df.groupby("sampler")["timestep_spacing"].transform("nunique")
    df["curve"] = np.where(n_spacing > 1, df["sampler"] + "/" + df["timestep_spacing"],
                           df["sampler"])
    return df


CELL = ["width", "seed", "train_images", "curve", "steps"]


def cells(df: pd.DataFrame, metric: str = "fid") -> pd.DataFrame:
    """One row per cell at its FID-best guidance, with `metric` and its noise there.

    Every metric is read at the FID-best guidance (the row the sweep marks `best`): the
    guidance search optimises FID, and one operating point per cell keeps FID and
    alignment comparable (maximising alignment alone would always pick the top scale).
    """
    if metric not in df or df[metric].isna().all():
        return pd.DataFrame()
    d = df[df["fid"].notna() & df[metric].notna()]
    best = d.loc[d.groupby(CELL)["fid"].idxmin().values]
    std_col = f"{metric}_std"
    out = best[CELL + ["params", "normalized_cost", "train_flops", "sampling_cost",
                       "guidance"]].copy()
    out["value"] = best[metric].astype(float).values
    out["std"] = best[std_col].astype(float).values if std_col in best else np.nan
    out["floor"] = (best["fid_floor"].astype(float).values
                    if "fid_floor" in best and metric == "fid" else np.nan)
    return out.reset_index(drop=True)


def curves(cell_df: pd.DataFrame) -> pd.DataFrame:
    """Average cells over seeds: the curve points, with seed spread and evaluation noise."""
    keys = ["width", "train_images", "curve", "steps"]
    g = cell_df.groupby(keys)
    out = g.agg(params=("params", "first"), normalized_cost=("normalized_cost", "first"),
                train_flops=("train_flops", "mean"), sampling_cost=("sampling_cost", "mean"),
                guidance=("guidance", "mean"), value=("value", "mean"),
                seed_sd=("value", "std"), n_seeds=("seed", "nunique"),
                floor=("floor", "mean")).reset_index()
    # Noise of a mean of independent evaluations: sqrt(sum var) / n.
    var = cell_df.assign(v=cell_df["std"] ** 2).groupby(keys)["v"]
    out["std"] = (np.sqrt(var.sum(min_count=1)) / g.size()).values
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
