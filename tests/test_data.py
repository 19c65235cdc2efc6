"""Data sets: the embedded digits and photograph patches, COCO caption prompts, the text encoder (streamed sets:
test_shards_prepare)."""

import json

import numpy as np
import pytest

from study.config import load_config
from study.captions import load_coco_captions
from study.data import DIGIT_NAMES, PHOTO_NAMES, PHOTO_SHRINK
from study.datasets import load_splits


def test_digits_split_is_held_out_and_captioned():
    cfg = load_config("tiny", ["data.name=digits", "dreambooth.data=digits"])
    train, held = load_splits(cfg.data)
    assert len(train) + len(held) == 1797
    assert abs(len(held) / 1797 - cfg.data.eval_fraction) < 0.01
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (1, 8, 8) and train.images.max() == 255
    # Every caption names its digit, so the prompt determines the class.
    for cap, k in zip(held.captions, held.labels):
        assert DIGIT_NAMES[k] in cap or f"digit {k}" in cap
    assert len(set(train.captions)) > 10  # several templates per class
    # Disjoint and covering: every digit is in exactly one split, under a stable key.
    assert not set(train.keys) & set(held.keys)
    assert sorted(train.keys + held.keys) == [f"digits-{i:04d}" for i in range(1797)]
    # Stratified: every class is held out in about the same proportion.
    for k in range(10):
        n_k = (train.labels == k).sum() + (held.labels == k).sum()
        assert abs((held.labels == k).sum() / n_k - cfg.data.eval_fraction) < 0.02
    t2, h2 = load_splits(cfg.data)
    assert t2.keys == train.keys and (h2.images == held.images).all() and h2.captions == held.captions  # deterministic


def _places(photo: np.ndarray, patch: np.ndarray) -> set[int]:
    """The left columns x of every crop of photo that equals patch under one of the 8 rotations/flips."""
    from numpy.lib.stride_tricks import sliding_window_view

    s = patch.shape[-1]
    windows = sliding_window_view(photo, (s, s))  # [H - s + 1, W - s + 1, s, s]
    found = set()
    for f in range(8):
        p = np.rot90(patch, f % 4)
        p = p[:, ::-1] if f >= 4 else p
        found |= set(np.argwhere((windows == p).all(axis=(-2, -1)))[:, 1].tolist())
    return found


def test_photo_patches_are_held_out_by_place_and_captioned():
    from study.experiments.superres.data import _read, embedded_dir

    cfg = load_config("tiny", ["data.photo_patches=40", "data.photo_heldout=6"])
    assert cfg.data.name == "photos"  # the embedded default
    train, held = load_splits(cfg.data)
    names = list(PHOTO_NAMES.values())
    assert len(train) == 40 * len(names) and len(held) == 6 * len(names)
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert np.bincount(train.labels).tolist() == [40] * len(names)
    for cap, k in zip(train.captions, train.labels):
        assert names[k] in cap  # the prompt names the photograph, so it determines the class
    assert not set(train.keys) & set(held.keys)
    # Held out by place: a training patch lies in the left (1 - eval_fraction) of its photograph, a held-out one
    # right of that cut, so no held-out pixel is trained on.
    for split, sub in (("train", train), ("heldout", held)):
        for i in range(0, len(sub), 7):
            file = list(PHOTO_NAMES)[sub.labels[i]]
            photo = _read(embedded_dir() / file, 1, PHOTO_SHRINK)[0]
            cut = int(round(photo.shape[1] * (1 - cfg.data.eval_fraction)))
            xs = _places(photo, sub.images[i, 0])
            assert xs, f"{sub.keys[i]} is no crop of {file}"
            if split == "train":
                assert min(xs) + 8 <= cut
            else:
                assert max(xs) >= cut
    t2, h2 = load_splits(cfg.data)
    assert t2.keys == train.keys and (h2.images == held.images).all() and h2.captions == held.captions  # deterministic
    with pytest.raises(ValueError, match="narrower than data.resolution"):
        load_splits(load_config("tiny", ["data.resolution=64"]).data)


def test_digits_upsampled_for_the_latent_path():
    train, _ = load_splits(load_config("smoke").data)
    assert train.images.shape[1:] == (1, 16, 16)


def test_streamed_sets_are_not_loaded_in_memory(tmp_path):
    cfg = load_config("tiny", ["data.name=webdataset", f"data.root={tmp_path}", "eval.feature_extractor=inception",
                               f"eval.inception_path={tmp_path}"])
    with pytest.raises(ValueError, match="streamed"):
        load_splits(cfg.data)


def test_coco_captions_one_per_image(tmp_path):
    ann = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
           "annotations": [{"image_id": 1, "id": 10, "caption": "a cat "}, {"image_id": 1, "id": 11, "caption": "b"},
                           {"image_id": 2, "id": 12, "caption": "a dog"}, {"image_id": 3, "id": 13, "caption": "a car"}]}
    p = tmp_path / "captions_val2014.json"
    p.write_text(json.dumps(ann))
    assert load_coco_captions(p) == ["a cat", "a dog", "a car"]
    assert len(load_coco_captions(p, limit=2)) == 2
    p.write_text("{}")
    with pytest.raises(ValueError, match="not a COCO captions file"):
        load_coco_captions(p)


def test_minilm_token_states_and_empty_prompt():
    from study.text import embed_captions, load_text_encoder

    enc = load_text_encoder(load_config("tiny").text_encoder)
    out = enc.encode(["a handwritten digit seven", ""])
    assert out.shape == (2, 16, 384) and enc.dim == 384
    assert not np.allclose(out[0].numpy(), out[1].numpy())
    table, index, distinct = embed_captions(enc, ["b", "a", "b"])
    assert table.shape[0] == 2 and distinct == ["a", "b"] and list(index) == [1, 0, 1]
    assert np.allclose(table[1], enc.encode(["b"])[0].numpy(), atol=1e-2)  # float16 table
