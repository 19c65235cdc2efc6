"""The held-out denoising loss of a checkpoint: the training objective on held-out samples with fixed noise and a
fixed stratified set of timesteps, so that two checkpoints are compared on identical work (Liang et al. 2024 use
the pretraining loss as the cheap signal of a diffusion scaling law; an FID costs thousands of samples).

Each of n held-out samples is scored at one timestep in each of `buckets` equal bands of [0, T), drawn once per
(sample, band) from the seed, with its own fixed noise. The loss is the mean over samples and bands, with the
standard error of the per-sample means; each band's mean is reported too (the loss of a diffusion model depends
strongly on t).
"""

from __future__ import annotations

import numpy as np
import torch

from study.objective import denoising_loss


def fixed_work(n: int, latent_shape, buckets: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t [n, buckets], noise [n, buckets, *latent_shape]): the same for every checkpoint of a study."""
    gen = torch.Generator().manual_seed(seed)
    width = steps / buckets
    u = torch.rand((n, buckets), generator=gen, dtype=torch.float64)
    t = ((torch.arange(buckets, dtype=torch.float64) + u) * width).floor().long().clamp_(0, steps - 1)
    noise = torch.randn((n, buckets, *latent_shape), generator=gen)
    return t, noise


@torch.no_grad()
def heldout_loss(unet, scheduler, latents: torch.Tensor, context: torch.Tensor, buckets: int = 8, seed: int = 0,
                 batch: int = 64, dtype: torch.dtype = torch.float32) -> dict:
    """{"loss", "loss_se", "buckets": [mean per band], "n"} of a UNet on held-out latents and contexts."""
    if len(latents) < 2:
        raise ValueError(f"{len(latents)} held-out sample(s): the held-out loss needs >= 2 (its standard error)")
    dev = next(unet.parameters()).device
    n = len(latents)
    t, noise = fixed_work(n, latents.shape[1:], buckets, scheduler.config.num_train_timesteps, seed)
    per = torch.empty((n, buckets), dtype=torch.float64)
    for k in range(buckets):
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            per[lo:hi, k] = denoising_loss(unet, scheduler, latents[lo:hi].to(dev), context[lo:hi].to(dev),
                                           noise[lo:hi, k].to(dev), t[lo:hi, k].to(dev), dtype,
                                           per_sample=True).double().cpu()
    sample = per.mean(1)
    return {"loss": float(sample.mean()), "loss_se": float(sample.std(unbiased=True) / np.sqrt(n)),
            "buckets": per.mean(0).tolist(), "n": n}


class HeldoutScorer:
    """The held-out loss of UNets on a prepared folder's first eval.heldout_samples held-out samples (loaded once):
    scorer(unet) -> {"heldout_loss", "heldout_loss_se", "heldout_loss_t0".."_t{K-1}" (per timestep band)}; {} when
    eval.heldout_samples is 0 or the prepared data keeps no held-out latents. Needs no FID machinery, so a budget
    scored by its loss alone (train.loss_milestones) loads nothing else."""

    def __init__(self, cfg, shards_dir, device: torch.device | None = None):
        from pathlib import Path

        self.cfg, self.shards_dir, self.device = cfg, Path(shards_dir), device or torch.device("cpu")
        self._set = None

    def _heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        from study.shards.format import ShardIndex

        if self._set is None:
            n, index, lat, ctx = self.cfg.eval.heldout_samples, ShardIndex.load(self.shards_dir), [], []
            for s in index.shards("heldout"):
                if sum(map(len, lat)) >= n:
                    break
                lat.append(np.asarray(index.latents(s["name"]), dtype=np.float32))
                ctx.append(np.asarray(index.context(s["name"]),
                                      dtype=np.int32 if index.captions == "tokens" else np.float32))
            lat, ctx = np.concatenate(lat)[:n], np.concatenate(ctx)[:n]
            if index.captions == "tokens":  # token ids: the frozen text encoder's states, once per scorer
                from study.text import load_text_encoder

                text = load_text_encoder(self.cfg.text_encoder)
                text.model.to(self.device)
                ctx = torch.cat([text.encode_ids(ctx[a:a + 256]).float().cpu() for a in range(0, len(ctx), 256)])
            self._set = torch.from_numpy(lat), torch.as_tensor(ctx)
        return self._set

    def __call__(self, unet) -> dict:
        from study.schedulers import training_scheduler

        e = self.cfg.eval
        if e.heldout_samples == 0 or not (self.shards_dir / "index.json").exists():
            return {}
        lat, ctx = self._heldout()
        res = heldout_loss(unet.to(self.device), training_scheduler(self.cfg.model.prediction_type), lat, ctx,
                           e.heldout_buckets, e.seed, e.batch_size)
        return {"heldout_loss": res["loss"], "heldout_loss_se": res["loss_se"],
                **{f"heldout_loss_t{k}": v for k, v in enumerate(res["buckets"])}}
