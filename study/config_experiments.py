"""The config sections of the derived experiments (distillation, super-resolution, DreamBooth) and their
checks; study.config re-exports them as parts of StudyConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from study.errors import check as _check


@dataclass
class DreamBoothConfig:
    """The DreamBooth experiment (Ruiz et al. 2023; diffusers' examples/dreambooth/train_dreambooth.py)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # The subject: "digits" (embedded: mirror-written digits, see the README's DreamBooth section),
    # "google" (Google's DreamBooth data set: root = its dataset/ folder, subject = a folder in it), or
    # "folder" (root = a folder of 3-6 instance images, class_noun = their class).
    data: str = "digits"
    root: Optional[str] = None  # data=google or folder: where the subject's images are
    subject: str = "dog"  # data=google: a folder of Google's data set
    class_noun: str = ""  # data=folder: the subject's class ("dog")
    identifier: str = "sks"  # the rare token of the paper and the script's "a photo of sks dog"
    digit: int = 3  # digits: the instances are mirrored training digits of this class (an asymmetric one)
    num_instances: int = 4  # digits: the paper uses 3-5 images of a subject
    num_contexts: int = 3  # digits: novel contexts = other asymmetric digits "in sks style"
    seed: int = 0  # digits: which training digits become the instances
    max_prompts: int = 0  # real data: evaluation prompts kept from the paper's list (0: all 25)
    # Prior preservation: class images sampled from each base checkpoint with the class prompt, cached per
    # base. 200 as the paper's ~200 (the script's default is 100); weight 1 as the script's example.
    prior_preservation: bool = True
    num_class_images: int = 200  # prior preservation images per base model (the script's default)
    prior_loss_weight: float = 1.0  # the script's default
    class_sampler: str = "ddim"  # the script samples with the pipeline's defaults: 50 steps, guidance 7.5
    class_steps: int = 50  # class images: the pipeline's default steps
    class_guidance: float = 7.5  # class images: the pipeline's default guidance
    base_weights: str = "ema"  # the base milestone's weights the fine-tune (and its class images) start from
    # Fine-tuning (UNet only, text encoder frozen), budgets in instance images seen (each step also sees as
    # many class images). The script's SD example: 400-800 steps of batch 1 at lr 5e-6, no EMA.
    train_images: int = 800
    batch_size: int = 1  # the script's default
    lr: float = 5.0e-6  # the script's default for SD's UNet
    ema_decay: float = 0.0  # 0: no averaging (the script keeps no EMA), so the milestone's ema = raw weights
    # Evaluation cells (sampler, steps), the guidance searched per cell as the base's (eval.guidance_min/max,
    # eval.n_trials).
    samplers: List[str] = field(default_factory=lambda: ["ddim", "dpmsolver++"])
    steps: List[int] = field(default_factory=lambda: [10, 20, 50])  # sampling steps evaluated
    samples_per_prompt: int = 4  # the paper: 4 images per prompt
    class_eval_samples: int = 100  # class-prompt samples per model for language drift (before and after)
    grid_per_prompt: int = 4  # columns of the per-size image grid
    # The search minimises  -subject_fidelity + prompt_penalty * max(0, prompt_fidelity_target - prompt_fidelity):
    # subject fidelity under a prompt-fidelity constraint (a soft one: every 0.01 short costs prompt_penalty/100
    # of subject fidelity). Digits: prompt fidelity is an accuracy, 0.8 keeps 4 in 5 samples the prompted
    # digit; real data (CLIP-T, about 0.3 for SD) needs a target on that scale, e.g. 0.28.
    prompt_fidelity_target: float = 0.8
    prompt_penalty: float = 5.0  # objective weight of missing the prompt-fidelity target
    dino_path: Optional[str] = None  # local DINO ViT-S/16 folder (transformers ViTModel) for the DINO metric


@dataclass
class SuperResConfig:
    """4x super-resolution fine-tuned from every base (size, seed): the SD x4 upscaler's conditioning (issue 12)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # "embedded": the photographs inside scikit-image's wheel, held out by photograph (grey for a grey base);
    # "div2k": root holds DIV2K_train_HR/, DIV2K_valid_HR/ (and ..._LR_bicubic/X4/ where present);
    # "imagefolder": root is any folder of images, held out by file.
    data: str = "embedded"
    root: Optional[str] = None  # data=div2k or imagefolder: where the images are
    hr_size: int = 16  # HR patch side (pixels); LR = hr_size / 4. 16 from 4x4: see the README's Super-resolution
    photo_shrink: int = 2  # embedded: photographs halved first, so a 16x16 patch holds edges, not flat 1/32 of a face
    num_eval: int = 256  # held-out patches scored per cell, the same ones for every model (common random numbers)
    feature_epochs: int = 8  # embedded: epochs of the domain network (FID features, LPIPS-style distance)
    lpips_backbone: Optional[str] = None  # real data: torchvision AlexNet state-dict file for LPIPS (no download)
    base_weights: str = "ema"  # the base milestone's weights the fine-tune starts from
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


@dataclass
class DistillConfig:
    """Latent consistency distillation of every base (size, seed) to a few-step student (issue 11).

    LCD (Luo et al. 2023), not the paper's CoDi: see the README's "Distillation" for how they differ."""

    enabled: bool = False  # off by default: a derived experiment on top of the base ladder
    method: str = "lcd"  # the only method built; named so a run says honestly what it distilled with
    # Training budget in images seen, from each base's final milestone (EMA weights = the teacher).
    total_images: int = 4096
    milestones: List[float] = field(default_factory=lambda: [1.0])  # fractions of total_images
    batch_size: int = 64  # images per LCD step
    lr: float = 1.0e-4  # LCD moves a trained model, not a fresh one: lower than base training
    # The guidance scale w of the teacher's step, drawn per sample from U[w_min, w_max] in the LCM paper's form
    # (eps_c + w (eps_c - eps_u), i.e. guidance scale w + 1). None: eval.guidance_min - 1 .. eval.guidance_max - 1,
    # so the guidance the evaluation searches is the range the student learned.
    w_min: Optional[float] = None
    w_max: Optional[float] = None  # None: the evaluation's guidance range minus one
    loss: str = "huber"  # "l2" | "huber" (pseudo-Huber, the diffusers example's default)
    huber_c: float = 0.001  # pseudo-Huber's c (the diffusers example's default)
    # Target network: EMAModel of the student with this constant decay (the example's 0.95). The trainer's own
    # EMA, which evaluation reads, uses it too: an average of the same horizon as the target.
    ema_decay: float = 0.95
    guidance_embed_dim: int = 256  # width of the w embedding (diffusers' LCM-SD time_cond_proj_dim)
    # Evaluation: the LCM sampler at these step counts, guidance searched per cell as for base.
    steps: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # Image grid written at evaluation time: this many prompts, undistilled (base, DDIM) vs distilled (LCM).
    grid_prompts: int = 10
    grid_steps: int = 4  # the step count of the grid's distilled and undistilled rows


def _validate_distill(ds: DistillConfig) -> None:
    """The distillation section: method, budgets, guidance range, loss, evaluation steps."""
    _check(ds.method == "lcd", "distill.method", "'lcd' (latent consistency distillation; CoDi is not built)",
           ds.method)
    _check(ds.total_images > 0, "distill.total_images", "a positive number of images", ds.total_images)
    _check(len(ds.milestones) > 0 and all(0 < f <= 1 for f in ds.milestones)
           and list(ds.milestones) == sorted(set(ds.milestones)), "distill.milestones",
           "strictly increasing fractions in (0, 1]", list(ds.milestones))
    _check(ds.batch_size > 0, "distill.batch_size", "a positive integer", ds.batch_size)
    _check(ds.lr > 0, "distill.lr", "a positive learning rate", ds.lr)
    for key in ("w_min", "w_max"):
        v = getattr(ds, key)
        _check(v is None or v >= 0, f"distill.{key}", "a guidance w >= 0 (scale w + 1), or null", v)
    _check(ds.w_min is None or ds.w_max is None or ds.w_min <= ds.w_max, "distill.w_max",
           f"at least distill.w_min ({ds.w_min})", ds.w_max)
    _check(ds.loss in ("l2", "huber"), "distill.loss", "'l2' or 'huber'", ds.loss)
    _check(ds.huber_c > 0, "distill.huber_c", "a positive constant", ds.huber_c)
    _check(0 < ds.ema_decay < 1, "distill.ema_decay", "a decay in (0, 1)", ds.ema_decay)
    _check(ds.guidance_embed_dim >= 2, "distill.guidance_embed_dim", "an integer >= 2", ds.guidance_embed_dim)
    # The LCM sampler's schedule is a subset of the 50-step skip grid (original_inference_steps).
    _check(len(ds.steps) > 0 and all(isinstance(x, int) and 0 < x <= 50 for x in ds.steps), "distill.steps",
           "a non-empty list of step counts in 1..50", list(ds.steps))
    _check(ds.grid_prompts >= 0, "distill.grid_prompts", "a number of prompts >= 0", ds.grid_prompts)
    _check(ds.grid_steps > 0, "distill.grid_steps", "a positive step count", ds.grid_steps)


def _validate_superres(sr: SuperResConfig) -> None:
    _check(sr.data in ("embedded", "div2k", "imagefolder"), "superres.data", "'embedded', 'div2k' or 'imagefolder'",
           sr.data)
    _check(sr.data == "embedded" or sr.root is not None, "superres.root", "a data folder for div2k/imagefolder",
           sr.root)
    _check(sr.hr_size > 0 and sr.hr_size % 8 == 0, "superres.hr_size", "a positive multiple of 8", sr.hr_size)
    _check(sr.photo_shrink >= 1, "superres.photo_shrink", "an integer >= 1", sr.photo_shrink)
    _check(sr.num_eval > 1, "superres.num_eval", "at least 2 patches (an FID needs 2)", sr.num_eval)
    _check(sr.feature_epochs > 0, "superres.feature_epochs", "a positive number of epochs", sr.feature_epochs)
    _check(sr.base_weights in ("ema", "raw"), "superres.base_weights", "'ema' or 'raw'", sr.base_weights)
    _check(sr.train_images > 0 and sr.batch_size > 0, "superres.train_images",
           "positive train_images and batch_size", sr.train_images)
    _check(sr.lr > 0, "superres.lr", "a positive learning rate", sr.lr)
    _check(0 <= sr.ema_decay < 1, "superres.ema_decay", "a decay in [0, 1)", sr.ema_decay)
    _check(0 <= sr.max_noise_level < 1000, "superres.max_noise_level", "a level in [0, 1000)", sr.max_noise_level)
    _check(0 <= sr.eval_noise_level < 1000, "superres.eval_noise_level", "a level in [0, 1000)",
           sr.eval_noise_level)
    _check_cells("superres", sr.samplers, sr.steps)


def _validate_dreambooth(db: DreamBoothConfig) -> None:
    from study.schedulers import SAMPLERS

    _check(db.data in ("digits", "google", "folder"), "dreambooth.data", "'digits', 'google' or 'folder'", db.data)
    _check(db.data == "digits" or db.root is not None, "dreambooth.root",
           "the dataset/ folder of Google's DreamBooth data (data=google) or a folder of instance images", db.root)
    _check(db.data != "folder" or bool(db.class_noun), "dreambooth.class_noun",
           "the instances' class noun (e.g. dog) when data=folder", db.class_noun)
    _check(db.digit in (2, 3, 4, 5, 6, 7, 9), "dreambooth.digit", "an asymmetric digit (2-7 or 9)", db.digit)
    _check(1 <= db.num_instances <= 16, "dreambooth.num_instances", "1 to 16 instance images (the paper: 3-5)",
           db.num_instances)
    _check(db.num_class_images > 0, "dreambooth.num_class_images", "a positive number", db.num_class_images)
    _check(db.prior_loss_weight >= 0, "dreambooth.prior_loss_weight", "a weight >= 0", db.prior_loss_weight)
    _check(db.class_sampler in SAMPLERS, "dreambooth.class_sampler", f"one of {list(SAMPLERS)}", db.class_sampler)
    _check(db.class_steps > 0, "dreambooth.class_steps", "a positive step count", db.class_steps)
    _check(db.base_weights in ("ema", "raw"), "dreambooth.base_weights", "'ema' or 'raw'", db.base_weights)
    _check(db.train_images > 0 and db.batch_size > 0, "dreambooth.train_images",
           "a positive budget of instance images (and batch_size > 0)", db.train_images)
    _check(db.lr > 0, "dreambooth.lr", "a positive learning rate", db.lr)
    _check(0 <= db.ema_decay < 1, "dreambooth.ema_decay", "a decay in [0, 1)", db.ema_decay)
    _check_cells("dreambooth", db.samplers, db.steps)
    for key in ("samples_per_prompt", "grid_per_prompt"):
        _check(getattr(db, key) > 0, f"dreambooth.{key}", "a positive integer", getattr(db, key))
    _check(db.class_eval_samples > 1, "dreambooth.class_eval_samples", "at least 2 (an FID needs 2)",
           db.class_eval_samples)
    _check(db.prompt_penalty >= 0, "dreambooth.prompt_penalty", "a penalty >= 0", db.prompt_penalty)


def _check_cells(section: str, samplers, steps) -> None:
    """An experiment's evaluation cells: a non-empty list of known samplers and of positive step counts."""
    from study.schedulers import SAMPLERS

    _check(len(samplers) > 0 and all(x in SAMPLERS for x in samplers), f"{section}.samplers",
           f"a non-empty list from {list(SAMPLERS)}", list(samplers))
    _check(len(steps) > 0 and all(isinstance(x, int) and x > 0 for x in steps), f"{section}.steps",
           "a non-empty list of positive step counts", list(steps))
