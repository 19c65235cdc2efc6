"""Reference statistics of a real data set, computed once per data set and extractor and cached on disk."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.atomic import write_atomic
from study.identity import stable_hash
from study.metrics.extractors import FeatureExtractor, extract_features
from study.metrics.fid import feature_stats, noise_floor


@dataclass
class ReferenceStats:
    """Mean, covariance and features of real images under one extractor, with their noise floor."""

    mu: np.ndarray
    sigma: np.ndarray
    feats: np.ndarray  # float32 rows, kept for KID
    name: str  # the extractor's name: features of another extractor are not comparable
    num_images: int
    floor_fid: float | None = None  # real-vs-real FID of floor_n held-out images: the best reachable FID
    floor_n: int | None = None
    key: str = ""
    key_parts: dict | None = None

    def meta(self) -> dict:
        """The JSON side of the cache entry."""
        return {"name": self.name, "num_images": self.num_images, "floor_fid": self.floor_fid,
                "floor_n": self.floor_n, "key": self.key, "key_parts": self.key_parts, "dim": int(len(self.mu))}


def reference_key(extractor_name: str, key_parts: dict, floor_n: int | None = None) -> str:
    """Cache key: readable extractor name plus a hash of everything that defines the statistics."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", extractor_name)
    return f"{slug}-{stable_hash({'extractor': extractor_name, 'floor_n': floor_n, **key_parts}, 16)}"


def _paths(stem: Path) -> tuple[Path, Path]:
    # not with_suffix: it would cut a stem at any dot inside it
    return stem.parent / f"{stem.name}.npz", stem.parent / f"{stem.name}.json"


def save_reference(ref: ReferenceStats, cache_dir: str | Path) -> Path:
    """Write <key>.npz then <key>.json (the JSON last: its presence marks a complete entry)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    npz, meta_path = _paths(cache_dir / ref.key)
    write_atomic(npz, lambda f: np.savez(f, mu=ref.mu, sigma=ref.sigma, feats=ref.feats.astype(np.float32)))
    meta = json.dumps(ref.meta(), indent=2, default=str).encode()
    write_atomic(meta_path, lambda f: f.write(meta))
    return npz


def load_reference(path: str | Path) -> ReferenceStats:
    """Load a cache entry from its .npz, its .json or their common stem."""
    path = Path(path)
    npz, meta_path = _paths(path.with_suffix("") if path.suffix in (".npz", ".json") else path)
    meta = json.loads(meta_path.read_text())
    with np.load(npz) as arrays:
        mu, sigma, feats = arrays["mu"], arrays["sigma"], arrays["feats"]
    return ReferenceStats(mu=mu, sigma=sigma, feats=feats, name=meta["name"], num_images=meta["num_images"],
                          floor_fid=meta["floor_fid"], floor_n=meta["floor_n"], key=meta["key"],
                          key_parts=meta["key_parts"])


def compute_reference(extractor: FeatureExtractor, images, cache_dir: str | Path, key_parts: dict,
                      batch_size: int = 256, floor_images=None, floor_n: int | None = None) -> ReferenceStats:
    """Reference statistics of images (read only on a cache miss), with the noise floor of floor_images."""
    key = reference_key(extractor.name, key_parts, floor_n)
    stem = Path(cache_dir) / key
    if all(p.is_file() for p in _paths(stem)):
        return load_reference(stem)
    feats = extract_features(extractor, images, batch_size)
    mu, sigma = feature_stats(feats)
    ref = ReferenceStats(mu=mu, sigma=sigma, feats=feats, name=extractor.name, num_images=len(feats),
                         key=key, key_parts=key_parts)
    if floor_images is not None:
        floor_feats = extract_features(extractor, floor_images, batch_size)
        ref.floor_n = len(floor_feats) if floor_n is None else floor_n
        ref.floor_fid = noise_floor(floor_feats, mu, sigma, ref.floor_n)
    save_reference(ref, cache_dir)
    return ref
