"""The super-resolution experiment's config section (StudyConfig.superres) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from study.errors import check as _check
from study.experiments.spec import check_cells


@dataclass
class SuperResConfig:
    """4x super-resolution fine-tuned from every base (size, seed): the SD x4 upscaler's conditioning (issue 12)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # "embedded": the photographs inside scikit-image's wheel, held out by photograph (grey for a grey base);
    # "div2k": root holds DIV2K_train_HR/, DIV2K_valid_HR/ (and ..._LR_bicubic/X4/ where present);
    # "imagefolder": root is any folder of images, held out by file.
    data: str = "embedded"
    root: Optional[str] = None  # data=div2k or imagefolder: where the images are
    hr_size: int = 16  # HR patch side (pixels); LR = hr_size / 4. 16 from 4x4: docs/experiments.md, "Super-resolution"
    photo_shrink: int = 2  # embedded: photographs halved first, so a 16x16 patch holds edges, not flat 1/32 of a face
    num_eval: int = 256  # held-out patches scored per cell, the same ones for every model (common random numbers)
    feature_epochs: int = 8  # embedded: epochs of the domain network (FID features, LPIPS-style distance)
    lpips_backbone: Optional[str] = None  # real data: torchvision AlexNet state-dict file for LPIPS (no download)
    base_weights: str = "ema"  # the base milestone's weights the fine-tune starts from
    # What is diffused (study/experiments/superres/model.py): "concat", the HR latents (the SD x4 upscaler's
    # recipe, the paper's); "residual", HR minus the bicubic upsample, scaled (SRDiff / ResShift), which a short
    # fine-tune can bring above bicubic (docs/results.md, "Super-resolution").
    formulation: str = "concat"
    # Residual only: its std on the embedded patches is ~0.13 against the images' ~0.47 in [-1, 1]; x4 puts it
    # on the images' scale, so the noise schedule's signal-to-noise ratios mean for it what they mean for images.
    residual_scale: float = 4.0
    # What the fine-tuned UNet predicts: "" the base model's (model.prediction_type), or "sample", the clean target
    # (ResShift, Yue et al. 2023, predicts x0). With the residual formulation, "sample" also starts the output layer
    # at zero: before its first step the fine-tune predicts a zero residual and outputs the bicubic upsample
    # exactly, so its training moves it from bicubic rather than from noise (docs/results.md, "Super-resolution").
    prediction_type: str = ""
    # Fine-tuning budget in HR images seen, from each base's final milestone.
    train_images: int = 4096
    batch_size: int = 64  # HR patches per optimizer step
    lr: float = 1.0e-3  # the base's 2e-3 halved: the pretrained weights are a starting point worth keeping
    warmup_images: int = 512  # the zero-initialised LR weights grow before the full step size hits the rest
    ema_decay: float = 0.99  # ~100-step EMA horizon for a 64-step fine-tune
    max_noise_level: int = 350  # LR noise augmentation levels 0..350 in training (the upscaler's max_noise_level)
    eval_noise_level: int = 20  # LR noise level at inference (StableDiffusionUpscalePipeline's default)
    # Evaluation cells (sampler, steps), guidance 1 (the paper uses none in super-resolution).
    samplers: List[str] = field(default_factory=lambda: ["ddim", "ddpm", "dpmsolver++"])
    steps: List[int] = field(default_factory=lambda: [2, 4, 8, 16])  # sampling steps evaluated
    max_steps: dict = field(default_factory=lambda: {"dpmsolver++": 8})  # converged by 8 steps at this scale


def validate(cfg) -> None:
    """The super-resolution section: data, patch sizes (against the configured latent space), budgets, noise
    levels, evaluation cells."""
    from study.ladder import geometry

    sr = cfg.superres
    _check(sr.data in ("embedded", "div2k", "imagefolder"), "superres.data", "'embedded', 'div2k' or 'imagefolder'",
           sr.data)
    _check(sr.data == "embedded" or sr.root is not None, "superres.root", "a data folder for div2k/imagefolder",
           sr.root)
    # The HR patch's latent grid (1/factor of it: 1 in pixel space, 8 under SD's VAE, read off the VAE's config
    # when staged) is halved three times by the (c, 2c, 4c, 4c) UNet.
    factor = cfg.data.resolution // geometry(cfg).sample_size if sr.enabled else 1
    _check(sr.hr_size > 0 and sr.hr_size % (factor * 8) == 0, "superres.hr_size",
           f"a positive multiple of {factor * 8} (its latent grid, 1/{factor} of it under this autoencoder, is halved "
           "three times by the UNet)", sr.hr_size)
    _check(sr.photo_shrink >= 1, "superres.photo_shrink", "an integer >= 1", sr.photo_shrink)
    _check(sr.num_eval > 1, "superres.num_eval", "at least 2 patches (an FID needs 2)", sr.num_eval)
    _check(sr.feature_epochs > 0, "superres.feature_epochs", "a positive number of epochs", sr.feature_epochs)
    _check(sr.base_weights in ("ema", "raw"), "superres.base_weights", "'ema' or 'raw'", sr.base_weights)
    from study.experiments.superres.model import FORMULATIONS

    _check(sr.formulation in FORMULATIONS, "superres.formulation",
           "'concat' (the SD x4 upscaler's) or 'residual' (SRDiff's residual over the bicubic upsample)",
           sr.formulation)
    _check(sr.residual_scale > 0, "superres.residual_scale", "a positive scale", sr.residual_scale)
    from study.schedulers import PREDICTION_TYPES

    _check(sr.prediction_type in ("", *PREDICTION_TYPES), "superres.prediction_type",
           f"'' (the base model's) or one of {list(PREDICTION_TYPES)}", sr.prediction_type)
    _check(sr.train_images > 0 and sr.batch_size > 0, "superres.train_images",
           "positive train_images and batch_size", sr.train_images)
    _check(sr.lr > 0, "superres.lr", "a positive learning rate", sr.lr)
    _check(0 <= sr.ema_decay < 1, "superres.ema_decay", "a decay in [0, 1)", sr.ema_decay)
    _check(0 <= sr.max_noise_level < 1000, "superres.max_noise_level", "a level in [0, 1000)", sr.max_noise_level)
    _check(0 <= sr.eval_noise_level < 1000, "superres.eval_noise_level", "a level in [0, 1000)",
           sr.eval_noise_level)
    check_cells("superres", sr.samplers, sr.steps)


def train_overrides(cfg) -> dict:
    """The train section of its fine-tunes: one milestone (the fine-tune's end); no caption dropout (the caption
    is always the empty prompt)."""
    o = cfg.superres
    return {"total_images": o.train_images, "milestones": [1.0], "batch_size": o.batch_size, "lr": o.lr,
            "ema_decay": o.ema_decay, "warmup_images": o.warmup_images, "cond_drop_prob": 0.0}


def inputs(cfg) -> list[tuple[str, object]]:
    """The local files super-resolution reads: the DIV2K or image folder, LPIPS' AlexNet backbone."""
    o = cfg.superres
    return [("superres.root", o.root if o.data != "embedded" else None),
            ("superres.lpips_backbone", o.lpips_backbone)]

