"""The embedded digits (in memory) and COCO caption prompts; real data sets are streamed (study/shards/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# A few templates per class, so the text encoder sees varied wording for the same digit.
CAPTION_TEMPLATES = (
    "a handwritten digit {name}",
    "the number {name}, written by hand",
    "a scanned image of a handwritten {name}",
    "digit {digit}",
)


@dataclass
class ImageCaptionSet:
    """Images (uint8, N x C x H x W), one caption per image, and a class label where known."""

    images: np.ndarray
    captions: list[str]
    labels: np.ndarray | None = None
    keys: list[str] | None = None  # a stable id per sample (the shards' meta key)

    def __len__(self) -> int:
        return len(self.images)


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, held = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def digit_captions(labels: np.ndarray, seed: int) -> list[str]:
    """One caption per label, the template drawn at random (fixed by seed)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(CAPTION_TEMPLATES), size=len(labels))
    return [CAPTION_TEMPLATES[p].format(name=DIGIT_NAMES[k], digit=int(k)) for p, k in zip(picks, labels)]


def load_digits_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """scikit-learn's handwritten digits as (train, held-out) image-caption sets."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    # 0..16 grey levels -> 0..255 so images share the [0, 255] convention of real data and FID
    images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = raw.target.astype(np.int64)
    if data_cfg.resolution != images.shape[-1]:
        import torch
        import torch.nn.functional as F

        t = F.interpolate(torch.from_numpy(images).float(), size=data_cfg.resolution, mode="bilinear",
                          align_corners=False)
        images = t.round().clamp(0, 255).to(torch.uint8).numpy()
    tr, ho = _stratified_split(labels, data_cfg.eval_fraction, data_cfg.split_seed)
    captions = digit_captions(labels, data_cfg.split_seed)
    pick = lambda idx: ImageCaptionSet(images[idx], [captions[i] for i in idx], labels[idx],  # noqa: E731
                                       [f"digits-{i:04d}" for i in idx])
    return pick(tr), pick(ho)


def _load_image(path: Path, resolution: int) -> np.ndarray:
    """One image file, resized on its short side and centre-cropped: uint8 [3, H, W] (the readers' decode)."""
    from study.shards.readers import decode_image

    return decode_image(Path(path).read_bytes(), resolution)


def load_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """The (train, held-out) split of an embedded data set, in memory; streamed sets (image folders,
    WebDataset, parquet) are never held whole: `study prepare` reads them into shards."""
    from study.datasets import dataset

    if dataset(data_cfg.name).layout is not None:
        raise ValueError(f"data.name={data_cfg.name} is streamed, not loaded in memory: run `study prepare` and "
                         f"read its shards (study.shards.format.ShardIndex)")
    return load_digits_splits(data_cfg)
