"""The one tidy results table of a study: RUN_DIR/results.parquet (+ results.csv), one row per evaluation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.atomic import write_atomic

# The columns the analysis reads; every row has all of them (extra columns may follow).
COLUMNS = [
    "run_id", "trial_id", "width", "params", "gflops", "normalized_cost", "train_images", "train_flops",
    "train_flops_paper", "sampler", "steps", "timestep_spacing", "guidance", "sampling_cost", "fid", "kid",
    "alignment", "num_samples", "seed", "checkpoint", "config_hash", "version", "best",
]
EXTRA = ["fid_std", "kid_std", "fid_floor", "alignment_metric", "search", "optuna_study", "optuna_trial",
         "sampler_settings", "eval_seconds"]
# One row per (cell, Optuna trial): a resume that re-reports a trial replaces its row, never duplicates it.
KEY = ["optuna_study", "optuna_trial"]
# A cell: one model checkpoint evaluated with one sampler at one step count.
CELL = ["width", "seed", "train_images", "sampler", "steps", "timestep_spacing"]


def results_path(run_dir: str | Path) -> Path:
    """Where a run's results table lives."""
    return Path(run_dir) / "results.parquet"


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """The run's table (empty, with the columns, when nothing is evaluated yet)."""
    path = results_path(run_dir)
    if path.exists():
        return pd.read_parquet(path)
    return pd.DataFrame(columns=COLUMNS + EXTRA)


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """best = the lowest-FID row of each cell (the cell's optimal guidance)."""
    df = df.copy()
    df["best"] = False
    if len(df):
        ok = df["fid"].notna()
        idx = df[ok].groupby(CELL, dropna=False)["fid"].idxmin()
        df.loc[idx.values, "best"] = True
    return df


def upsert_results(run_dir: str | Path, rows: list[dict]) -> pd.DataFrame:
    """Add rows (replacing any with the same key), re-mark the best rows, write parquet and CSV atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    old = read_results(run_dir)
    new = pd.DataFrame(rows)
    missing = [c for c in COLUMNS if c != "best" and c not in new.columns] if len(new) else []
    if missing:
        raise ValueError(f"result rows lack columns {missing}")
    if new.empty:
        df = old
    else:
        df = new if old.empty else pd.concat([old, new], ignore_index=True)
    df = df.drop_duplicates(subset=KEY, keep="last")
    df = mark_best(df).sort_values(CELL + ["guidance"], kind="stable").reset_index(drop=True)
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    write_atomic(results_path(run_dir), lambda f: df.to_parquet(f, index=False))
    write_atomic(run_dir / "results.csv", lambda f: df.to_csv(f, index=False), binary=False)
    return df
