"""FID/KID math, bootstrap noise, noise floor, reference cache and the digit classifier (CPU, seconds)."""

import json
import time

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.datasets import load_digits

from study.metrics import (
    ClassifierExtractor,
    bootstrap_std,
    compute_reference,
    evaluate_images,
    feature_stats,
    fid,
    fid_from_stats,
    kid,
    load_classifier,
    load_reference,
    noise_floor,
    prompt_accuracy,
    save_classifier,
    train_digit_classifier,
)
from study.metrics.fid import bootstrap_fids, bootstrap_kids


@pytest.fixture(scope="module")
def digits():
    """load_digits in [0, 255] uint8 (as study.data gives them), split 80/20 stratified."""
    raw = load_digits()
    images = np.round(raw.images * (255 / 16)).astype(np.uint8)[:, None]
    rng = np.random.default_rng(0)
    held = np.concatenate([rng.permutation(np.flatnonzero(raw.target == k))[:36] for k in range(10)])
    train = np.setdiff1d(np.arange(len(images)), held)
    return images[train], raw.target[train], images[held], raw.target[held]


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    start = time.process_time()
    clf = train_digit_classifier(x, y, seed=0, progress=False)
    return clf, time.process_time() - start


@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3000, 8)) @ rng.normal(size=(8, 8)), rng


def scipy_fid(a, b):
    """Independent Frechet distance straight from the definition."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 with KID's cubic kernel, from the definition."""
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


# --- FID / KID -------------------------------------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero(gauss):
    x, _ = gauss
    mu, sigma = feature_stats(x)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (8, 8)
    assert abs(fid(x, mu, sigma)) < 1e-6


def test_fid_grows_with_shift_and_matches_scipy(gauss):
    x, rng = gauss
    y = rng.normal(size=(3000, 8)) @ rng.normal(size=(8, 8))
    mu, sigma = feature_stats(x)
    values = [fid(y + s, mu, sigma) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > values[0] + 10
    for s in (0.0, 1.0):
        assert fid(y + s, mu, sigma) == pytest.approx(scipy_fid(y + s, x), rel=1e-6)
    assert fid_from_stats(*feature_stats(y), mu, sigma) == pytest.approx(values[0])


def test_kid_small_for_same_distribution_and_exact_below_subset_size(gauss):
    x, rng = gauss
    # equal sets of <= 1000 rows: clean-fid's subsets are the whole sets, so KID is the exact unbiased MMD^2
    assert abs(kid(x[:1000], x[1000:2000])) < 0.1 * kid(x[:1000], x[1000:2000] + 1.0)
    a, b = x[:300], x[300:600] + 0.3
    assert kid(a, b) == pytest.approx(mmd2_unbiased(a, b), rel=1e-9)
    # unequal sets: random subsets, seeded so the number is reproducible
    assert kid(a, x[1000:], num_subsets=5, seed=1) == kid(a, x[1000:], num_subsets=5, seed=1)
    with pytest.raises(ValueError):
        kid(x[:1], x)


def test_bootstrap_closed_forms_match_clean_fid(gauss):
    x, rng = gauss
    mu, sigma = feature_stats(x)
    ones = np.ones((1, 40))
    for dims in (8, 64):  # fewer samples than dims (N x N eigenproblem) and more (D x D)
        g = rng.normal(size=(40, dims)) + 0.2
        r = rng.normal(size=(500, dims))
        rmu, rsigma = feature_stats(r)
        assert bootstrap_fids(g, rmu, rsigma, ones)[0] == pytest.approx(fid(g, rmu, rsigma), rel=1e-6)
    # a replicate drawing sample 0 twice is the FID of that duplicated set
    counts = np.ones((1, 3000))
    counts[0, 0], counts[0, 1] = 2, 0
    dup = np.concatenate([x[:1], x[:1], x[2:]])
    assert bootstrap_fids(x, mu, sigma, counts)[0] == pytest.approx(fid(dup, mu, sigma), rel=1e-6, abs=1e-9)
    assert bootstrap_kids(x[:200], x[200:500], np.ones((1, 200)), ref_size=300)[0] == pytest.approx(
        mmd2_unbiased(x[:200], x[200:500]), rel=1e-9)


def test_bootstrap_std_positive_and_shrinks_with_samples(gauss):
    x, rng = gauss
    mu, sigma = feature_stats(x)
    y = rng.normal(size=(4000, 8)) @ rng.normal(size=(8, 8))
    small = bootstrap_std(y[:200], mu, sigma, x, n=30, seed=0)
    large = bootstrap_std(y, mu, sigma, x, n=30, seed=0)
    assert small["fid_std"] > 0 and small["kid_std"] > 0
    assert large["fid_std"] < small["fid_std"] and large["kid_std"] < small["kid_std"]
    assert bootstrap_std(y[:200], mu, sigma, n=30, seed=0) == {"fid_std": small["fid_std"]}


# --- digit classifier --------------------------------------------------------------------------------

def test_classifier_reaches_95_percent_held_out_quickly(digits, trained):
    _, _, xh, yh = digits
    clf, cpu_seconds = trained
    assert prompt_accuracy(clf, xh, yh) >= 0.95
    assert cpu_seconds < 20, f"training took {cpu_seconds:.1f} s of CPU"


def test_classifier_has_a_class_per_label_value(digits, trained):
    """Without a config the classifier gets one class per label value: 10 for the digits, 13 for the photographs."""
    x, y, _, _ = digits
    assert trained[0].config.num_classes == 10 and trained[0].head.out_features == 10
    thirteen = train_digit_classifier(x[:130], np.arange(130) % 13, epochs=1, progress=False)
    assert thirteen.config.num_classes == 13 and thirteen(x[:4]).shape == (4, 13)


def test_classifier_any_resolution_and_channels(digits, trained):
    _, _, xh, _ = digits
    clf, _ = trained
    x = torch.as_tensor(xh[:50]).float()
    big_rgb = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).expand(-1, 3, -1, -1)
    ext = ClassifierExtractor(clf)
    f8, f16 = ext.features(x), ext.features(big_rgb)
    assert f8.shape == (50, ext.dim) == (50, 64)
    torch.testing.assert_close(f8, f16)  # 2x2 average pooling undoes the nearest upsampling exactly


def test_classifier_save_load_roundtrip(digits, trained, tmp_path):
    _, _, xh, _ = digits
    clf, _ = trained
    save_classifier(clf, tmp_path / "clf")
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["feature_dim"] == 64
    loaded = load_classifier(tmp_path / "clf")
    with torch.no_grad():
        torch.testing.assert_close(loaded(xh[:20]), clf(xh[:20]))
    assert ClassifierExtractor(loaded).name == ClassifierExtractor(clf).name  # the name hashes the weights
    assert ClassifierExtractor(loaded).name.startswith("digits-classifier-")


# --- noise floor, reference cache, evaluation --------------------------------------------------------

class CountingExtractor:
    """Wraps an extractor and counts feature calls: a cache hit makes none."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def features(self, images):
        self.calls += 1
        return self.inner.features(images)


def test_noise_floor_positive_and_below_noise_images(digits, trained):
    x, _, xh, _ = digits
    ext = ClassifierExtractor(trained[0])
    ref = ext.features(torch.as_tensor(x).float()).numpy()
    mu, sigma = feature_stats(ref)
    floor = noise_floor(ext.features(torch.as_tensor(xh).float()).numpy(), mu, sigma)
    noise = torch.rand(len(xh), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    noise_fid = fid(ext.features(noise).numpy(), mu, sigma)
    assert 0 < floor < 0.2 * noise_fid
    with pytest.raises(ValueError):
        noise_floor(ref[:10], mu, sigma, n=11)


def test_reference_cache_reused_and_keyed(digits, trained, tmp_path):
    x, _, xh, _ = digits
    ext = CountingExtractor(ClassifierExtractor(trained[0]))
    parts = {"data": "digits", "split": "train", "resolution": 8}
    first = compute_reference(ext, x, tmp_path, parts, batch_size=512, floor_images=xh)
    calls = ext.calls
    assert calls > 0 and first.floor_fid > 0 and first.floor_n == len(xh) and first.num_images == len(x)
    second = compute_reference(ext, x, tmp_path, parts, batch_size=512, floor_images=xh)
    assert ext.calls == calls  # read from the cache, no features computed
    np.testing.assert_array_equal(second.sigma, first.sigma)
    assert second.floor_fid == first.floor_fid and second.key == first.key
    other = compute_reference(ext, x, tmp_path, {**parts, "split": "all"}, batch_size=512)
    assert other.key != first.key and ext.calls > calls and other.floor_fid is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{k}.{s}" for k in (first.key, other.key) for s in ("json", "npz"))  # no temporary files left
    loaded = load_reference(tmp_path / f"{first.key}.npz")
    assert loaded.name == ext.name and loaded.feats.dtype == np.float32 and loaded.key_parts == parts


def test_evaluate_images(digits, trained, tmp_path):
    x, _, xh, yh = digits
    clf = trained[0]
    ext = ClassifierExtractor(clf)
    ref = compute_reference(ext, x, tmp_path, {"data": "digits"}, floor_images=xh)
    out = evaluate_images(ext, xh, ref, labels=yh, classifier=clf, bootstrap=20)
    assert out["fid"] == pytest.approx(ref.floor_fid)  # the held-out split is the floor itself
    assert out["num_samples"] == len(xh) and out["fid_std"] > 0 and out["kid_std"] > 0
    assert out["prompt_accuracy"] >= 0.95 and out["alignment_metric"] == "prompt_accuracy"
    streamed = evaluate_images(ext, (torch.as_tensor(xh[i:i + 100]) for i in range(0, len(xh), 100)), ref,
                               labels=yh, classifier=clf, bootstrap=20)
    assert streamed["fid"] == pytest.approx(out["fid"]) and streamed["kid"] == pytest.approx(out["kid"])
    assert streamed["prompt_accuracy"] == pytest.approx(out["prompt_accuracy"])
    assert prompt_accuracy(clf, xh, (yh + 1) % 10) < 0.1  # wrong prompts are caught
    with pytest.raises(ValueError, match="labels"):
        evaluate_images(ext, xh, ref, labels=yh[:10], classifier=clf)
    ext.name = "another-extractor"
    with pytest.raises(ValueError, match="computed with"):
        evaluate_images(ext, xh, ref)
