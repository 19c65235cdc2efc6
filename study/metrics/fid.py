"""FID and KID from features (clean-fid's math), their bootstrap noise, and the real-vs-real noise floor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cleanfid.fid import frechet_distance, kernel_distance


def _as_feats(feats, what: str = "features") -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"{what} must be N x D with N >= 2, got shape {f.shape}")
    return f


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of N x D features, as clean-fid's fid_from_feats."""
    f = _as_feats(feats)
    return f.mean(axis=0), np.cov(f, rowvar=False)


@dataclass(frozen=True)
class FeatureSums:
    """Sufficient statistics of features (count, sum, sum of outer products; float64): slices merge by adding.

    One FID of N samples can then be computed by several tasks, each generating and featurizing a slice:
    the merged sums give the same mean and covariance as the N features in one place, up to float rounding.
    """

    count: int
    total: np.ndarray  # [D]
    outer: np.ndarray  # [D, D]

    @classmethod
    def of(cls, feats) -> "FeatureSums":
        """The sums of N x D features (N >= 1: a slice may hold a single sample)."""
        f = np.asarray(feats, dtype=np.float64)
        if f.ndim != 2 or len(f) < 1:
            raise ValueError(f"features must be N x D with N >= 1, got shape {f.shape}")
        return cls(len(f), f.sum(axis=0), f.T @ f)

    def __add__(self, other: "FeatureSums") -> "FeatureSums":
        if self.total.shape != other.total.shape:
            raise ValueError(f"cannot merge features of dimension {len(self.total)} and {len(other.total)}: "
                             f"the slices were featurized by different extractors")
        return FeatureSums(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance, as `feature_stats` of the features themselves."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, the merged slices hold {self.count}")
        mu = self.total / self.count
        return mu, (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


def merge_sums(parts) -> FeatureSums:
    """The sums of every slice together (the order does not matter beyond float rounding)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no slices to merge")
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def fid_from_sums(sums: FeatureSums, ref_mu, ref_sigma) -> float:
    """FID of the generated features summarised by (merged) sums, against reference statistics."""
    return fid_from_stats(*sums.stats(), ref_mu, ref_sigma)


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between two Gaussians, via clean-fid."""
    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def fid(gen_feats, ref_mu, ref_sigma) -> float:
    """FID of generated features against reference statistics."""
    return fid_from_stats(*feature_stats(gen_feats), ref_mu, ref_sigma)


def kid(gen_feats, ref_feats, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID (unbiased MMD^2, cubic polynomial kernel) via clean-fid, seeded and with no repeated work."""
    gen, ref = _as_feats(gen_feats, "generated features"), _as_feats(ref_feats, "reference features")
    # clean-fid draws subsets of m = min(N_gen, N_ref, 1000) from each side; when both sets already
    # have exactly m rows every subset is the full sets, so one subset gives the identical number
    if len(gen) == len(ref) <= max_subset_size:
        num_subsets = 1
    # clean-fid samples with the global numpy RNG: seed it for reproducible numbers, then restore it
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(kernel_distance(gen, ref, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def _eigh(m: torch.Tensor, vectors: bool = False):
    # on CPU numpy's LAPACK beat torch's by 1.6x (eigvalsh) to 2.6x (eigh) at D = 2048 on this machine
    if m.is_cuda:
        return torch.linalg.eigh(m) if vectors else torch.linalg.eigvalsh(m)
    if vectors:
        return tuple(torch.from_numpy(a) for a in np.linalg.eigh(m.numpy()))
    return torch.from_numpy(np.linalg.eigvalsh(m.numpy()))


def bootstrap_fids(gen_feats, ref_mu, ref_sigma, counts, device: str | torch.device = "cpu") -> np.ndarray:
    """FID of each bootstrap replicate (a row of counts per generated sample) against the reference."""
    f64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
    x, counts, ref_mu, ref_sigma = f64(_as_feats(gen_feats)), f64(counts), f64(ref_mu), f64(ref_sigma)
    n, d = x.shape
    # Tr sqrt(S_b S_ref) = sum sqrt(eig(R S_b R)) with R = S_ref^(1/2) symmetric: one symmetric eigvalsh per
    # replicate instead of one general sqrtm, the costly step of frechet_distance (tens of s at D = 2048)
    w, v = _eigh(ref_sigma, vectors=True)
    z = x @ ((v * w.clamp(min=0).sqrt()) @ v.T)
    sq_norms = (x * x).sum(dim=1)
    gram = z @ z.T if n <= d else None  # with fewer samples than dims the N x N problem is the small one
    out = []
    for c in counts:
        mu = c @ x / n
        tr_gen = (c @ sq_norms - n * mu @ mu) / (n - 1)
        zbar = c @ z / n
        if gram is None:
            zc = z - zbar
            eig = _eigh((zc * c[:, None]).T @ zc / (n - 1))
        else:
            keep = c > 0  # samples not drawn would only add zero rows and columns
            a = z[keep] @ zbar
            centred = gram[keep][:, keep] - a[:, None] - a[None, :] + zbar @ zbar
            root_c = c[keep].sqrt()
            eig = _eigh(root_c[:, None] * centred * root_c[None, :] / (n - 1))
        diff = mu - ref_mu
        out.append(diff @ diff + tr_gen + ref_sigma.trace() - 2 * eig.clamp(min=0).sqrt().sum())
    return torch.stack(out).cpu().numpy()


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3  # clean-fid's KID kernel


def bootstrap_kids(gen_feats, ref_feats, counts: np.ndarray, ref_size: int, seed: int = 0) -> np.ndarray:
    """Unbiased MMD^2 of each bootstrap replicate (rows of counts over gen_feats) against ref_size ref rows."""
    x = _as_feats(gen_feats)
    y = np.asarray(ref_feats)
    y = _as_feats(y[np.random.default_rng(seed).permutation(len(y))[:ref_size]], "reference features")
    m, r = len(x), len(y)
    kxx = _poly_kernel(x, x)
    kyy = _poly_kernel(y, y)
    kxy_rows = _poly_kernel(x, y).sum(axis=1)
    counts = np.asarray(counts, dtype=np.float64)
    # a replicate's pairs of distinct draws: c^T Kxx c minus the draws paired with themselves
    sxx = np.einsum("bi,bi->b", counts @ kxx, counts) - counts @ np.diag(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return sxx / (m * (m - 1)) + syy / (r * (r - 1)) - 2 * (counts @ kxy_rows) / (m * r)


def bootstrap_std(gen_feats, ref_mu, ref_sigma, ref_feats=None, n: int = 30, seed: int = 0,
                  max_subset_size: int = 1000, device: str | torch.device = "cpu") -> dict[str, float]:
    """Std of FID (and KID if ref_feats) over n resamplings of the generated features with replacement."""
    x = _as_feats(gen_feats)
    if n < 2:
        raise ValueError(f"a bootstrap std needs n >= 2 replicates, got {n}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=n)
    # on a GPU (device=) the D = 2048 eigenproblems take milliseconds; on 2 CPU cores about 3 s each
    out = {"fid_std": float(np.std(bootstrap_fids(x, ref_mu, ref_sigma, counts, device), ddof=1))}
    if ref_feats is not None:
        # KID on pools of at most max_subset_size rows (clean-fid's subset size) keeps this O(1000^2 D);
        # above that, the U-statistic's leading 1/N variance rescales the pool's std to N samples
        pool = min(len(x), max_subset_size)
        xs = x[rng.permutation(len(x))[:pool]]
        pool_counts = rng.multinomial(pool, np.full(pool, 1 / pool), size=n)
        ref_size = min(len(ref_feats), max_subset_size)
        kids = bootstrap_kids(xs, ref_feats, pool_counts, ref_size, seed=seed)
        out["kid_std"] = float(np.std(kids, ddof=1) * np.sqrt(pool / len(x)))
    return out


def noise_floor(real_feats, ref_mu, ref_sigma, n: int | None = None, seed: int = 0) -> float:
    """FID of n real images (held-out split) against the reference: the floor any model meets at n samples."""
    f = _as_feats(real_feats, "real features")
    n = len(f) if n is None else n
    if not 2 <= n <= len(f):
        raise ValueError(f"noise floor needs 2 <= n <= {len(f)} real images, got n={n}")
    idx = np.random.default_rng(seed).choice(len(f), size=n, replace=False)
    return fid(f[idx], ref_mu, ref_sigma)
