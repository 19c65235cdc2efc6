"""4x super-resolution fine-tuning from a base milestone: the SD x4 upscaler's objective (issue 12), on the HR
latents (superres.formulation = concat) or on their residual over the bicubic upsample (residual: SRDiff)."""

from __future__ import annotations

import torch

from trainers.recipes import Recipe, RecipeContext


class SuperResRecipe(Recipe):
    """The base UNet widened for the concatenated LR image; DDPM loss on HR latents, the empty prompt."""

    name = "superres"

    def data(self, ctx: RecipeContext) -> SuperResRecipe:
        from study.schedulers import training_scheduler
        from study.experiments.superres.setup import superres_setup

        ctx.require_base("superres", "the model it widens")
        self.setup = superres_setup(ctx.cfg, ctx.prepared_dir)
        self.source = self.setup.source(ctx.seed)  # crops keyed by the run's seed, as the base data order
        self.space = self.setup.space.to(ctx.device)
        o = ctx.cfg.superres
        self.prediction_type = o.prediction_type or ctx.cfg.model.prediction_type
        self.scheduler = training_scheduler(self.prediction_type)
        self.uncond = self.setup.uncond.to(ctx.device)
        self.max_noise_level = int(ctx.cfg.superres.max_noise_level)
        self.residual_scale = o.residual_scale if o.formulation == "residual" else None
        self.hr_size = o.hr_size
        return self

    @property
    def geometry(self):
        return self.setup.geometry

    def batch(self, start: int, count: int, device: torch.device) -> dict:
        from study.experiments.superres.model import bicubic_latents, to_residual

        hr, lr = self.source.train_pairs(start, count)
        latents = self.space.encode(hr.to(device))
        if self.residual_scale is not None:
            latents = to_residual(latents, bicubic_latents(self.space, lr.to(device), self.hr_size),
                                  self.residual_scale)
        return {"latents": latents,
                "lr": self.setup.condition(lr).to(device),
                "context": self.uncond.expand(count, -1, -1)}  # no text: the empty prompt, as the paper

    def model(self, ctx: RecipeContext) -> torch.nn.Module:
        from study.experiments.superres.model import widen_for_superres
        from study.weights import load_unet

        base = load_unet(ctx.require_base("superres", "the model it widens"), weights=ctx.cfg.superres.base_weights)
        if base.config.out_channels != self.setup.channels:
            raise ValueError(f"the base model outputs {base.config.out_channels} channels, the super-resolution "
                             f"latents have {self.setup.channels}: the base must be trained in the same latent space")
        return widen_for_superres(base, self.setup.channels_lr, self.residual_scale, self.prediction_type)

    def loss(self, model, batch: dict, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        from study.experiments.superres.model import superres_loss

        return superres_loss(model, self.scheduler, batch["latents"], batch["lr"], batch["context"],
                             self.max_noise_level, gen, dtype)


RECIPE = SuperResRecipe
