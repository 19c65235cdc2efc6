"""Post-hoc EMA per size (Karras et al. 2024): every base size's final weights reconstructed at several EMA
lengths from the snapshots its training stored (study.phema), each scored by its held-out loss and its FID at the
reference cell. Nothing is trained: its checkpoints are the base's, in other forms (the results' `variant`)."""

from __future__ import annotations

from study.experiments.ema.config import validate
from study.experiments.spec import ExperimentSpec

SPEC = ExperimentSpec(name="ema", task="text2image", after=("base",), section="ema", validate=validate, trains=False)
