"""Evaluators by task: what one evaluation of a checkpoint computes (FID and the task's other metrics).

An evaluator has `evaluate(unet, sampler, steps, guidance) -> dict` returning at least its objective ("fid"
unless the experiment names another), `num_samples` and any metric columns of its task. A task's evaluator is
named by the experiment that introduces it (ExperimentSpec.evaluator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def evaluators() -> dict[str, Callable]:
    """task -> factory(cfg, prepared_dir), from the experiments' specs (study.experiments.SPECS)."""
    from study.experiments import SPECS

    return {s.task: s.evaluator for s in SPECS.values() if s.evaluator is not None}


def make_evaluator(task: str, cfg, prepared_dir: str | Path):
    """The evaluator of a task for a prepared folder; ValueError naming the known tasks otherwise."""
    known = evaluators()
    if task not in known:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(known)}")
    return known[task](cfg, Path(prepared_dir))
