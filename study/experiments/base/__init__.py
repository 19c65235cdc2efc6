"""The base experiment: the ladder itself, every (size, seed) trained from scratch with milestones at every
training budget, scored by the text-to-image evaluator (study.evaluator: FID and alignment)."""

from __future__ import annotations

from study.experiments.spec import ExperimentSpec


def _evaluator(cfg, prepared_dir):
    from study.evaluator import load_evaluator

    return load_evaluator(cfg, prepared_dir)


SPEC = ExperimentSpec(name="base", task="text2image", evaluator=_evaluator)
