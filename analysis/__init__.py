"""ldm-scaling: analysis."""
