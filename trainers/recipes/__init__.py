"""Recipes: what one training run optimises. The loop (trainers/loop.py) is shared by every experiment:
DeepSpeed under Ray Train, budgets in images, milestones, resume, NaN handling, W&B. A recipe says only
which module is trained (built fresh or derived from a base checkpoint), which batches it sees and its loss.

Each experiment's recipe is the module of its name here (study.experiments.spec), exporting its class as RECIPE;
it is imported only when a run uses it, so a worker loads only the recipe it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class RecipeContext:
    """What a recipe may read: the study config (train section already merged with the experiment's
    overrides), the size and seed, the prepared data, the base checkpoint a derived run starts from."""

    cfg: Any  # study.config.StudyConfig
    width: int
    seed: int
    prepared_dir: Path
    device: torch.device
    init_from: Path | None = None  # a base milestone folder (unet.json + ema.safetensors), or None
    options: dict = field(default_factory=dict)  # the experiment's own config section

    def require_base(self, recipe: str, role: str) -> Path:
        """The base milestone a derived recipe starts from; call it in data(), which the driver runs before any
        worker starts, so a missing base fails at once."""
        if self.init_from is None:
            raise ValueError(f"the {recipe} recipe starts from a trained base model ({role}): pass init_from, a "
                             f"base milestone folder (its experiment takes each base run's final milestone)")
        return self.init_from


class Recipe:
    """The base of every recipe; the defaults are the ones of plain diffusion training."""

    name = "base"

    def data(self, ctx: RecipeContext):
        """The training data: an object with .batch(start, count, device) -> dict of tensors (a pure function
        of the stream position, so a resumed run sees what an uninterrupted one sees) and .geometry."""
        raise NotImplementedError

    def model(self, ctx: RecipeContext) -> torch.nn.Module:
        """The module to train, on the CPU; called after data(), with torch seeded by the run's seed."""
        raise NotImplementedError

    def loss(self, model, batch: dict, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """The scalar loss of one micro-batch; `gen` is seeded by position (noise, timesteps, drops)."""
        raise NotImplementedError

    def after_step(self, model) -> None:
        """Called after every optimizer step (e.g. a target network's EMA update)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors saved with every checkpoint (rank 0) and given back to load_extra_state on resume."""
        return {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what extra_state saved."""


def get_recipe(name: str) -> Recipe:
    """A fresh recipe object of an experiment (trainers/recipes/<name>.py: RECIPE); ValueError naming the known
    experiments otherwise."""
    from study.experiments import spec
    from study.experiments.spec import layer_module

    spec(name)  # ValueError naming the known experiments
    return layer_module(__name__, name, "training recipe").RECIPE()
