"""Recipes: what one training run optimises. The loop (trainers/loop.py) is shared by every experiment:
DeepSpeed under Ray Train, budgets in images, milestones, resume, NaN handling, W&B. A recipe says only
which module is trained (built fresh or derived from a base checkpoint), which batches it sees and its loss.

A new recipe is one module in this package and one entry in RECIPES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


def _base() -> Recipe:
    from trainers.recipes.base import BaseRecipe

    return BaseRecipe()


def _distill() -> Recipe:
    from trainers.recipes.distill import DistillRecipe

    return DistillRecipe()


def _dreambooth() -> Recipe:
    from trainers.recipes.dreambooth import DreamBoothRecipe

    return DreamBoothRecipe()


def _superres() -> Recipe:
    from trainers.recipes.superres import SuperResRecipe

    return SuperResRecipe()


# The registry: name -> factory (imported lazily, so a worker loads only the recipe it runs).
RECIPES: dict[str, Callable[[], Recipe]] = {
    "base": _base,
    "distill": _distill,
    "superres": _superres,
    "dreambooth": _dreambooth,
}


def get_recipe(name: str) -> Recipe:
    """A fresh recipe object by name; ValueError naming the known ones otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}: expected one of {sorted(RECIPES)}")
    return RECIPES[name]()
