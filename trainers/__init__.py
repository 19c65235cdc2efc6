"""ldm-scaling: trainers. Train one ladder width per run; one run yields every training-compute budget."""

from trainers.checkpoint import load_unet
from trainers.rundir import NonFiniteLossError, intact_milestones, load_milestones, run_dir_for, size_status
from trainers.run import train_size

__all__ = ["train_size", "run_dir_for", "load_milestones", "load_unet", "NonFiniteLossError",
           "size_status", "intact_milestones"]
