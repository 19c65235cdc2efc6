"""Training from shards: the streaming order (coverage, rank slices, bounded state, resume) and a resumed run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import trainers
from trainers import checkpoint as ckpt
from trainers.data import SHARDS, PreparedData, StreamOrder, micro_batch_start
from trainers.run import TEST_HOOKS_ENV

from train_helpers import fake_prepared, tiny_config


def shards_from(legacy, out, shard_size: int):
    """The shard set of a legacy prepared folder (same samples, same order), as `study prepare` writes it."""
    from study.shards.format import UNCOND, shard_name, write_index, write_shard

    lat = np.load(legacy / "latents.npy")
    ctx = np.load(legacy / "caption_table.npy")[np.load(legacy / "caption_index.npy")]
    folder = out / SHARDS
    records = []
    for k, lo in enumerate(range(0, len(lat), shard_size)):
        hi = min(lo + shard_size, len(lat))
        meta = [{"key": f"s{i}", "caption": f"caption {i}", "label": None} for i in range(lo, hi)]
        records.append(write_shard(folder, shard_name("train", k), lat[lo:hi], ctx[lo:hi], meta))
    np.save(folder / UNCOND, np.load(legacy / "uncond.npy"))
    write_index(folder, shard_size, lat.shape[1:], ctx.shape[1:], {"train": records}, bad_samples=0)
    return out


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    return fake_prepared(tmp_path_factory.mktemp("legacy"), n=256)


@pytest.fixture(scope="module")
def shards(legacy, tmp_path_factory):
    return shards_from(legacy, tmp_path_factory.mktemp("shards"), shard_size=64)  # 4 shards of 64


# --- the order ------------------------------------------------------------------------------------

def test_one_window_is_the_in_memory_full_shuffle(legacy, shards):
    # A window holding the whole set reproduces the order (and the bytes) of the in-memory reader it replaced,
    # so the embedded study's results do not move as long as the samples keep their order.
    old, new = PreparedData(legacy, seed=3), PreparedData(shards, seed=3)
    stream = np.concatenate([np.random.default_rng([3, e]).permutation(256) for e in range(3)])
    assert np.array_equal(old.indices(0, 768), stream) and np.array_equal(new.indices(0, 768), stream)
    for start in (0, 250, 700):  # inside an epoch, across an epoch boundary
        for a, b in zip(old.arrays(start, 40), new.arrays(start, 40)):
            assert a.dtype == b.dtype == np.float16 and np.array_equal(a, b)
    assert torch.equal(old.uncond_embedding(torch.device("cpu")), new.uncond_embedding(torch.device("cpu")))


def test_windows_cover_every_sample_once_per_epoch_and_ranks_split_each_batch(shards):
    data = PreparedData(shards, seed=5, window_images=128)  # 2 windows of 2 shards
    assert data.order.n_windows == 2
    world, accum, mb = 2, 2, 4
    batch = world * accum * mb
    seen = []
    for step in range(256 * 3 // batch):  # three epochs of 16-image global batches
        parts = [data.indices(micro_batch_start(step * batch, m, r, world, mb), mb)
                 for m in range(accum) for r in range(world)]
        assert np.array_equal(np.concatenate(parts), data.indices(step * batch, batch))  # ranks tile the batch
        seen.append(np.concatenate(parts))
    epochs = np.concatenate(seen).reshape(3, 256)
    for e in epochs:
        assert sorted(e) == list(range(256))  # each sample exactly once per epoch, on exactly one rank
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    # A window mixes only its own shards: the first 128 positions of an epoch come from two whole shards.
    assert len(set(epochs[0][:128] // 64)) == 2
    assert len({frozenset(e[:128] // 64) for e in epochs}) > 1  # the shards grouped change with the epoch


def test_a_fresh_reader_resumes_mid_stream_identically(shards):
    a = PreparedData(shards, seed=7, window_images=64)
    stream = a.indices(0, 900)  # 3.5 epochs, 4 windows each
    for start, count in ((0, 900), (123, 300), (255, 2), (511, 389)):
        b = PreparedData(shards, seed=7, window_images=64)
        assert np.array_equal(b.indices(start, count), stream[start:start + count])
    lat, ctx = PreparedData(shards, seed=7, window_images=64).arrays(300, 50)
    full_lat = np.load(shards / SHARDS / "train-000000.latents.npy")
    assert np.array_equal(lat[0], np.concatenate([np.load(shards / SHARDS / f"train-00000{k}.latents.npy")
                                                  for k in range(4)])[stream[300]])
    assert ctx.shape == (50, 4, 16) and full_lat.dtype == np.float16
    assert not np.array_equal(PreparedData(shards, seed=8, window_images=64).indices(0, 256), stream[:256])


def test_windows_are_read_whole_in_the_background_one_window_ahead(shards):
    data = PreparedData(shards, seed=5, window_images=128)  # 2 windows of 2 shards
    order, prefetch = data.order, data.source.prefetch
    for start in range(0, 3 * 256, 8):  # a position's shard is one of its window's shards
        shard, _ = order.locate(start, 1)
        assert int(shard[0]) in order.window_shards(*order.window_of(start))

    def read_so_far() -> int:
        for job in prefetch._jobs.values():
            job.result()
        return prefetch.bytes_read

    size = lambda shards: sum(os.path.getsize(p) for s in shards for p in prefetch.files[s])  # noqa: E731
    lat, _ = data.arrays(0, 16)
    # the first window's files were read whole before the batch, and the next window's started behind it
    assert read_so_far() == size(order.window_shards(0, 0)) + size(order.window_shards(0, 1))
    data.arrays(16, 100)  # inside the first window: nothing more read
    assert read_so_far() == size(order.window_shards(0, 0)) + size(order.window_shards(0, 1))
    data.arrays(120, 16)  # into the second window: the first of the next epoch is read ahead (unless the
    # same two shards were just read: a window is remembered by its shards)
    windows = {tuple(sorted(order.window_shards(e, w))) for e, w in ((0, 0), (0, 1), (1, 0))}
    assert read_so_far() == sum(size(w) for w in windows)
    assert np.array_equal(lat, PreparedData(shards, seed=5, window_images=128).arrays(0, 16)[0])


def test_order_state_does_not_grow_with_the_data_set():
    # 10M and 1M samples in shards of 10,000: the order holds the shard list and a few windows of 4 shards,
    # never a permutation of all samples (80 MB at 10M).
    states = {}
    for n_shards in (100, 1000):
        order = StreamOrder([10_000] * n_shards, seed=0, window_shards=4)
        for start in range(0, 3 * order.n, order.n // 7 + 12_345):  # reads spread over three epochs
            shard, row = order.locate(start, 512)
            assert shard.max() < n_shards and row.max() < 10_000
        states[n_shards] = order.state_nbytes()
    window_state = 4 * (4 * 10_000 * 8)  # at most four cached window permutations
    assert states[1000] <= window_state + 1000 * 8 * 8  # plus a few int64 entries per shard (six used)
    assert states[1000] < 10_000_000 * 8 / 50
    assert states[1000] - states[100] < 1000 * 8 * 8


def test_shard_of_the_wrong_shape_is_named(legacy, tmp_path):
    root = shards_from(legacy, tmp_path, shard_size=128)
    bad = root / SHARDS / "train-000001.context.npy"
    np.save(bad, np.zeros((128, 4, 8), np.float16))
    data = PreparedData(root, seed=0)
    with pytest.raises(ValueError, match="train-000001.context.npy has shape"):
        data.arrays(0, 256)
    with pytest.raises(FileNotFoundError, match="run `study prepare`"):
        PreparedData(tmp_path / "nothing", seed=0)


# --- a training run from shards -------------------------------------------------------------------

def _train(run_dir, prep, hooks=None, inline=False):
    if hooks:
        os.environ[TEST_HOOKS_ENV] = json.dumps(hooks)
    try:  # windows of two shards: the windowed order, not the one-window full shuffle
        cfg = tiny_config("train.checkpoint_every_images=32", "train.shuffle_window_images=128")
        return trainers.train_size(cfg, 8, 0, run_dir, prep, progress=False, inline=inline)
    finally:
        os.environ.pop(TEST_HOOKS_ENV, None)


def test_resumed_run_from_shards_equals_an_uninterrupted_one(ray_local, shards, tmp_path):
    clean = _train(tmp_path / "clean", shards, inline=True)  # in this process; the killed run is a Ray Train job
    assert [r["train_images"] for r in clean["milestones"]] == [64, 128, 256]
    hooks = {"kill_after_images": 160, "kill_marker": str(tmp_path / "killed")}
    with pytest.raises(Exception):  # max_failures=0: the killed worker fails the run
        _train(tmp_path / "resumed", shards, hooks)
    assert (tmp_path / "killed").exists()
    # The same command again resumes from `latest` (160 images), inline: the killed part ran under Ray Train.
    _train(tmp_path / "resumed", shards, inline=True)
    for images in (64, 128, 256):
        for which in ("raw", "ema"):
            a, b = (load_file(trainers.run_dir_for(tmp_path / run, 8, 0) / "checkpoints"
                              / ckpt.milestone_name(images) / f"{which}.safetensors") for run in ("clean", "resumed"))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (images, which)
