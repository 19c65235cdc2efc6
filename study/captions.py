"""Evaluation prompts from COCO-2014 caption annotations (the paper's evaluation prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def load_coco_captions(path: str | Path, limit: int | None = None, seed: int = 0) -> list[str]:
    """Evaluation prompts from COCO-2014 caption annotations: one caption per image, as the paper."""
    path = Path(path)
    try:
        ann = json.loads(path.read_text())
        by_image: dict[int, str] = {}
        for a in ann["annotations"]:
            by_image.setdefault(int(a["image_id"]), str(a["caption"]).strip())
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a COCO captions file (expected 'annotations' with 'image_id' and "
                         f"'caption', as captions_val2014.json): {err}") from None
    ids = sorted(by_image)
    if limit is not None and limit < len(ids):
        ids = sorted(np.random.default_rng(seed).choice(ids, size=limit, replace=False).tolist())
    return [by_image[i] for i in ids]
