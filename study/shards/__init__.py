"""Sharded prepared data: the on-disk format (format.py), the source readers and the Ray Data prepare pipeline."""
