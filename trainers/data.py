"""The prepared training data and its order: a batch is a pure function of its position in the sample stream.

Engine: shards read by index through memory maps, chosen over the two libraries the issue names.
- Ray Data (`streaming_split` into Ray Train): its iterators do not promise the same order run to run
  (ray-project/ray#58658, open), and it has no mid-epoch resume: a restart re-reads the input from the
  start and filters it (ray-project/ray#65891). Our guarantee (a resumed run sees exactly the samples an
  uninterrupted one sees) would need a replay of the epoch on every restart.
- mosaicml-streaming's StreamingDataset is deterministic and resumable, but reads only its own MDS
  shards (a second copy of the data next to ours), tracks its position in its own state dict beside
  our checkpoint, and ties the order to its "canonical nodes" setting.
- Index + mmap: `batch(start, count)` maps stream positions to (shard, row) with a few integer
  operations and reads those rows from memory-mapped float16 files. The order needs no state beyond
  the position, so resume and rank slicing are arithmetic; nothing is copied through an object store.
  benchmarks/train_input.py measures it against the in-memory arrays of the embedded default.

Reads: the shards of a window are read whole, one after the other, by a background thread (`_Prefetch`)
before the first batch of the window gathers its rows, and the next window's while this one trains.
So the storage sees large sequential reads of whole files (what network storage serves well), and the
rows a batch gathers come from the OS page cache, which the ranks of a node share (they read the same
windows) instead of each holding a copy. A window should fit the node's page cache.

Order (bounded memory, from (seed, epoch) alone): each epoch permutes the order of the shards, cuts
that order into windows of `window_shards` consecutive shards and permutes the samples inside each
window. The state is one permutation of the shard list plus the permutation of at most a few windows,
so it does not grow with the samples of the data set. A window covering the whole set (the digits) is a
full shuffle, bit for bit the order of the in-memory reader it replaced.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from study.ladder import Geometry
from study.shards.format import INDEX, ShardIndex

SHARDS = "shards"  # the shard set's folder inside a prepared folder (format: study/shards/format.py)
LEGACY_FILES = ("latents.npy", "caption_table.npy", "caption_index.npy", "uncond.npy", "meta.json")
WINDOW_IMAGES = 1 << 20  # samples shuffled together: the window's permutation is 8 MB whatever the data set
_CACHED_WINDOWS = 4  # permutations kept: a batch spans at most two windows, two ranks' batches a few more
_OPEN_SHARDS = 64  # memory maps kept open (each holds a file descriptor)


def micro_batch_start(step_start: int, micro_step: int, rank: int, world: int, micro_batch: int) -> int:
    """Stream position of a rank's micro-batch: ranks and micro-steps tile the global batch, no overlaps."""
    return step_start + (micro_step * world + rank) * micro_batch


class StreamOrder:
    """Position in the endless sample stream -> (shard, row), with windowed per-epoch shuffles."""

    def __init__(self, sizes, seed: int, window_shards: int):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if len(self.sizes) == 0 or self.sizes.min() < 1:
            raise ValueError("a stream needs at least one shard and no empty shard")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])  # shard starts in the data set's order
        self.n = int(self.offsets[-1])
        self.seed, self.window = int(seed), max(1, int(window_shards))
        self.n_windows = -(-len(self.sizes) // self.window)
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._perms: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's shard order and the start of each shard, in that order, within the epoch."""
        if epoch not in self._epochs:
            if self.n_windows == 1:  # one window: shuffling the shards first would change nothing but the seed
                order = np.arange(len(self.sizes))
            else:  # the tags (1 and 2 below) keep the shard and window draws apart
                order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.sizes))
            self._epochs[epoch] = order, np.concatenate([[0], np.cumsum(self.sizes[order])])
            while len(self._epochs) > 2:  # a batch spans at most two epochs
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _perm(self, epoch: int, window: int, count: int) -> np.ndarray:
        key = (epoch, window)
        if key not in self._perms:
            # keyed by (seed, epoch[, window]) alone, so a resumed or restarted run draws the same order;
            # one window is seeded as the full shuffle of the in-memory reader, so its order is unchanged
            entropy = [self.seed, epoch] if self.n_windows == 1 else [self.seed, epoch, 2, window]
            self._perms[key] = np.random.default_rng(entropy).permutation(count)
            while len(self._perms) > _CACHED_WINDOWS:
                self._perms.popitem(last=False)
        self._perms.move_to_end(key)
        return self._perms[key]

    def locate(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) of the samples at positions [start, start + count) of the stream."""
        epochs, offs = np.divmod(np.arange(start, start + count, dtype=np.int64), self.n)
        shard, row = np.empty(count, np.int64), np.empty(count, np.int64)
        for e in np.unique(epochs):
            order, starts = self._epoch(int(e))
            bounds = starts[:: self.window]  # window starts within the epoch (and the end, when it falls there)
            in_e = np.flatnonzero(epochs == e)
            win = np.searchsorted(bounds, offs[in_e], side="right") - 1
            for j in np.unique(win):
                at = in_e[win == j]
                lo, hi = int(starts[j * self.window]), int(starts[min((j + 1) * self.window, len(order))])
                k = lo + self._perm(int(e), int(j), hi - lo)[offs[at] - lo]  # position in the epoch's shard order
                t = np.searchsorted(starts, k, side="right") - 1
                shard[at], row[at] = order[t], k - starts[t]
        return shard, row

    def window_of(self, position: int) -> tuple[int, int]:
        """(epoch, window) of a stream position."""
        epoch, off = divmod(int(position), self.n)
        _, starts = self._epoch(epoch)
        return epoch, int(np.searchsorted(starts[:: self.window], off, side="right") - 1)

    def next_window(self, epoch: int, window: int) -> tuple[int, int]:
        """The window after (epoch, window) in the stream."""
        return (epoch, window + 1) if window + 1 < self.n_windows else (epoch + 1, 0)

    def window_shards(self, epoch: int, window: int) -> list[int]:
        """The shards of a window, in the epoch's shard order."""
        order, _ = self._epoch(epoch)
        return [int(s) for s in order[window * self.window:(window + 1) * self.window]]

    def indices(self, start: int, count: int) -> np.ndarray:
        """Data-set indices (shards concatenated in their written order) at positions [start, start + count)."""
        shard, row = self.locate(start, count)
        return self.offsets[shard] + row

    def state_nbytes(self) -> int:
        """Bytes the order holds: shard lists and cached window permutations, never a permutation of N."""
        arrays = [self.sizes, self.offsets, *(a for pair in self._epochs.values() for a in pair),
                  *self._perms.values()]
        return sum(a.nbytes for a in arrays)


class _ShardFiles:
    """The train split of a shard set: memory maps opened on demand, a bounded number at a time."""

    def __init__(self, index: ShardIndex):
        self.index = index
        records = index.shards("train")
        self.names, self.sizes = [r["name"] for r in records], [int(r["n"]) for r in records]
        self._open: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.prefetch = _Prefetch([[index.paths(n)["latents"], index.paths(n)[index.caption_file]]
                                   for n in self.names])

    def arrays(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if shard not in self._open:
            name, n = self.names[shard], self.sizes[shard]
            pair = self.index.latents(name), self.index.context(name)
            for kind, a, want in zip(("latents", self.index.caption_file), pair,
                                     (self.index.latent_shape, self.index.caption_shape)):
                if tuple(a.shape) != (n, *want):
                    raise ValueError(f"{self.index.paths(name)[kind]} has shape {tuple(a.shape)}, index.json says "
                                     f"{(n, *want)}: the shard set is incomplete or mixed; rerun `study prepare`")
            self._open[shard] = pair
            while len(self._open) > _OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open.move_to_end(shard)
        return self._open[shard]

    def read(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat, ctx = self.arrays(shard)
        return lat[rows], ctx[rows]


class _Prefetch:
    """Whole-shard sequential reads in a background thread: a window's files are read from start to end, in
    large blocks, so the rows gathered from their memory maps afterwards come from the page cache."""

    BLOCK = 8 << 20
    KEEP = 4  # windows remembered: one window that is the whole set (the digits) is read once, not every epoch

    def __init__(self, files: list[list[Path]]):
        self.files = files
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: OrderedDict[tuple[int, ...], Future] = OrderedDict()
        self.bytes_read = 0

    def _read(self, shards: tuple[int, ...]) -> None:
        buf = bytearray(self.BLOCK)
        for s in shards:
            for path in self.files[s]:
                with open(path, "rb", buffering=0) as f:  # readinto releases the GIL: training goes on meanwhile
                    while n := f.readinto(buf):
                        self.bytes_read += n

    def request(self, shards: list[int], wait: bool) -> None:
        """Read these shards whole (once per window, in the background); `wait` until they are read."""
        key = tuple(sorted(shards))
        if key not in self._jobs:
            if self._pool is None:  # started on first use: a reader that is never read holds no thread
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch")
            self._jobs[key] = self._pool.submit(self._read, key)
            while len(self._jobs) > self.KEEP:
                self._jobs.popitem(last=False)
        self._jobs.move_to_end(key)
        if wait:
            self._jobs[key].result()  # a read error surfaces here, in the training step

    def __getstate__(self):  # a reader sent to a Ray worker starts its own thread there
        return {**self.__dict__, "_pool": None, "_jobs": OrderedDict()}


class _LegacyArrays:
    """The pre-shard layout (one latents.npy, a caption table and index), read as a single shard."""

    def __init__(self, root: Path, meta: dict):
        load = lambda name: np.load(root / name, mmap_mode="r")  # noqa: E731
        self.latents, self.table, self.caption_index = (load("latents.npy"), load("caption_table.npy"),
                                                       load("caption_index.npy"))
        n, (c, h, w), (t, d) = meta["n_train"], meta["latent_shape"], meta["context_shape"]
        expect = {"latents.npy": (self.latents.shape, (n, c, h, w)),
                  "caption_table.npy": (self.table.shape[1:], (t, d)),
                  "caption_index.npy": (self.caption_index.shape, (n,))}
        for name, (got, want) in expect.items():
            if tuple(got) != tuple(want):
                raise ValueError(f"{root / name} has shape {tuple(got)}, meta.json implies {tuple(want)}: "
                                 f"the prepared data is incomplete or mixed; rerun `study prepare`")
        if n == 0 or int(np.max(self.caption_index)) >= len(self.table):
            raise ValueError(f"{root}/caption_index.npy points past caption_table.npy; rerun `study prepare`")
        self.sizes = [n]
        self.prefetch = None  # one file, read by its memory map

    def read(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.latents[rows], self.table[np.asarray(self.caption_index[rows])]


class PreparedData:
    """The training split of a prepared folder; batches are drawn by position in the sample stream."""

    def __init__(self, root: str | Path, seed: int, window_images: int = WINDOW_IMAGES):
        self.root = Path(root)
        shards = self.root / SHARDS
        if (shards / INDEX).exists():
            index = ShardIndex.load(shards)
            self.source = _ShardFiles(index)
            self.captions = index.captions
            shape, context, shard_size = index.latent_shape, index.context_shape, index.shard_size
            uncond = shards / index.raw["uncond"]
        elif all((self.root / f).exists() for f in LEGACY_FILES):
            meta = json.loads((self.root / "meta.json").read_text())
            self.source = _LegacyArrays(self.root, meta)
            self.captions = "states"
            shape, context, uncond = meta["latent_shape"], meta["context_shape"], self.root / "uncond.npy"
            shard_size = meta["n_train"]
        else:
            raise FileNotFoundError(f"prepared data {self.root} has no {SHARDS}/{INDEX}: run `study prepare` "
                                    f"with the same config first")
        (c, h, w), (t, d) = shape, context
        if h != w:
            raise ValueError(f"{self.root}: latents are {h}x{w}; the UNet ladder needs square latents")
        if sum(self.source.sizes) == 0:
            raise ValueError(f"{self.root}: the training split is empty; check the data set and rerun `study prepare`")
        self.latent_shape, self.context_shape = (int(c), int(h), int(w)), (int(t), int(d))
        self.uncond = np.load(uncond, mmap_mode="r")
        if tuple(self.uncond.shape) != (1, t, d):
            raise ValueError(f"{uncond} has shape {tuple(self.uncond.shape)}, expected {(1, t, d)}: rerun "
                             f"`study prepare`")
        if window_images < 1:
            raise ValueError(f"train.shuffle_window_images must be >= 1, got {window_images}")
        self.seed = int(seed)
        self.order = StreamOrder(self.source.sizes, seed, -(-int(window_images) // max(1, shard_size)))

    def __len__(self) -> int:
        return self.order.n

    @property
    def geometry(self) -> Geometry:
        (c, h, _), (t, d) = self.latent_shape, self.context_shape
        return Geometry(in_channels=c, sample_size=h, context_dim=d, tokens=t)

    def indices(self, start: int, count: int) -> np.ndarray:
        """Training-set indices at positions [start, start + count) of the endless shuffled stream."""
        return self.order.indices(start, count)

    def _read_ahead(self, start: int, count: int) -> None:
        """Have the windows of [start, start + count) read whole (wait for them) and the next one started."""
        prefetch = self.source.prefetch
        if prefetch is None:
            return
        window, last = self.order.window_of(start), self.order.window_of(start + count - 1)
        if (window, last) == getattr(self, "_ahead_of", None):
            return  # the same window as the last batch: read already, and the next one requested
        first = window
        while True:
            prefetch.request(self.order.window_shards(*window), wait=True)
            if window == last:
                break
            window = self.order.next_window(*window)
        prefetch.request(self.order.window_shards(*self.order.next_window(*last)), wait=False)
        self._ahead_of = (first, last)

    def arrays(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Latents [count, C, H, W] (float16) and captions at stream positions: hidden states [count, T, D]
        (float16) or, where the shards keep token ids (self.captions == "tokens"), ids [count, T] (int32)."""
        self._read_ahead(start, count)
        shard, row = self.order.locate(start, count)
        lat = np.empty((count, *self.latent_shape), np.float16)
        ctx = (np.empty((count, self.context_shape[0]), np.int32) if self.captions == "tokens"
               else np.empty((count, *self.context_shape), np.float16))
        for s in np.unique(shard):
            at = np.flatnonzero(shard == s)
            at = at[np.argsort(row[at], kind="stable")]  # read each memory map in file order
            lat[at], ctx[at] = self.source.read(int(s), row[at])
        return lat, ctx

    def batch(self, start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (float32) and captions on device, at stream positions: hidden states (float32) or token ids
        (int64, for the text encoder: `study.text.TextEncoder.encode_ids`)."""
        lat, ctx = self.arrays(start, count)
        return _to_device(lat, device), _to_device(ctx, device, np.int64 if self.captions == "tokens" else np.float32)

    def uncond_embedding(self, device: torch.device) -> torch.Tensor:
        """The empty prompt's hidden states [1, T, D], used when a caption is dropped."""
        return _to_device(self.uncond, device)


def _to_device(a: np.ndarray, device: torch.device, dtype=np.float32) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))
    if device.type == "cuda":  # pinned host memory lets the copy overlap the previous step's kernels
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
