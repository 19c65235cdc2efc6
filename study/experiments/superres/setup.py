"""What super-resolution training and evaluation share: the pair source, the latent space, the LR condition's
grid and channels, and the empty prompt's hidden states, all read off the study config and its prepared data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.ladder import Geometry


@dataclass
class SuperResSetup:
    cfg: object  # study.config.StudyConfig
    space: object  # study.autoencoder.LatentSpace of the base models
    uncond: torch.Tensor  # [1, T, D] the empty prompt (no text guidance in super-resolution)
    channels: int  # latent channels (= image channels in pixel space)
    channels_lr: int  # image channels of the LR condition
    grid: int  # latent grid side of an HR patch

    def source(self, seed: int | None = None):
        """The (HR, LR) pair source; `seed` keys the training crops (the held-out set depends on the split seed)."""
        from study.experiments.superres.data import load_pair_source

        o = self.cfg.superres
        pairs = load_pair_source(o.data, o.root, o.hr_size, self.channels_lr, self.cfg.data.split_seed,
                                 o.num_eval, o.photo_shrink)
        if seed is not None:  # training order keyed by (split seed, run seed): seeds see different crops
            pairs.seed = int(np.random.SeedSequence([self.cfg.data.split_seed, seed]).generate_state(1)[0])
        return pairs

    def condition(self, lr: torch.Tensor) -> torch.Tensor:
        """LR images in [0, 255] -> the concatenated condition on the latent grid, in [-1, 1]."""
        from study.experiments.superres.model import lr_condition

        return lr_condition(lr, self.grid)

    @property
    def geometry(self) -> Geometry:
        """What the widened UNet sees: HR latents plus the LR channels."""
        return Geometry(in_channels=self.channels + self.channels_lr, sample_size=self.grid,
                        context_dim=int(self.uncond.shape[-1]), tokens=int(self.uncond.shape[-2]))


def superres_setup(cfg, prepared_dir: str | Path) -> SuperResSetup:
    """The setup of a study config's super-resolution experiment (prepared_dir: its `study prepare` folder)."""
    from study.autoencoder import load_latent_space
    from study.datasets import dataset
    from study.ladder import geometry

    prepared_dir = Path(prepared_dir)
    geom = geometry(cfg)
    factor = cfg.data.resolution // geom.sample_size  # 1 in pixel space, 8 under SD's VAE
    hr = cfg.superres.hr_size
    if hr % (factor * 8):
        # the latent grid is halved three times by the (c, 2c, 4c, 4c) UNet
        raise ValueError(f"superres.hr_size={hr}: expected a multiple of {factor * 8} (the latent grid, 1/{factor} "
                         f"of it, must be divisible by 8)")
    space = load_latent_space(cfg.autoencoder, prepared_dir / "autoencoder")
    uncond_file = prepared_dir / "uncond.npy"
    if uncond_file.exists():
        uncond = torch.from_numpy(np.asarray(np.load(uncond_file), dtype=np.float32))
    else:  # a sharded prepared folder keeps it elsewhere: encoding "" again gives the same states
        from study.text import load_text_encoder

        uncond = load_text_encoder(cfg.text_encoder).encode([""]).float()
    return SuperResSetup(cfg, space, uncond, geom.in_channels, dataset(cfg.data.name).channels, hr // factor)
