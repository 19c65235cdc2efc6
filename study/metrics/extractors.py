"""Feature extractors for FID and KID: clean-fid's Inception for real data, the digit classifier for digits."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from cleanfid.downloads_helper import inception_url
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer

from study.metrics.classifier import DigitClassifier, as_images

INCEPTION_FILE = "inception-2015-12-05.pt"  # the only name clean-fid's InceptionV3W looks for


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps float N x C x H x W images in [0, 255] to N x dim features; name goes into cache keys."""

    name: str
    dim: int

    def features(self, images: torch.Tensor) -> torch.Tensor: ...


class MissingInceptionError(FileNotFoundError, ValueError):
    """The Inception weights file is not where it was said to be (nothing is downloaded at run time)."""


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to 3 channels, alpha dropped: what PIL's convert('RGB') does in clean-fid."""
    c = images.shape[1]
    if c == 1:
        return images.expand(-1, 3, -1, -1)
    if c in (3, 4):
        return images[:, :3]
    raise ValueError(f"expected 1, 3 or 4 channels, got {c}")


def iter_batches(images, batch_size: int) -> Iterator[torch.Tensor]:
    """Float batches from a tensor/array of images, or from an iterable already yielding batches."""
    if torch.is_tensor(images) or isinstance(images, np.ndarray):
        yield from as_images(images).split(batch_size)
        return
    if not isinstance(images, Iterable):
        raise TypeError(f"images must be a tensor, an array or an iterable of batches, not {type(images)}")
    for batch in images:
        yield as_images(batch)


def extract_features(extractor: FeatureExtractor, images, batch_size: int = 256) -> np.ndarray:
    """All features of the images (tensor, array or iterable of batches) as a float32 numpy array."""
    feats = [extractor.features(b).detach().cpu().float().numpy() for b in iter_batches(images, batch_size)]
    if not feats:
        raise ValueError("no images to extract features from")
    return np.concatenate(feats)


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ClassifierExtractor:
    """Penultimate features of a DigitClassifier: the embedded default's domain FID."""

    def __init__(self, classifier: DigitClassifier, name: str | None = None, batch_size: int = 1024):
        self.classifier = classifier.eval()
        self.dim = classifier.config.feature_dim
        # the weights hash keys the reference cache: a retrained classifier never reuses stale statistics
        self.name = name or f"digits-classifier-{weights_hash(classifier)[:12]}"
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """Where the classifier (and so its features) lives."""
        return self.classifier.head.weight.device

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """N x dim features on the classifier's device."""
        x = as_images(images)
        return torch.cat([self.classifier.features(b) for b in x.split(self.batch_size)])


def _load_inception_v3w(path: Path) -> InceptionV3W:
    """clean-fid's wrapper, which only accepts a folder holding the fixed file name, loaded from any file."""
    if path.name == INCEPTION_FILE:
        return InceptionV3W(str(path.parent), download=False)
    with tempfile.TemporaryDirectory() as tmp:  # torch.jit.load reads the whole file: the link may go after
        os.symlink(path.resolve(), os.path.join(tmp, INCEPTION_FILE))
        return InceptionV3W(tmp, download=False)


class InceptionExtractor:
    """clean-fid's torchscript Inception-v3 (2048-d pool features) with its 'clean' PIL bicubic resize."""

    dim = 2048

    def __init__(self, model: InceptionV3W, name: str, device: str | torch.device = "cpu", batch_size: int = 64):
        self.model = model.to(device).eval()
        self.name = name
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.resize = build_resizer("clean")  # the resize clean-fid applies per image in "clean" mode

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        """Load the Inception torchscript file (or a folder holding inception-2015-12-05.pt); never downloads."""
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / INCEPTION_FILE
        if not path.is_file():
            raise MissingInceptionError(
                f"Inception weights not found at {path}. Nothing is downloaded at run time: fetch clean-fid's "
                f"torchscript Inception once on a machine with network ({inception_url}), copy it to this "
                "machine and set eval.inception_path to it."
            )
        from study.errors import reading

        with reading(path, "clean-fid's Inception file", f"replace it with inception-2015-12-05.pt from "
                     f"{inception_url} and point eval.inception_path at it"):
            model = _load_inception_v3w(path)
        return cls(model, name=f"cleanfid-{path.stem}-clean", device=device, batch_size=batch_size)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Each image (any size) to RGB 299 x 299 float on the CPU: clean-fid's per-image step before the model."""
        # as clean-fid's get_model_features: each image HWC float -> PIL bicubic 299x299 without quantising
        arrays = to_rgb(as_images(images)).detach().cpu().float().numpy().transpose(0, 2, 3, 1)
        resized = np.stack([self.resize(np.ascontiguousarray(a)) for a in arrays])
        return torch.from_numpy(resized.transpose(0, 3, 1, 2).copy())

    @torch.no_grad()
    def embed(self, prepared: torch.Tensor) -> torch.Tensor:
        """N x 2048 features of images already through `prepare` (the model alone, in batches)."""
        return torch.cat([self.model(b.to(self.device)) for b in prepared.split(self.batch_size)])

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """N x 2048 features on the model's device."""
        x = as_images(images)
        return torch.cat([self.embed(self.prepare(b)) for b in x.split(self.batch_size)])
