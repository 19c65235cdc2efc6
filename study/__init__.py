"""ldm-scaling: study."""
