"""Latent consistency distillation of a base checkpoint: the distillation experiment's recipe.

The data is the base's (prepared latents and captions, the same position-keyed order); the module trained is
the guidance-embedded student (study.experiments.distillation.student), the frozen teacher is the base milestone's EMA weights, and the
target network (an EMA of the student) is saved with every checkpoint so a resumed run continues exactly.
"""

from __future__ import annotations

import torch

from study.experiments.distillation.lcd import LCD
from study.schedulers import LCM_DEFAULT_GRID
from trainers.recipes import RecipeContext
from trainers.recipes.base import BaseRecipe


def lcd_options(cfg) -> dict:
    """What a distillation run computes beyond the train section (its identity, and the recipe's options)."""
    ds, e = cfg.distill, cfg.eval
    # w: the config's, or the evaluation's guidance range minus one, so the search stays where the student learned.
    w_min = ds.w_min if ds.w_min is not None else max(0.0, e.guidance_min - 1.0)
    w_max = ds.w_max if ds.w_max is not None else max(w_min, e.guidance_max - 1.0)
    return {"method": ds.method, "w_min": float(w_min), "w_max": float(w_max), "loss": ds.loss,
            # the target network's decay (the trainer's EMA, distill.ema_decay, is in the train section)
            "huber_c": ds.huber_c, "ema_decay": ds.ema_decay if ds.target_decay is None else ds.target_decay,
            "guidance_embed_dim": ds.guidance_embed_dim,
            # LCM-SD's grid adds no key: runs distilled before the option existed keep their identity
            **({"skip_grid": ds.skip_grid} if ds.skip_grid != LCM_DEFAULT_GRID else {})}


class DistillRecipe(BaseRecipe):
    """LCD (study/experiments/distillation/lcd.py) from ctx.init_from, with ctx.options (lcd_options of the config)."""

    name = "distillation"

    def data(self, ctx: RecipeContext):
        ctx.require_base("distillation", "the teacher")
        return super().data(ctx)

    def model(self, ctx: RecipeContext) -> torch.nn.Module:
        from study.experiments.distillation.student import student_from_teacher
        from study.schedulers import LCM_GRID_KEY
        from study.weights import load_unet

        o = ctx.options or lcd_options(ctx.cfg)
        teacher = load_unet(ctx.init_from, weights="ema")
        student = student_from_teacher(teacher, o["guidance_embed_dim"])
        grid = o.get("skip_grid", LCM_DEFAULT_GRID)
        if grid != LCM_DEFAULT_GRID:  # the student samples on the grid it is distilled on (study.sampling reads it)
            student.register_to_config(**{LCM_GRID_KEY: int(grid)})
        self.lcd = LCD(teacher, student, self.prepared.uncond_embedding(torch.device("cpu")),
                       prediction_type=ctx.cfg.model.prediction_type, w_min=o["w_min"], w_max=o["w_max"],
                       loss=o["loss"], huber_c=o["huber_c"], target_decay=o["ema_decay"], solver_steps=grid)
        self._placed = None
        return student

    def loss(self, model, batch: dict, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        where = (batch["latents"].device, dtype)
        if self._placed != where:  # teacher and target follow the student to the trainer's device and dtype
            self.lcd.to(*where)
            self._placed = where
        return self.lcd.loss(model, batch["latents"], batch["context"], gen, dtype)

    def after_step(self, model) -> None:
        self.lcd.update_target(model)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.lcd.state()

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.lcd.load_state(tensors)


RECIPE = DistillRecipe
