"""Writing the one tidy results table of a study: RUN_DIR/results.parquet (+ results.csv), one row per evaluation.

The table's contract (columns, keys, the best guidance of a cell, what a sample costs) lives in study.results;
this module reads and writes the file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.atomic import write_atomic
from study.results import CELL, COLUMNS, DEFAULTS, FIELDS, KEY, TABLE_CSV, mark_best, results_path


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """The run's table (empty, with the columns, when nothing is evaluated yet)."""
    path = results_path(run_dir)
    if not path.exists():
        return pd.DataFrame(columns=FIELDS)
    df = pd.read_parquet(path)
    for col, value in DEFAULTS.items():
        if col not in df.columns:
            df[col] = value
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
    write_atomic(run_dir / TABLE_CSV, lambda f: df.to_csv(f, index=False), binary=False)
    return df
