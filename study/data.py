"""Image-caption data sets: the embedded digits, an HF-style image folder, COCO caption prompts."""

from __future__ import annotations

import json
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
    pick = lambda idx: ImageCaptionSet(images[idx], [captions[i] for i in idx], labels[idx])  # noqa: E731
    return pick(tr), pick(ho)


def _load_image(path: Path, resolution: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        # Resize the short side then centre-crop, as SD's training pipelines do.
        w, h = im.size
        s = resolution / min(w, h)
        im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def read_metadata(root: str | Path) -> list[dict]:
    """Rows of an image folder's metadata.jsonl, checked for the file_name and text fields."""
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.exists():
        raise ValueError(f"{meta} not found: an image folder needs metadata.jsonl with one "
                         '{"file_name": ..., "text": ...} object per line (the HF imagefolder layout)')
    rows = []
    for n, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta}:{n}: not valid JSON ({err.msg}): fix or remove that line") from None
        if "file_name" not in row or "text" not in row:
            raise ValueError(f"{meta}:{n}: needs both 'file_name' and 'text' fields, got {sorted(row)}")
        if not (root / row["file_name"]).exists():
            raise ValueError(f"{meta}:{n}: image {row['file_name']!r} not found under {root}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{meta} has no rows: add one line per image")
    return rows


def load_imagefolder_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """An HF-style image folder (metadata.jsonl with file_name, text) as (train, held-out) sets."""
    root = Path(data_cfg.root)
    rows = read_metadata(root)
    rng = np.random.default_rng(data_cfg.split_seed)
    order = rng.permutation(len(rows))
    n_held = max(1, int(round(data_cfg.eval_fraction * len(rows))))
    sets = []
    for idx in (np.sort(order[n_held:]), np.sort(order[:n_held])):
        images = np.stack([_load_image(root / rows[i]["file_name"], data_cfg.resolution) for i in idx])
        sets.append(ImageCaptionSet(images, [str(rows[i]["text"]) for i in idx]))
    return sets[0], sets[1]


def load_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """The (train, held-out) split of the configured data set."""
    if data_cfg.name == "digits":
        return load_digits_splits(data_cfg)
    return load_imagefolder_splits(data_cfg)


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
