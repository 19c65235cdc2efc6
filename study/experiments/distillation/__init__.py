"""Latent consistency distillation of every base (size, seed) to a few-step student: the student's surgery
(student.py), the LCD loss (lcd.py) and the config section (config.py). Scored by the text-to-image evaluator."""

from __future__ import annotations

from study.experiments.distillation.config import train_overrides, validate
from study.experiments.spec import ExperimentSpec

SPEC = ExperimentSpec(name="distillation", task="text2image", after=("base",), section="distill", validate=validate,
                      train=train_overrides)
