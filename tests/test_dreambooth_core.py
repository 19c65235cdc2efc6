"""DreamBooth core: the subject data (embedded digits, Google's layout, a folder), prior preservation (the
class images come from the base model and are cached; batches and loss as the diffusers script) and metrics
(DINO, CLIP-I, CLIP-T with tiny local stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from study.config import ConfigError, load_config
from study.experiments.dreambooth import prior
from study.experiments.dreambooth.subject import (SYMMETRIC_DIGITS, digits_subject, folder_subject, google_subject, mirror,
                                      negative, photos_subject, read_prompts_and_classes)
from study.metrics.subject import DinoEmbedder, clip_image_embeds, leave_one_out_fidelity, mean_cosine

from dreambooth_helpers import make_base
from standins import dino_folder
from test_metrics_models import tiny_clip_dir  # noqa: F401 (a fixture)

# A shortened copy of Google's dataset/prompts_and_classes.txt, in its exact format.
PROMPTS_AND_CLASSES = """Classes

subject_name,class
backpack,backpack
dog,dog
bear_plushie,stuffed animal

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a {0} {1} in a chef outfit'.format(unique_token, class_token)
]
"""


def _cfg(*overrides):
    return load_config("tiny", list(overrides))


# --- the subject -------------------------------------------------------------------------------------

def test_digits_subject_is_mirrored_unseen_and_has_novel_contexts():
    from study.data import load_digits_splits

    cfg = _cfg("data.name=digits", "dreambooth.data=digits")
    s = digits_subject(cfg.data, cfg.dreambooth)
    assert s.instance_images.shape == (4, 1, 8, 8) and s.instance_images.dtype == np.uint8
    assert s.instance_prompt == "a handwritten digit three in sks style"
    assert s.class_prompt == "a handwritten digit three"
    assert s.eval_prompts[0] == s.instance_prompt and s.eval_labels[0] == 3
    assert len(s.eval_prompts) == 4 and not set(s.eval_labels) & set(SYMMETRIC_DIGITS)
    assert all("in sks style" in p for p in s.eval_prompts)
    train, _ = load_digits_splits(cfg.data)
    flat = train.images.reshape(len(train), -1)
    for img in s.instance_images:
        # unseen: no training image is the mirrored instance; the instance is a training three mirrored
        assert not (flat == img.reshape(-1)).all(axis=1).any()
        unmirrored = (flat == mirror(img).reshape(-1)).all(axis=1)
        assert unmirrored.any() and (train.labels[unmirrored] == 3).all()
    # the true subject in each context: held-out digits of that class, mirrored
    assert set(s.styled_references) == set(s.eval_labels)
    assert np.array_equal(s.styled_references[5], mirror(s.plain_references[5]))
    assert s.style is mirror


def test_photos_subject_is_inverted_unseen_and_has_novel_contexts():
    from study.data import PHOTO_NAMES, load_photo_splits

    cfg = _cfg("data.photo_patches=200", "data.photo_heldout=8")
    assert cfg.dreambooth.data == "photos" and cfg.dreambooth.photo == "cat"
    s = photos_subject(cfg.data, cfg.dreambooth)
    cat = list(PHOTO_NAMES.values()).index("cat")
    assert s.instance_images.shape == (4, 1, 8, 8) and s.instance_images.dtype == np.uint8
    assert s.instance_prompt == "a patch of the cat photograph in sks style"
    assert s.class_prompt == "a patch of the cat photograph" and s.class_label == cat
    assert s.eval_labels[0] == cat and len(s.eval_labels) == 4 and len(set(s.eval_labels)) == 4
    train, _ = load_photo_splits(cfg.data)
    flat = train.images.reshape(len(train), -1)
    for img in s.instance_images:
        # unseen: no training patch is the inverted instance; the instance is a cat patch inverted
        assert not (flat == img.reshape(-1)).all(axis=1).any()
        plain = (flat == negative(img).reshape(-1)).all(axis=1)
        assert plain.any() and (train.labels[plain] == cat).all()
    k = s.eval_labels[2]
    assert np.array_equal(s.styled_references[k], negative(s.plain_references[k])) and s.style is negative
    assert np.array_equal(negative(negative(s.instance_images)), s.instance_images)  # the style undoes itself
    samples = np.array([[[[0.0, 12.5], [254.6, 255.0]]]])  # the evaluator's float samples stay float
    assert np.allclose(negative(samples), [[[[255.0, 242.5], [0.4, 0.0]]]]) and negative(samples).dtype == float
    with pytest.raises(ValueError, match="dreambooth.photo='dog'"):
        photos_subject(cfg.data, _cfg("dreambooth.photo=dog").dreambooth)


def test_an_embedded_subject_needs_its_own_data_set():
    with pytest.raises(ConfigError, match="dreambooth.data"):
        _cfg("dreambooth.data=digits")  # the photographs' base models with a digits subject
    with pytest.raises(ConfigError, match="dreambooth.data"):
        _cfg("data.name=digits")  # tiny's photos subject on digits
    assert _cfg("data.name=digits", "dreambooth.data=digits", ).dreambooth.data == "digits"
    assert _cfg("data.name=digits", "dreambooth.enabled=false").data.name == "digits"  # off: not checked


def _write_images(folder, n, size=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 6, 3), dtype=np.uint8)).save(folder / f"{i:02d}.jpg")


def test_google_layout_reads_classes_prompts_and_images(tmp_path):
    root = tmp_path / "dataset"
    _write_images(root / "dog", 3)
    _write_images(root / "backpack", 4)
    (root / "prompts_and_classes.txt").write_text(PROMPTS_AND_CLASSES)
    classes, lists = read_prompts_and_classes(root / "prompts_and_classes.txt")
    assert classes == {"backpack": "backpack", "dog": "dog", "bear_plushie": "stuffed animal"}
    assert lists["object"] == ["a {0} {1} in the jungle", "a red {0} {1}"] and len(lists["live"]) == 3
    dog = google_subject(root, "dog", "sks", 8)
    assert dog.instance_images.shape == (3, 3, 8, 8)
    assert dog.instance_prompt == "a photo of sks dog" and dog.class_prompt == "a photo of dog"
    assert "a sks dog wearing a red hat" in dog.eval_prompts  # a live subject gets the live list
    bag = google_subject(root, "backpack", "sks", 8, max_prompts=2)
    assert bag.eval_prompts == ["a photo of sks backpack", "a sks backpack in the jungle"]
    with pytest.raises(ValueError, match="not in .*one of backpack, bear_plushie, dog"):
        google_subject(root, "cat", "sks", 8)
    with pytest.raises(ValueError, match="prompts_and_classes.txt not found"):
        google_subject(tmp_path, "dog", "sks", 8)


def test_folder_subject_and_its_errors(tmp_path):
    _write_images(tmp_path / "mine", 5)
    s = folder_subject(tmp_path / "mine", "teapot", "sks", 16)
    assert s.instance_images.shape == (5, 3, 16, 16) and s.class_prompt == "a photo of teapot"
    assert s.eval_labels is None and s.eval_prompts[1] == "a sks teapot in the jungle"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no instance images"):
        folder_subject(tmp_path / "empty", "teapot", "sks", 16)
    with pytest.raises(ValueError, match="class_noun is empty"):
        folder_subject(tmp_path / "mine", "", "sks", 16)
    with pytest.raises(ConfigError, match="dreambooth.class_noun"):
        _cfg("dreambooth.data=folder", f"dreambooth.root={tmp_path / 'mine'}")
    with pytest.raises(ConfigError, match="dreambooth.digit"):
        _cfg("dreambooth.digit=8")


# --- prior preservation ---------------------------------------------------------------------------

def test_prior_preservation_loss_is_the_scripts():
    pred, target = torch.randn(8, 4, 8, 8), torch.randn(8, 4, 8, 8)
    per = F.mse_loss(pred, target, reduction="none").flatten(1).mean(1)
    # train_dreambooth.py: chunk model_pred and target in two, mean MSE of each, prior weighted
    want = F.mse_loss(pred[:4], target[:4]) + 0.5 * F.mse_loss(pred[4:], target[4:])
    assert torch.allclose(prior.prior_preservation_loss(per, 4, 0.5), want)
    assert torch.allclose(prior.prior_preservation_loss(per, 8, 0.5), F.mse_loss(pred, target))


def test_batches_are_a_pure_function_of_position():
    inst, cls = torch.arange(3.0).view(3, 1, 1, 1), 10 + torch.arange(5.0).view(5, 1, 1, 1)
    data = prior.DreamBoothBatches(inst, torch.zeros(1, 2, 4), cls, torch.ones(1, 2, 4))
    b = data.batch(4, 3, torch.device("cpu"))
    assert b["n_instance"] == 3 and b["latents"].flatten().tolist() == [1, 2, 0, 14, 10, 11]
    assert b["context"][:3].eq(0).all() and b["context"][3:].eq(1).all()
    assert torch.equal(data.batch(4, 3, torch.device("cpu"))["latents"], b["latents"])
    plain = prior.DreamBoothBatches(inst, torch.zeros(1, 2, 4)).batch(0, 2, torch.device("cpu"))
    assert plain["latents"].shape[0] == 2 and plain["n_instance"] == 2


def test_class_images_come_from_the_base_model_and_are_cached(tmp_path, monkeypatch):
    from study.autoencoder import LatentSpace
    from study.weights import load_unet

    geom_kwargs = {}
    base_a = make_base(tmp_path / "a", seed=0, **geom_kwargs)
    base_b = make_base(tmp_path / "b", seed=1, **geom_kwargs)
    settings = prior.ClassImageSettings(prompt="a handwritten digit three", num_images=6, sampler="ddim",
                                        steps=3, guidance=2.0, seed=0)
    cond, uncond, space = torch.randn(1, 8, 384), torch.randn(1, 8, 384), LatentSpace()
    cache = tmp_path / "cache"
    images, path = prior.ensure_class_images(base_a, cache, settings, cond, uncond, space)
    assert images.shape == (6, 4, 8, 8) and images.dtype == np.uint8
    # the base model's own samples: what sampling that checkpoint gives, not another's
    direct = prior.generate_class_images(load_unet(base_a), settings, cond, uncond, space)
    assert np.array_equal(images, direct)
    assert prior.read_class_meta(path)["checkpoint"] == str(base_a.resolve())
    # cached: a rerun reads the file and never samples again
    monkeypatch.setattr(prior, "generate_class_images", lambda *a, **k: pytest.fail("sampled again"))
    again, path_again = prior.ensure_class_images(base_a, cache, settings, cond, uncond, space)
    assert path_again == path and np.array_equal(again, images)
    monkeypatch.undo()
    other, other_path = prior.ensure_class_images(base_b, cache, settings, cond, uncond, space)
    assert other_path != path and not np.array_equal(other, images)
    more = prior.ensure_class_images(base_a, cache, prior.ClassImageSettings(**{**settings.__dict__, "num_images": 2}),
                                     cond, uncond, space)[1]
    assert more not in (path, other_path)  # another setting is another cache entry


# --- metrics ----------------------------------------------------------------------------------------

def test_mean_cosine_and_leave_one_out():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(a, a) == pytest.approx(0.5)  # two pairs of 1, two of 0
    assert mean_cosine(a[:1], torch.tensor([[3.0, 0.0]])) == pytest.approx(1.0)
    assert leave_one_out_fidelity(a, lambda x: x) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="N x D"):
        mean_cosine(a, torch.ones(2, 3))


@pytest.fixture(scope="module")
def tiny_dino_dir(tmp_path_factory):
    """A random ViT-S/16-shaped stand-in a few kB big (transformers ViTModel + image processor), saved offline."""
    return dino_folder(tmp_path_factory.mktemp("tiny_dino"))


def test_dino_and_clip_embeddings_from_local_folders(tiny_dino_dir, tiny_clip_dir):  # noqa: F811
    from study.metrics import ClipScorer

    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (3, 3, 24, 24)).astype(np.uint8)
    other = rng.integers(0, 255, (2, 1, 24, 24)).astype(np.uint8)  # grey images go through as RGB
    dino = DinoEmbedder.from_pretrained(tiny_dino_dir)
    e = dino.embed(real)
    assert e.shape == (3, 32) and torch.isfinite(e).all()
    assert mean_cosine(dino.embed(real[:1]), e[:1]) == pytest.approx(1.0, abs=1e-5)  # DINO of an image to itself
    assert dino.embed(other).shape == (2, 32)
    clip = ClipScorer.from_pretrained(tiny_clip_dir)
    ci = clip_image_embeds(clip, real)
    assert ci.shape == (3, 16)
    # CLIP-I's embeddings are CLIP's own image embeddings: the cosine CLIP score uses with the text side
    out = clip.model(**clip.processor(text=["a dog"], images=list(torch.from_numpy(real[:1])), return_tensors="pt"))
    assert torch.allclose(F.normalize(ci[:1], dim=-1), F.normalize(out.image_embeds, dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="no DINO model folder"):
        DinoEmbedder.from_pretrained(tiny_dino_dir / "missing")
