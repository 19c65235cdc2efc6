"""The prepared training data (latents and caption embeddings) and its order, a pure function of position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from study.ladder import Geometry

FILES = ("latents.npy", "caption_table.npy", "caption_index.npy", "uncond.npy", "meta.json")


class PreparedData:
    """Memory-mapped arrays written by `study prepare`; batches are drawn by position in the sample stream."""

    def __init__(self, root: str | Path, seed: int):
        self.root = Path(root)
        missing = [f for f in FILES if not (self.root / f).exists()]
        if missing:
            raise FileNotFoundError(f"prepared data {self.root} lacks {', '.join(missing)}: run `study prepare` "
                                    f"with the same config first")
        self.meta = json.loads((self.root / "meta.json").read_text())
        load = lambda name: np.load(self.root / name, mmap_mode="r")  # noqa: E731
        self.latents, self.table = load("latents.npy"), load("caption_table.npy")
        self.caption_index, self.uncond = load("caption_index.npy"), load("uncond.npy")
        self._check()
        self.seed = int(seed)
        self._perms: dict[int, np.ndarray] = {}

    def _check(self) -> None:
        n, (c, h, w), (t, d) = self.meta["n_train"], self.meta["latent_shape"], self.meta["context_shape"]
        expect = {"latents.npy": (self.latents.shape, (n, c, h, w)),
                  "caption_table.npy": (self.table.shape[1:], (t, d)),
                  "caption_index.npy": (self.caption_index.shape, (n,)),
                  "uncond.npy": (self.uncond.shape, (1, t, d))}
        for name, (got, want) in expect.items():
            if tuple(got) != tuple(want):
                raise ValueError(f"{self.root / name} has shape {tuple(got)}, meta.json implies {tuple(want)}: "
                                 f"the prepared data is incomplete or mixed; rerun `study prepare`")
        if h != w:
            raise ValueError(f"{self.root}: latents are {h}x{w}; the UNet ladder needs square latents")
        if n == 0 or int(np.max(self.caption_index)) >= len(self.table):
            raise ValueError(f"{self.root}/caption_index.npy points past caption_table.npy; rerun `study prepare`")

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def geometry(self) -> Geometry:
        (c, h, _), (t, d) = self.meta["latent_shape"], self.meta["context_shape"]
        return Geometry(in_channels=int(c), sample_size=int(h), context_dim=int(d), tokens=int(t))

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            # Keyed by (seed, epoch) alone, so a resumed or restarted run draws the same order.
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self))
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> np.ndarray:
        """Training-set indices at positions [start, start + count) of the endless shuffled stream."""
        pos = np.arange(start, start + count)
        epochs, offsets = np.divmod(pos, len(self))
        return np.concatenate([self._perm(int(e))[offsets[epochs == e]] for e in np.unique(epochs)])

    def batch(self, start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents [count, C, H, W] and caption embeddings [count, T, D], float32, at stream positions."""
        idx = self.indices(start, count)
        order = np.argsort(idx, kind="stable")  # read the memory map in file order, then restore the draw order
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        lat = np.asarray(self.latents[idx[order]])[inv]
        ctx = np.asarray(self.table[np.asarray(self.caption_index[idx])])
        return _to_device(lat, device), _to_device(ctx, device)

    def uncond_embedding(self, device: torch.device) -> torch.Tensor:
        """The empty prompt's hidden states [1, T, D], used when a caption is dropped."""
        return _to_device(self.uncond, device)


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if device.type == "cuda":  # pinned host memory lets the copy overlap the previous step's kernels
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
