"""4x super-resolution fine-tuned from every base (size, seed), with the SD x4 upscaler's conditioning: the
widened UNet and its loss (model.py), LR/HR pairs (data.py), the setup shared by training and evaluation
(setup.py), the evaluator (evaluator.py) and the config section (config.py)."""

from __future__ import annotations

from study.experiments.spec import ExperimentSpec
from study.experiments.superres.config import inputs, train_overrides, validate


def _evaluator(cfg, prepared_dir):
    from study.experiments.superres.evaluator import load_superres_evaluator

    return load_superres_evaluator(cfg, prepared_dir)


SPEC = ExperimentSpec(name="superres", task="superres4x", after=("base",), section="superres", validate=validate,
                      evaluator=_evaluator, train=train_overrides, inputs=inputs)
