"""The results table's contract: its columns, its keys, the best guidance of a cell, what a sample costs.

One row per evaluation in RUN_DIR/results.parquet (and results.csv beside it for people). The sweeps write the
table through sweeps.results, the analysis reads it through analysis.table; both take every definition from
here, and this is the only module of the core library that the analysis imports. It imports nothing else of
this project (a leaf), so it stays cheap to import and cannot pull a layer in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

TABLE = "results.parquet"  # the source of truth
TABLE_CSV = "results.csv"  # a copy for people and spreadsheets


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
    sampling_cost: float  # the paper's: normalized cost x steps (a guided step counts once): sampling_cost()
    unet_calls: int  # UNet evaluations per sample: unet_calls()
    fid: float
    kid: float | None
    alignment: float | None
    num_samples: int
    seed: int
    checkpoint: str
    config_hash: str  # study.identity.training_hash: what the checkpoint's training computed
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
    # The same checkpoint's weights in another form (e.g. "sigma-0.080": a post-hoc EMA length); "" for the
    # checkpoint as trained.
    variant: str = ""


FIELDS = [f.name for f in fields(ResultRow)]
# The columns every row has, in order (extra columns may follow).
COLUMNS = FIELDS[: FIELDS.index("best") + 1]
EXTRA = FIELDS[len(COLUMNS):]
# One row per (cell, Optuna trial): a resume that re-reports a trial replaces its row, never duplicates it.
KEY = ["optuna_study", "optuna_trial"]
# A cell: one model checkpoint evaluated with one sampler at one step count (and one timestep spacing).
CELL = ["experiment", "width", "seed", "train_images", "variant", "sampler", "steps", "timestep_spacing"]
# Tables written before experiments (and variants) existed hold only the base experiment's checkpoints as trained.
DEFAULTS = {"experiment": "base", "task": "text2image", "variant": ""}
BASE = "base"


def sampling_cost(normalized_cost, steps):
    """The paper's sampling cost: normalized cost x sampling steps (arXiv 2404.01367, Sec. 3).

    The paper counts one UNet evaluation per step; with classifier-free guidance the batch doubles, for
    every size alike, so the ranking of sizes at a cost does not change. `unet_calls` is the fair axis when
    distilled (unguided) and guided models are compared. Works on scalars and on columns alike."""
    if np.ndim(normalized_cost) == 0 and np.ndim(steps) == 0:
        return float(normalized_cost) * int(steps)
    return np.asarray(normalized_cost, dtype=float) * np.asarray(steps, dtype=float)


def unet_calls(steps, guidance, guidance_embedded=False):
    """UNet evaluations per sample: 2 per step with classifier-free guidance, 1 otherwise (guidance 1, or a
    distilled UNet that takes the scale as an input): the rule of StableDiffusionPipeline. Scalars or columns."""
    guided = (np.asarray(guidance, dtype=float) > 1.0) & ~np.asarray(guidance_embedded, dtype=bool)
    calls = np.asarray(steps, dtype=np.int64) * np.where(guided, 2, 1)
    return int(calls) if np.ndim(calls) == 0 else calls


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
    """Where a run's results table is written: RUN_DIR/results.parquet."""
    return Path(run_dir) / TABLE


def find_table(run_dir: str | Path) -> Path:
    """The table to read in a run folder: results.parquet, else results.csv (a table edited by hand);
    ValueError naming the folder when neither exists."""
    run = Path(run_dir)
    for name in (TABLE, TABLE_CSV):
        if (run / name).is_file():
            return run / name
    raise ValueError(f"no results table in {run}: expected {TABLE} or {TABLE_CSV} "
                     "(run the sweep first, or pass the folder that holds it)")


def with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """A table with the columns older tables lack filled by rule: experiment and task (the base study),
    sampling_cost and unet_calls (computed as the sweep computes them), best (mark_best)."""
    df = df.copy()
    for col, value in DEFAULTS.items():
        # astype(object) first: a column empty in every row reads from CSV as float64, which refuses a str fill.
        df[col] = df[col].astype(object).fillna(value).astype(str) if col in df else value
    if {"normalized_cost", "steps"} <= set(df.columns):
        rule = sampling_cost(pd.to_numeric(df["normalized_cost"], errors="coerce"),
                             pd.to_numeric(df["steps"], errors="coerce"))
        df["sampling_cost"] = (pd.to_numeric(df["sampling_cost"], errors="coerce").fillna(pd.Series(rule, df.index))
                               if "sampling_cost" in df else rule)
    if {"steps", "guidance"} <= set(df.columns):
        # Older tables lack the column, and evaluators that did not report it wrote 0: the rule, where only
        # distillation rows were unguided by construction (LCM takes w as an input).
        rule = pd.Series(unet_calls(pd.to_numeric(df["steps"], errors="coerce").fillna(0),
                                    pd.to_numeric(df["guidance"], errors="coerce").fillna(1.0),
                                    df["experiment"] == "distillation"), index=df.index)
        calls = pd.to_numeric(df["unet_calls"], errors="coerce") if "unet_calls" in df else rule
        df["unet_calls"] = calls.where(calls > 0, rule)
    if "best" in df:
        # A CSV column with a gap reads as text: "False" must not become True.
        df["best"] = df["best"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    elif "fid" in df:
        df = mark_best(df)
    return df


def objective(df: pd.DataFrame) -> pd.Series:
    """What the guidance search of each row minimised: `objective`, else FID."""
    score = df["objective"].fillna(df["fid"]) if "objective" in df else df["fid"]
    return pd.to_numeric(score, errors="coerce")


def mark_best(df: pd.DataFrame) -> pd.DataFrame:
    """best = the row of each cell with the lowest objective: its optimal guidance (ties: the first row)."""
    df = df.copy()
    df["best"] = False
    if len(df):
        score = objective(df)
        ok = score.notna()
        cell = [c for c in CELL if c in df]
        idx = score[ok].groupby([df.loc[ok, c] for c in cell], dropna=False).idxmin()
        df.loc[idx.values, "best"] = True
    return df
