"""ldm-scaling: scaling-law studies of latent diffusion models (the study core)."""

__version__ = "0.1.0"
