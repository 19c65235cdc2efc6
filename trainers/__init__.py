"""ldm-scaling: trainers. Train one ladder width per run; one run yields every training-compute budget."""

from trainers.checkpoint import load_unet
from trainers.rundir import NonFiniteLossError, load_milestones, run_dir_for
from trainers.run import train_size

__all__ = ["train_size", "run_dir_for", "load_milestones", "load_unet", "NonFiniteLossError"]
