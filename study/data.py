"""The embedded sets (in memory: the digits, the photograph patches) and COCO caption prompts; real data sets
are streamed (study/shards/)."""

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


# -- photograph patches ------------------------------------------------------------------------------------
# The photographs in scikit-image's wheel that super-resolution trains on (its held-out four stay unseen by every
# base model), each named in its captions; the label is the photograph (the domain classifier's class).
PHOTO_NAMES = {"astronaut.png": "astronaut", "brick.png": "brick wall", "cell.png": "cell", "chelsea.png": "cat",
               "coins.png": "coins", "grass.png": "grass", "hubble_deep_field.jpg": "galaxies",
               "ihc.png": "tissue", "motorcycle_left.png": "motorcycle", "page.png": "book page",
               "retina.jpg": "retina", "rocket.jpg": "rocket", "text.png": "text"}
PHOTO_TEMPLATES = (
    "a patch of the {name} photograph",
    "a small grey crop of {name}",
    "a close-up of the {name}",
    "{name}",
)
PHOTO_SHRINK = 4  # photographs shrunk 4x first: an 8x8 patch then spans 32x32 pixels of the original


def load_photo_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """Grey data.resolution-square patches of 13 photographs in scikit-image's wheel, shrunk 4x, each patch in
    one of the 8 rotations/flips. Held out by place: the right data.eval_fraction of every photograph's columns
    gives the held-out patches, the rest the training patches, so no held-out pixel is ever trained on.
    data.photo_patches training and data.photo_heldout held-out patches per photograph, drawn by data.split_seed."""
    import torch

    from study.experiments.superres.data import _dihedral, _read, embedded_dir

    s, base, names = data_cfg.resolution, embedded_dir(), list(PHOTO_NAMES.values())
    rng = np.random.default_rng([data_cfg.split_seed, 0x9E07])
    parts = {"train": ([], [], []), "heldout": ([], [], [])}
    for label, file in enumerate(PHOTO_NAMES):
        img = torch.tensor(_read(base / file, 1, PHOTO_SHRINK)[0])
        h, w = img.shape
        cut = int(round(w * (1 - data_cfg.eval_fraction)))
        for split, (x0, x1), n in (("train", (0, cut), data_cfg.photo_patches),
                                   ("heldout", (cut, w), data_cfg.photo_heldout)):
            if x1 - x0 < s or h < s:
                raise ValueError(f"{file} shrunk {PHOTO_SHRINK}x is {w}x{h}: its {split} part is narrower than "
                                 f"data.resolution={s}; lower data.resolution or data.eval_fraction")
            ys = rng.integers(0, h - s + 1, n)
            xs = rng.integers(x0, x1 - s + 1, n)
            flips = rng.integers(0, 8, n)
            images, labels, keys = parts[split]
            for k, (y, x, f) in enumerate(zip(ys, xs, flips)):
                images.append(_dihedral(img[y:y + s, x:x + s], int(f)).numpy())
                labels.append(label)
                keys.append(f"photos-{Path(file).stem}-{split}-{k:05d}")
    out = []
    for split in ("train", "heldout"):
        images, labels, keys = parts[split]
        labels = np.asarray(labels, dtype=np.int64)
        picks = rng.integers(0, len(PHOTO_TEMPLATES), len(labels))
        captions = [PHOTO_TEMPLATES[p].format(name=names[k]) for p, k in zip(picks, labels)]
        # a fixed shuffle: a shard (and a batch window) mixes every photograph
        order = rng.permutation(len(labels))
        out.append(ImageCaptionSet(np.stack(images)[order][:, None], [captions[i] for i in order], labels[order],
                                   [keys[i] for i in order]))
    return out[0], out[1]


def _load_image(path: Path, resolution: int) -> np.ndarray:
    """One image file, resized on its short side and centre-cropped: uint8 [3, H, W] (the readers' decode)."""
    from study.shards.readers import decode_image

    return decode_image(Path(path).read_bytes(), resolution)

