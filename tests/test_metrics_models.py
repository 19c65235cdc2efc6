"""Inception from a local file (with a tiny torchscript stand-in) and CLIP score (with a tiny local CLIP)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid.resize import build_resizer
from standins import clip_folder, inception_file

from study.metrics import (
    INCEPTION_FILE,
    ClassifierExtractor,
    ClipScorer,
    DigitClassifier,
    InceptionExtractor,
    MissingInceptionError,
    clip_scores_from_embeds,
    compute_reference,
    evaluate_images,
)


# --- Inception ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standin_file(tmp_path_factory):
    return inception_file(tmp_path_factory.mktemp("inception") / INCEPTION_FILE)


def test_inception_from_local_file_resizes_like_clean_fid(standin_file):
    ext = InceptionExtractor.from_file(standin_file, batch_size=3)
    assert ext.dim == 2048 and ext.name == "cleanfid-inception-2015-12-05-clean"
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255  # grey 8x8, as digits
    feats = ext.features(images)
    assert feats.shape == (5, 2048) and torch.isfinite(feats).all()
    assert ext.model.base.layers.last_shape.tolist() == [2, 3, 299, 299]  # last batch of 5 in threes
    # the same numbers as resizing by hand with clean-fid's "clean" resizer and normalising as InceptionV3W
    resize = build_resizer("clean")
    by_hand = np.stack([resize(np.repeat(im.numpy().transpose(1, 2, 0), 3, axis=2)) for im in images])
    x = torch.from_numpy(by_hand.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        torch.testing.assert_close(feats, ext.model.base.layers((x - 128) / 128))


def test_inception_from_folder_or_other_name(standin_file, tmp_path):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    reference = InceptionExtractor.from_file(standin_file).features(images)
    torch.testing.assert_close(InceptionExtractor.from_file(standin_file.parent).features(images), reference)
    renamed = tmp_path / "my-inception.pt"
    renamed.write_bytes(standin_file.read_bytes())
    ext = InceptionExtractor.from_file(renamed)
    torch.testing.assert_close(ext.features(images), reference)
    assert ext.name == "cleanfid-my-inception-clean"


def test_missing_inception_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / INCEPTION_FILE
    with pytest.raises(ValueError, match="not found at .*nowhere") as err:
        InceptionExtractor.from_file(missing)
    assert "nvlabs" in str(err.value) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(MissingInceptionError):
        InceptionExtractor.from_file(tmp_path)  # a folder without the file


# --- CLIP score --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A random CLIP a few kB big, with a byte-level vocabulary and no merges: built and saved offline."""
    return clip_folder(tmp_path_factory.mktemp("tiny_clip"))


def test_clip_score_range_determinism_and_definition(tiny_clip_dir):
    scorer = ClipScorer.from_pretrained(tiny_clip_dir, batch_size=3)
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    texts = ["a handwritten digit seven", "digit 3", "the number two, written by hand", "x" * 200]
    scores = scorer.scores(images, texts)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert scorer.score(images, texts) == pytest.approx(float(scores.mean()))
    torch.testing.assert_close(scorer.scores(images, texts), scores)  # deterministic
    # per pair it is the clipped cosine of CLIP's own image and text embeddings
    rgb = images.expand(-1, 3, -1, -1).round().to(torch.uint8)
    inputs = scorer.processor(text=texts[:2], images=list(rgb[:2]), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = scorer.model(**inputs)
    cos = F.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    torch.testing.assert_close(scores[:2], cos.clamp(min=0))


def test_clip_score_prefers_aligned_embeddings():
    emb = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    aligned = clip_scores_from_embeds(emb, emb)
    mismatched = clip_scores_from_embeds(emb, emb.roll(1, dims=0))
    torch.testing.assert_close(aligned, torch.ones(6))
    assert (mismatched < aligned).all() and (mismatched >= 0).all()
    assert clip_scores_from_embeds(emb, -emb).eq(0).all()  # opposite directions clip to zero


def test_evaluate_images_reports_clip_score(tiny_clip_dir, tmp_path):
    scorer = ClipScorer.from_pretrained(tiny_clip_dir)
    gen = torch.Generator().manual_seed(0)
    ext = ClassifierExtractor(DigitClassifier())  # untrained: any extractor will do here
    ref = compute_reference(ext, torch.rand(300, 1, 8, 8, generator=gen) * 255, tmp_path, {"data": "noise"})
    images, texts = torch.rand(40, 1, 8, 8, generator=gen) * 255, [f"digit {i % 10}" for i in range(40)]
    out = evaluate_images(ext, images, ref, texts=texts, clip=scorer, batch_size=16, bootstrap=0)
    assert out["clip_score"] == pytest.approx(scorer.score(images, texts), rel=1e-5)
    assert out["alignment_metric"] == "clip_score" and out["fid_std"] is None and out["floor_fid"] is None


def test_clip_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no CLIP model folder"):
        ClipScorer.from_pretrained(tmp_path / "absent")
