"""The training budget: images seen, optimizer steps, milestones and both training-FLOP conventions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from study.config import ConfigError


@dataclass(frozen=True)
class Budget:
    """Where a run stops and checkpoints, in whole global batches, and what each point costs."""

    global_batch: int  # images per optimizer step, all workers and accumulation steps together
    milestone_steps: tuple[int, ...]  # optimizer steps after which a milestone checkpoint is written
    fwd_flops: float  # forward FLOPs per image of this width (study.ladder's Rung.flops)
    # Steps of train.loss_milestones: budgets scored by the held-out loss alone, each a weights-only checkpoint
    loss_steps: tuple[int, ...] = ()

    @property
    def total_steps(self) -> int:
        return self.milestone_steps[-1]

    @property
    def total_images(self) -> int:
        return self.images(self.total_steps)

    def images(self, step: int) -> int:
        return step * self.global_batch

    def train_flops(self, images: int) -> float:
        """Our convention: forward plus backward (2x forward) for every image seen."""
        return 3.0 * self.fwd_flops * images

    def train_flops_paper(self, images: int) -> float:
        """The paper's convention (arXiv 2404.01367, Fig. 2): GFLOPs per forward x training iterations."""
        return self.fwd_flops * (images // self.global_batch)

    def point(self, images: int) -> dict:
        """The budget reached after `images` images, in every unit we report."""
        return {"train_images": int(images), "train_steps": images // self.global_batch,
                "train_flops": self.train_flops(images), "train_flops_paper": self.train_flops_paper(images)}


def _nearest_step(fraction: float, total_images: int, global_batch: int) -> int:
    """The optimizer step whose whole global batch is nearest to round(fraction x total_images) images."""
    return max(1, math.floor(round(fraction * total_images) / global_batch + 0.5))


def milestone_steps(total_images: int, fractions, global_batch: int) -> tuple[int, ...]:
    """Optimizer steps of the milestones: the whole global batch nearest to round(f x total_images).

    Training advances one global batch at a time, so milestone f lands at
    max(1, floor(round(f x total_images) / global_batch + 1/2)) steps (half a batch rounds up).
    The full budget (f = 1) is always a milestone, so every run ends on a checkpoint.
    """
    fractions = sorted(set(float(f) for f in fractions) | {1.0})
    steps = [_nearest_step(f, total_images, global_batch) for f in fractions]
    for (f0, s0), (f1, s1) in zip(zip(fractions, steps), zip(fractions[1:], steps[1:])):
        if s0 == s1:
            raise ConfigError(f"config key 'train.milestones': fractions {f0} and {f1} both fall on optimizer "
                              f"step {s0} with train.batch_size={global_batch} and train.total_images="
                              f"{total_images}: raise total_images, lower batch_size or drop one fraction")
    return tuple(steps)


def plan(train_cfg, fwd_flops: float) -> Budget:
    """The budget of a TrainConfig for a model of `fwd_flops` forward FLOPs per image: its milestones and its
    loss-only budgets (train.loss_milestones; one falling on a milestone's step is that milestone)."""
    total, batch = train_cfg.total_images, train_cfg.batch_size
    fid = milestone_steps(total, train_cfg.milestones, batch)
    extra = list(getattr(train_cfg, "loss_milestones", None) or [])
    # Two loss-only fractions on one step are one budget (they are extra points of a curve, not milestones a
    # study's cells are keyed on), as is one on a milestone's step.
    loss = {_nearest_step(f, total, batch) for f in extra} - set(fid)
    return Budget(global_batch=batch, milestone_steps=fid, fwd_flops=float(fwd_flops), loss_steps=tuple(sorted(loss)))


def warmup_lr(lr: float, warmup_images: int, images_after_step: int) -> float:
    """Linear warm-up counted in images: the step that reaches n images uses lr x min(1, n / warmup)."""
    return lr if warmup_images <= 0 else lr * min(1.0, images_after_step / warmup_images)
