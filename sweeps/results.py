"""The one tidy results table of a study: RUN_DIR/results.parquet (+ results.csv), one row per evaluation.

results.parquet is the source of truth; results.csv is a copy written beside it for people and spreadsheets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path

import pandas as pd

from study.atomic import write_atomic


@dataclass
class ResultRow:
    """One evaluation: a checkpoint, a sampler, a step count and a guidance scale, with what they cost and
    what they scored. The fields are the table's columns, in order; a task's own metrics (lpips, psnr,
    subject_fidelity, ...) follow them as extra columns."""

    run_id: str
    trial_id: str
    experiment: str  # sweeps.experiments: base, distillation, superres, dreambooth
    task: str  # study.tasks: text2image, superres4x, dreambooth
    width: int
    params: int
    gflops: float
    normalized_cost: float
    train_images: int
    train_flops: float
    train_flops_paper: float
    sampler: str
    steps: int
    timestep_spacing: str
    guidance: float
    sampling_cost: float  # the paper's: normalized cost x steps (a guided step counts once)
    unet_calls: int  # UNet evaluations per sample: 2 per guided step, 1 per unguided or distilled step
    fid: float
    kid: float | None
    alignment: float | None
    num_samples: int
    seed: int
    checkpoint: str
    config_hash: str
    version: str
    best: bool = False  # the objective-best guidance of its cell (mark_best)
    fid_std: float | None = None  # bootstrap over the generated samples: the evaluation noise
    kid_std: float | None = None
    fid_floor: float | None = None
    alignment_metric: str | None = None
    search: str | None = None
    optuna_study: str | None = None
    optuna_trial: int | None = None
    sampler_settings: str | None = None
    eval_seconds: float | None = None
    objective: float | None = None  # what the guidance search minimised (FID unless the experiment says)
    partial: bool = False  # a milestone of a run that stopped before its final budget (failed, NaN)


_FIELDS = [f.name for f in fields(ResultRow)]
# The columns the analysis reads; every row has all of them (extra columns may follow).
COLUMNS = _FIELDS[: _FIELDS.index("best") + 1]
EXTRA = _FIELDS[len(COLUMNS):]
# One row per (cell, Optuna trial): a resume that re-reports a trial replaces its row, never duplicates it.
KEY = ["optuna_study", "optuna_trial"]
# A cell: one model checkpoint evaluated with one sampler at one step count.
CELL = ["experiment", "width", "seed", "train_images", "sampler", "steps", "timestep_spacing"]
# Tables written before experiments existed hold only the base experiment.
DEFAULTS = {"experiment": "base", "task": "text2image"}


def row_dict(row: ResultRow, metrics: dict | None = None) -> dict:
    """The row as the table stores it: the fields, then the task's own numeric metrics and file paths
    (keys ending in _path, e.g. the image grid a DreamBooth row refers to)."""
    # Config choices (study.config.Choice, a str Enum) are stored as their plain string values.
    out = {k: v.value if isinstance(v, Enum) else v for k, v in asdict(row).items()}
    for k, v in (metrics or {}).items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if k not in out and (number or (isinstance(v, str) and k.endswith("_path"))):
            out[k] = v
    return out


def results_path(run_dir: str | Path) -> Path:
    """Where a run's results table lives."""
    return Path(run_dir) / "results.parquet"


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """The run's table (empty, with the columns, when nothing is evaluated yet)."""
    path = results_path(run_dir)
    if not path.exists():
        return pd.DataFrame(columns=_FIELDS)
    df = pd.read_parquet(path)
    for col, value in DEFAULTS.items():
        if col not in df.columns:
            df[col] = value
    return df


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """best = the row of each cell with the lowest objective (FID where a row has none): its optimal guidance."""
    df = df.copy()
    df["best"] = False
    if len(df):
        score = df["objective"].fillna(df["fid"]) if "objective" in df else df["fid"]
        score = pd.to_numeric(score, errors="coerce")
        ok = score.notna()
        idx = score[ok].groupby([df.loc[ok, c] for c in CELL], dropna=False).idxmin()
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
