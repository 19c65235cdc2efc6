"""The shard format: write, validate, resume markers, the stable split."""

import json

import numpy as np
import pytest

from study.shards.format import (ShardIndex, sample_order, shard_done, shard_name, shard_paths, split_of,
                                 write_index, write_shard)


def _shard(folder, split, k, n, seed, images=False):
    rng = np.random.default_rng(seed)
    lat = rng.standard_normal((n, 3, 4, 4)).astype(np.float16)
    ctx = rng.standard_normal((n, 5, 6)).astype(np.float16)
    meta = [{"key": f"{split}{k}-{i}", "caption": f"cap é {i}", "label": i % 3 if i else None} for i in range(n)]
    imgs = rng.integers(0, 255, (n, 3, 4, 4), dtype=np.uint8) if images else None
    return write_shard(folder, shard_name(split, k), lat, ctx, meta, images=imgs)


def _set(tmp_path):
    recs = {"train": [_shard(tmp_path, "train", 0, 4, 0), _shard(tmp_path, "train", 1, 2, 1)],
            "heldout": [_shard(tmp_path, "heldout", 0, 3, 2, images=True)]}
    np.save(tmp_path / "uncond.npy", np.zeros((1, 5, 6), np.float16))
    write_index(tmp_path, 4, (3, 4, 4), (5, 6), recs, bad_samples=1)
    return recs


def test_write_and_load_round_trip(tmp_path):
    recs = _set(tmp_path)
    idx = ShardIndex.load(tmp_path, verify_hashes=True)
    assert idx.n("train") == 6 and idx.n("heldout") == 3 and idx.shard_size == 4
    assert [s["name"] for s in idx.shards("train")] == ["train-000000", "train-000001"]
    assert idx.latents("train-000000").dtype == np.float16 and idx.context("train-000001").shape == (2, 5, 6)
    assert idx.meta("train-000000")[1] == {"key": "train0-1", "caption": "cap é 1", "label": 1}
    assert idx.meta("train-000000")[0]["label"] is None
    assert idx.images("heldout-000000").shape == (3, 3, 4, 4) and idx.images("train-000000") is None
    assert shard_done(tmp_path, "train-000000", recs["train"][0]["sha256"])["n"] == 4


def test_load_rejects_bad_sets(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardIndex.load(tmp_path)
    _set(tmp_path)
    raw = json.loads((tmp_path / "index.json").read_text())
    raw["splits"]["train"]["shards"] = raw["splits"]["train"]["shards"][::-1]  # short shard not last
    (tmp_path / "index.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="shard_size=4"):
        ShardIndex.load(tmp_path)
    _set(tmp_path)
    shard_paths(tmp_path, "train-000001")["latents"].write_bytes(b"changed")
    ShardIndex.load(tmp_path)  # no hashing by default: cheap
    with pytest.raises(ValueError, match="sha256"):
        ShardIndex.load(tmp_path, verify_hashes=True)
    assert shard_done(tmp_path, "train-000001") is None  # a changed file is not a done shard
    shard_paths(tmp_path, "train-000001")["context"].unlink()
    with pytest.raises(FileNotFoundError, match="train-000001"):
        ShardIndex.load(tmp_path)


def test_write_shard_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        write_shard(tmp_path, "train-000000", np.zeros((2, 1, 1, 1)), np.zeros((3, 1, 1)),
                    [{"key": "a", "caption": "b", "label": None}] * 2)


def test_split_and_order_are_stable_and_proportional():
    keys = [f"img-{i}" for i in range(4000)]
    held = [k for k in keys if split_of(k, 0.25, seed=0) == "heldout"]
    assert abs(len(held) / len(keys) - 0.25) < 0.03
    assert held == [k for k in keys if split_of(k, 0.25, seed=0) == "heldout"]  # a pure function of the key
    assert held != [k for k in keys if split_of(k, 0.25, seed=1) == "heldout"]  # the seed draws another split
    assert sorted(keys, key=sample_order) == sorted(reversed(keys), key=sample_order)
    assert sorted(keys, key=sample_order) != keys
