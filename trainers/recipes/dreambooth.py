"""DreamBooth fine-tuning of a base checkpoint (diffusers' examples/dreambooth/train_dreambooth.py): the UNet
trains on the instance images with the identifier prompt and, with prior preservation, on the base model's own
class images with the class prompt; the text encoder stays frozen (its embeddings are cached)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainers.diffusion import diffusion_loss
from trainers.recipes import Recipe, RecipeContext


def dreambooth_options(cfg) -> dict:
    """What a DreamBooth run computes beyond the train section: the subject and the prior (its identity)."""
    db = cfg.dreambooth
    keys = ("data", "root", "subject", "class_noun", "identifier", "digit", "num_instances", "seed",
            "prior_preservation", "num_class_images", "prior_loss_weight", "class_sampler", "class_steps",
            "class_guidance", "base_weights")
    return {k: getattr(db, k) for k in keys}


class DreamBoothRecipe(Recipe):
    """The script's objective: instance MSE + prior_loss_weight x class MSE (study.experiments.dreambooth.prior)."""

    name = "dreambooth"

    def data(self, ctx: RecipeContext):
        from study.experiments.dreambooth.prepare import prepared_geometry
        from study.schedulers import training_scheduler

        ctx.require_base("dreambooth", "the model it fine-tunes")
        self.ctx = ctx
        self.geometry = prepared_geometry(ctx.prepared_dir)  # all the driver needs: no class images there
        self.scheduler = training_scheduler(ctx.cfg.model.prediction_type)
        self.prior_loss_weight = ctx.cfg.dreambooth.prior_loss_weight
        self._batches = None
        return self

    def batch(self, start: int, count: int, device: torch.device) -> dict:
        if self._batches is None:
            # Built in the worker on its first batch: the class images are sampled on the worker's device
            # (once per base checkpoint; a rerun or another rank reads the cache).
            from study.experiments.dreambooth.prepare import training_batches

            self._batches = training_batches(self.ctx.cfg, self.ctx.prepared_dir, self.ctx.init_from, self.ctx.device)
        return self._batches.batch(start, count, device)

    def model(self, ctx: RecipeContext) -> torch.nn.Module:
        from study.experiments.dreambooth.evaluator import BASE_KEY
        from study.weights import load_unet

        unet = load_unet(ctx.init_from, weights=ctx.cfg.dreambooth.base_weights)
        # Saved in unet.json: the evaluator measures language drift against this base.
        unet.register_to_config(**{BASE_KEY: str(Path(ctx.init_from).resolve())})
        return unet.train()

    def loss(self, model, batch: dict, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        from study.experiments.dreambooth.prior import prior_preservation_loss

        ctx = batch["context"]
        # No caption dropout (the script has none): cond_drop_prob 0, so the unconditional embedding is unused.
        per = diffusion_loss(model, self.scheduler, batch["latents"], ctx, ctx[:1], 0.0, gen, dtype, per_sample=True)
        return prior_preservation_loss(per, batch["n_instance"], self.prior_loss_weight)


RECIPE = DreamBoothRecipe
