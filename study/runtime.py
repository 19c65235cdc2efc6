"""Where the study runs: the torch device of a stage and the W&B mode, each decided in one place."""

from __future__ import annotations

import os

WANDB_MODES = ("offline", "online", "disabled")


def device(gpus: float = 1.0):
    """CUDA when the stage may use a GPU (gpus > 0) and one is visible, else the CPU."""
    import torch

    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def wandb_mode(configured: str) -> str | None:
    """The W&B mode a study logs with: None when disabled; `online` only with WANDB_API_KEY in the
    environment (otherwise offline, for `wandb sync` later); a WANDB_MODE set in the environment (as
    `make demo` does) wins over an enabled config."""
    if configured not in WANDB_MODES:
        raise ValueError(f"tracking.wandb_mode={configured!r}: expected one of {WANDB_MODES}")
    if configured == "disabled":
        return None
    mode = os.environ.get("WANDB_MODE") or configured
    if mode == "disabled":
        return None
    return "offline" if mode == "online" and not os.environ.get("WANDB_API_KEY") else mode
