"""The DreamBooth experiment's config section (StudyConfig.dreambooth) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from study.errors import check as _check
from study.experiments.spec import check_cells

EMBEDDED_SUBJECTS = ("digits", "photos")  # dreambooth.data values made from an embedded data set of that name


@dataclass
class DreamBoothConfig:
    """The DreamBooth experiment (Ruiz et al. 2023; diffusers' examples/dreambooth/train_dreambooth.py)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # The subject: "digits" (embedded: mirror-written digits, see docs/experiments.md, "DreamBooth"),
    # "google" (Google's DreamBooth data set: root = its dataset/ folder, subject = a folder in it), or
    # "folder" (root = a folder of 3-6 instance images, class_noun = their class).
    # "photos" (embedded, data.name=photos: inverted patches of one photograph, docs/experiments.md).
    data: str = "digits"
    root: Optional[str] = None  # data=google or folder: where the subject's images are
    subject: str = "dog"  # data=google: a folder of Google's data set
    class_noun: str = ""  # data=folder: the subject's class ("dog")
    identifier: str = "sks"  # the rare token of the paper and the script's "a photo of sks dog"
    digit: int = 3  # digits: the instances are mirrored training digits of this class (an asymmetric one)
    photo: str = "cat"  # photos: the instances are inverted training patches of this photograph (study/data.py)
    num_instances: int = 4  # digits, photos: the paper uses 3-5 images of a subject
    num_contexts: int = 3  # digits: novel contexts = other asymmetric digits "in sks style" (photos: photographs)
    seed: int = 0  # digits, photos: which training images become the instances
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
    num_workers: int = 1  # data-parallel workers of a fine-tune: the script's one GPU (a batch of 1 splits no further)
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


def validate(cfg) -> None:
    """The DreamBooth section: subject data, prior preservation, budgets, evaluation cells and objective."""
    from study.schedulers import SAMPLERS

    db = cfg.dreambooth
    _check(db.data in ("digits", "photos", "google", "folder"), "dreambooth.data",
           "'digits', 'photos', 'google' or 'folder'", db.data)
    # On an embedded base, the embedded subject is made of the same set (its domain classifier reads the class).
    _check(not db.enabled or cfg.data.name not in EMBEDDED_SUBJECTS or db.data not in EMBEDDED_SUBJECTS
           or db.data == cfg.data.name, "dreambooth.data",
           f"{cfg.data.name!r} (the subject made of data.name={cfg.data.name}), 'google' or 'folder'", db.data)
    _check(db.data in EMBEDDED_SUBJECTS or db.root is not None, "dreambooth.root",
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
    _check(db.num_workers > 0, "dreambooth.num_workers", "a positive number of workers", db.num_workers)
    _check(0 <= db.ema_decay < 1, "dreambooth.ema_decay", "a decay in [0, 1)", db.ema_decay)
    check_cells("dreambooth", db.samplers, db.steps)
    for key in ("samples_per_prompt", "grid_per_prompt"):
        _check(getattr(db, key) > 0, f"dreambooth.{key}", "a positive integer", getattr(db, key))
    _check(db.class_eval_samples > 1, "dreambooth.class_eval_samples", "at least 2 (an FID needs 2)",
           db.class_eval_samples)
    _check(db.prompt_penalty >= 0, "dreambooth.prompt_penalty", "a penalty >= 0", db.prompt_penalty)


def train_overrides(cfg) -> dict:
    """The train section of its fine-tunes: one milestone (the fine-tune's end), no warm-up of a trained model,
    no caption dropout (the script's), on dreambooth.num_workers workers."""
    db = cfg.dreambooth
    return {"total_images": db.train_images, "milestones": [1.0], "batch_size": db.batch_size, "lr": db.lr,
            "ema_decay": db.ema_decay, "warmup_images": 0, "cond_drop_prob": 0.0, "num_workers": db.num_workers}


def inputs(cfg) -> list[tuple[str, object]]:
    """The local files DreamBooth reads: the subject's data set, the DINO model."""
    db = cfg.dreambooth
    return [("dreambooth.root", db.root if db.data not in EMBEDDED_SUBJECTS else None),
            ("dreambooth.dino_path", db.dino_path)]
