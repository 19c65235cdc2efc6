"""ldm-scaling: trainers."""
