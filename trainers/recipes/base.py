"""Plain text-to-image diffusion training of a fresh ladder UNet: the base experiment's recipe."""

from __future__ import annotations

import torch

from trainers.data import PreparedData
from trainers.diffusion import diffusion_loss
from trainers.recipes import Recipe, RecipeContext


class BaseRecipe(Recipe):
    """SD1.5's objective (epsilon or v) with caption dropout for classifier-free guidance.

    Where the shards keep token ids (data.captions = tokens), the frozen text encoder runs in the step, on the
    trainer's device at the training precision (as SD's training scripts cast it to their weight dtype)."""

    name = "base"

    def data(self, ctx: RecipeContext) -> PreparedData:
        from study.schedulers import training_scheduler

        self.prepared = PreparedData(ctx.prepared_dir, ctx.seed, ctx.cfg.train.shuffle_window_images)
        self.scheduler = training_scheduler(ctx.cfg.model.prediction_type)
        self.uncond = self.prepared.uncond_embedding(ctx.device)
        self.cond_drop_prob = ctx.cfg.train.cond_drop_prob
        self.text, self._text_cfg = None, ctx.cfg if self.prepared.captions == "tokens" else None
        return self

    def _text_encoder(self, device: torch.device):
        """The frozen text encoder, loaded on first use (in the worker: the driver's data() needs the geometry only)."""
        if self.text is None:
            from study.text import load_text_encoder
            from trainers.engine import module_dtype, resolve_precision

            cfg = self._text_cfg
            self.text = load_text_encoder(cfg.text_encoder)
            self.text.model.to(device, module_dtype(resolve_precision(cfg.train.precision, device.type == "cuda")))
        return self.text

    @property
    def geometry(self):
        return self.prepared.geometry

    def batch(self, start: int, count: int, device: torch.device) -> dict:
        latents, context = self.prepared.batch(start, count, device)
        if self._text_cfg is not None:  # token ids -> hidden states (no grad), float32 like stored states
            context = self._text_encoder(device).encode_ids(context).float()
        return {"latents": latents, "context": context}

    def model(self, ctx: RecipeContext) -> torch.nn.Module:
        from study.ladder import LADDERS, build_unet

        return build_unet(LADDERS[ctx.cfg.model.ladder], ctx.width, self.prepared.geometry)

    def loss(self, model, batch: dict, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        return diffusion_loss(model, self.scheduler, batch["latents"], batch["context"], self.uncond,
                              self.cond_drop_prob, gen, dtype)


RECIPE = BaseRecipe
