"""Evaluators by task: what one evaluation of a checkpoint computes (FID and the task's other metrics).

An evaluator has `evaluate(unet, sampler, steps, guidance) -> dict` returning at least its objective ("fid"
unless the experiment names another), `num_samples` and any metric columns of its task. A new task is one
entry in EVALUATORS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def _text2image(cfg, prepared_dir: Path):
    from study.evaluator import load_evaluator

    return load_evaluator(cfg, prepared_dir)


def _dreambooth(cfg, prepared_dir: Path):
    from study.dreambooth.evaluator import load_dreambooth_evaluator

    return load_dreambooth_evaluator(cfg, prepared_dir)


def _superres4x(cfg, prepared_dir: Path):
    from study.superres_eval import load_superres_evaluator

    return load_superres_evaluator(cfg, prepared_dir)


# The registry: task -> factory(cfg, prepared_dir) (imported lazily: a worker loads only what it evaluates).
EVALUATORS: dict[str, Callable] = {
    "text2image": _text2image,
    "superres4x": _superres4x,
    "dreambooth": _dreambooth,
}


def make_evaluator(task: str, cfg, prepared_dir: str | Path):
    """The evaluator of a task for a prepared folder; ValueError naming the known tasks otherwise."""
    if task not in EVALUATORS:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(EVALUATORS)}")
    return EVALUATORS[task](cfg, Path(prepared_dir))
