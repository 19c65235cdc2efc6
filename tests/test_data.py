"""Data sets: embedded digits, an HF-style image folder, COCO caption prompts, the text encoder."""

import json

import numpy as np
import pytest
from PIL import Image

from study.config import load_config
from study.data import DIGIT_NAMES, load_coco_captions, load_splits, read_metadata


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
    # Disjoint: no training image is also a held-out image at the same index set.
    t2, h2 = load_splits(cfg.data)
    assert (t2.labels == train.labels).all() and (h2.images == held.images).all()  # deterministic


def test_digits_upsampled_for_the_latent_path():
    train, _ = load_splits(load_config("smoke").data)
    assert train.images.shape[1:] == (1, 16, 16)


def _write_folder(root, n=6, size=(20, 12)):
    rows = []
    for i in range(n):
        arr = np.full((size[1], size[0], 3), i * 40, dtype=np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.png")
        rows.append({"file_name": f"img{i}.png", "text": f"a grey square number {i}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_imagefolder_loads_crops_and_splits(tmp_path):
    _write_folder(tmp_path)
    cfg = load_config("tiny", ["data.name=imagefolder", f"data.root={tmp_path}", "data.resolution=8",
                               "data.eval_fraction=0.34", "eval.feature_extractor=inception",
                               f"eval.inception_path={tmp_path}"])
    train, held = load_splits(cfg.data)
    assert len(train) == 4 and len(held) == 2
    assert train.images.shape[1:] == (3, 8, 8) and train.labels is None
    assert all(c.startswith("a grey square") for c in train.captions + held.captions)


def test_imagefolder_bad_metadata_is_named(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "x.png"}\n')
    with pytest.raises(ValueError, match="metadata.jsonl:1: needs both 'file_name' and 'text'"):
        read_metadata(tmp_path)
    with pytest.raises(ValueError, match="metadata.jsonl with one"):
        read_metadata(tmp_path / "missing")


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
