"""DreamBooth (Ruiz et al. 2023) on the ladder: the subject data (subject.py), prior-preservation class images and
loss (prior.py), the prepared prompts (prepare.py), the evaluator of subject and prompt fidelity (evaluator.py)
and the config section (config.py). Core: no Ray, no trainer."""

from __future__ import annotations

from study.experiments.dreambooth.config import inputs, train_overrides, validate
from study.experiments.spec import ExperimentSpec


def _evaluator(cfg, prepared_dir):
    from study.experiments.dreambooth.evaluator import load_dreambooth_evaluator

    return load_dreambooth_evaluator(cfg, prepared_dir)


SPEC = ExperimentSpec(name="dreambooth", task="dreambooth", after=("base",), section="dreambooth",
                      validate=validate, evaluator=_evaluator, train=train_overrides, inputs=inputs)
