"""Data sets: the embedded digits, COCO caption prompts, the text encoder (streamed sets: test_shards_prepare)."""

import json

import numpy as np
import pytest

from study.config import load_config
from study.captions import load_coco_captions
from study.data import DIGIT_NAMES, load_splits


def test_digits_split_is_held_out_and_captioned():
    cfg = load_config("tiny")
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
