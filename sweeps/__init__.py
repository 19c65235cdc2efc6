"""ldm-scaling: sweeps."""
