"""Reference statistics of a real data set, computed once per data set and extractor and cached on disk."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study.atomic import write_atomic
from study.identity import stable_hash
from study.metrics.extractors import FeatureExtractor, extract_features
from study.metrics.fid import FeatureSums, noise_floor
from study.shards.format import _key_digest

# Reference features kept for KID: clean-fid's KID draws subsets of at most 1000 rows, so a fixed pool of
# this many (80 MB at 2048 dims) serves it whatever the set's size; a smaller set is kept whole.
KID_POOL = 10_000


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


@dataclass
class ReferenceSums:
    """Streaming reference statistics: exact feature sums (count, sum, sum of outer products; float64) plus a
    bounded KID pool, the KID_POOL rows of smallest key hash, kept in the set's order (position).

    Pieces of one set, summed in any grouping, give the same mean and covariance as np.mean / np.cov of all
    its features (to float64 rounding) and the same pool, so the set can be split over any number of tasks.
    """

    sums: FeatureSums | None = None
    pool_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    pool_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pool_feats: np.ndarray | None = None  # float32 rows

    def update(self, feats, hashes, positions) -> None:
        """Add N x D features of images with these key hashes (uint64) and positions in the set (int64)."""
        f = np.asarray(feats, dtype=np.float64)
        self.merge(ReferenceSums(FeatureSums.of(f), np.asarray(hashes, np.uint64), np.asarray(positions, np.int64),
                                 f.astype(np.float32)))

    def merge(self, other: "ReferenceSums") -> None:
        """Add the sums and pool of another piece of the same set (another shard, another batch)."""
        if other.sums is None:
            return
        self.sums = other.sums if self.sums is None else self.sums + other.sums
        feats = other.pool_feats if self.pool_feats is None else np.concatenate([self.pool_feats, other.pool_feats])
        hashes, pos = np.concatenate([self.pool_hash, other.pool_hash]), np.concatenate([self.pool_pos, other.pool_pos])
        if len(hashes) > KID_POOL:
            keep = np.sort(np.argsort(hashes, kind="stable")[:KID_POOL])
            feats, hashes, pos = feats[keep], hashes[keep], pos[keep]
        self.pool_feats, self.pool_hash, self.pool_pos = feats, hashes, pos

    def mu_sigma(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (np.cov's default, as clean-fid) of every feature added."""
        if self.sums is None:
            raise ValueError("no images in the reference set")
        return self.sums.stats()

    def pool(self) -> np.ndarray:
        """The KID pool's features in the set's order."""
        return self.pool_feats[np.argsort(self.pool_pos, kind="stable")]

    def save(self, path: str | Path) -> None:
        """Atomic .npz of the sums and the pool (a finished shard's record; count 0 if it held no image)."""
        s = self.sums
        arrays = {} if s is None else dict(total=s.total, outer=s.outer, pool_hash=self.pool_hash,
                                           pool_pos=self.pool_pos, pool_feats=self.pool_feats)
        write_atomic(Path(path), lambda f: np.savez(f, count=0 if s is None else s.count, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceSums":
        """Read what `save` wrote."""
        with np.load(path) as a:
            if int(a["count"]) == 0:
                return cls()
            return cls(FeatureSums(int(a["count"]), a["total"], a["outer"]), a["pool_hash"], a["pool_pos"],
                       a["pool_feats"])


def merged(parts) -> ReferenceSums:
    """The sums of several pieces of one set together."""
    out = ReferenceSums()
    for p in parts:
        out.merge(p)
    return out


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


def cached_reference(cache_dir: str | Path, key: str) -> ReferenceStats | None:
    """The complete cache entry `key` in cache_dir, or None."""
    stem = Path(cache_dir) / key
    return load_reference(stem) if all(p.is_file() for p in _paths(stem)) else None


def compute_reference(extractor: FeatureExtractor, images, cache_dir: str | Path, key_parts: dict,
                      batch_size: int = 256, floor_images=None, floor_n: int | None = None) -> ReferenceStats:
    """Reference statistics of images (read only on a cache miss), with the noise floor of floor_images."""
    key = reference_key(extractor.name, key_parts, floor_n)
    hit = cached_reference(cache_dir, key)
    if hit is not None:
        return hit
    feats = extract_features(extractor, images, batch_size)
    acc = ReferenceSums()
    acc.update(feats, [_key_digest(f"kid:{i}") for i in range(len(feats))], np.arange(len(feats)))
    ref = reference_stats(acc, extractor.name, key, key_parts)
    if floor_images is not None:
        floor_feats = extract_features(extractor, floor_images, batch_size)
        ref.floor_n = len(floor_feats) if floor_n is None else floor_n
        ref.floor_fid = noise_floor(floor_feats, ref.mu, ref.sigma, ref.floor_n)
    save_reference(ref, cache_dir)
    return ref


def reference_stats(acc: ReferenceSums, name: str, key: str, key_parts: dict) -> ReferenceStats:
    """The cache entry of accumulated sums (the noise floor is added by the caller)."""
    mu, sigma = acc.mu_sigma()
    return ReferenceStats(mu=mu, sigma=sigma, feats=acc.pool(), name=name, num_images=acc.sums.count, key=key,
                          key_parts=key_parts)
