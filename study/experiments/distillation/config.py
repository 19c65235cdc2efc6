"""The distillation experiment's config section (StudyConfig.distill) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from study.errors import check as _check


@dataclass
class DistillConfig:
    """Latent consistency distillation of every base (size, seed) to a few-step student (issue 11).

    LCD (Luo et al. 2023), not the paper's CoDi: see docs/experiments.md, "Distillation", for how they differ."""

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
    # EMA, which evaluation reads, uses it too (an average of the same horizon as the target) unless
    # target_decay is set.
    ema_decay: float = 0.95
    # The target network's own decay, apart from the weights evaluated; None: ema_decay. 0: the target is the
    # student itself, without gradient (iCT, Song & Dhariwal 2023, Sec. 3.2: an EMA target slows consistency
    # training, and its decay is best at 0), while the evaluated weights stay an average.
    target_decay: Optional[float] = None
    guidance_embed_dim: int = 256  # width of the w embedding (diffusers' LCM-SD time_cond_proj_dim)
    # The DDIM skip grid of the teacher's solver step and of the LCM sampler: N steps, skip k = 1000 / N (LCM,
    # Sec. 4.3). LCM-SD's 50 (k = 20) keeps the teacher's ODE error small, but a consistency target travels one
    # skip per step, so the student needs many steps to reach t = 999 from the boundary; a coarse grid (the
    # few-step sampler's own timesteps) gets there in a handful, at the teacher's few-step DDIM error.
    skip_grid: int = 50  # study.schedulers.LCM_DEFAULT_GRID
    # Evaluation: the LCM sampler at these step counts, guidance searched per cell as for base.
    steps: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # Milestones before the last: only this step count (the curve of FID against distillation images; the
    # analysis reads 4, the paper's target); the last milestone gets every one of `steps`. 0: all of them.
    curve_steps: int = 4
    # Image grid written at evaluation time: this many prompts, undistilled (base, DDIM) vs distilled (LCM).
    grid_prompts: int = 10
    grid_steps: int = 4  # the step count of the grid's distilled and undistilled rows


def validate(cfg) -> None:
    """The distillation section: method, budgets, guidance range, loss, evaluation steps."""
    ds = cfg.distill
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
    _check(0 <= ds.ema_decay < 1, "distill.ema_decay", "a decay in [0, 1)", ds.ema_decay)
    _check(ds.target_decay is None or 0 <= ds.target_decay < 1, "distill.target_decay",
           "a decay in [0, 1) (0: the target is the student), or null (distill.ema_decay)", ds.target_decay)
    _check(ds.guidance_embed_dim >= 2, "distill.guidance_embed_dim", "an integer >= 2", ds.guidance_embed_dim)
    _check(isinstance(ds.skip_grid, int) and 1 <= ds.skip_grid <= 1000 and 1000 % ds.skip_grid == 0,
           "distill.skip_grid", "a divisor of the 1000 training timesteps (50: LCM-SD's; 4: a 4-step grid)",
           ds.skip_grid)
    # The LCM sampler's schedule is a subset of the skip grid (its original_inference_steps).
    _check(len(ds.steps) > 0 and all(isinstance(x, int) and 0 < x <= ds.skip_grid for x in ds.steps),
           "distill.steps", f"a non-empty list of step counts in 1..{ds.skip_grid} (distill.skip_grid)",
           list(ds.steps))
    _check(ds.curve_steps == 0 or ds.curve_steps in ds.steps, "distill.curve_steps",
           f"0 or one of distill.steps {list(ds.steps)}", ds.curve_steps)
    _check(ds.grid_prompts >= 0, "distill.grid_prompts", "a number of prompts >= 0", ds.grid_prompts)
    _check(ds.grid_steps > 0, "distill.grid_steps", "a positive step count", ds.grid_steps)


def train_overrides(cfg) -> dict:
    """The train section of its runs: its budget, batch and lr; the trainer's own EMA (what evaluation reads)
    gets the target network's decay; no warm-up of a model that starts trained."""
    ds = cfg.distill
    return {"total_images": ds.total_images, "milestones": list(ds.milestones), "batch_size": ds.batch_size,
            "lr": ds.lr, "ema_decay": ds.ema_decay, "warmup_images": 0}
