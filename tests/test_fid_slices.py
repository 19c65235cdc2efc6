"""One FID split over several tasks: per-slice sufficient statistics that merge into the single-task FID."""

from __future__ import annotations

import numpy as np
import pytest

from study.metrics.fid import FeatureSums, feature_stats, fid, fid_from_sums, merge_sums


def _feats(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # correlated, non-centred, ReLU-like features, as a network's penultimate layer gives
    return np.maximum(rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + shift, 0)


@pytest.mark.parametrize("d", [16, 256])
def test_merged_fid_equals_the_single_task_fid(d):
    gen, ref = _feats(1000, d, 0, shift=0.5), _feats(1500, d, 1)
    ref_mu, ref_sigma = feature_stats(ref)
    whole = fid(gen, ref_mu, ref_sigma)
    for cuts in ([500], [1, 2, 997], [137, 400, 401, 999]):  # uneven slices, one of a single sample
        parts = [FeatureSums.of(p) for p in np.split(gen, cuts)]
        for order in (parts, parts[::-1]):
            merged = fid_from_sums(merge_sums(order), ref_mu, ref_sigma)
            assert merged == pytest.approx(whole, rel=1e-6)
    mu, sigma = merge_sums(parts).stats()
    mu1, sigma1 = feature_stats(gen)
    assert np.allclose(mu, mu1, rtol=1e-12, atol=0) and np.allclose(sigma, sigma1, rtol=1e-9, atol=1e-12)


def test_sums_refuse_what_cannot_merge():
    with pytest.raises(ValueError, match="different extractors"):
        FeatureSums.of(np.ones((3, 4))) + FeatureSums.of(np.ones((3, 5)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        FeatureSums.of(np.ones((1, 4))).stats()
    with pytest.raises(ValueError, match="no slices"):
        merge_sums([])


def test_slices_partition_the_samples_with_their_own_noise():
    from study.evaluator import slice_bounds, slice_seed

    n, k = 250, 4
    bounds = [slice_bounds(n, i, k) for i in range(k)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert {hi - lo for lo, hi in bounds} <= {n // k, n // k + 1}
    assert slice_seed(1234, 0, 1) == 1234  # unsplit: today's noise, so today's FIDs
    seeds = {slice_seed(1234, i, k) for i in range(k)}
    assert len(seeds) == k and 1234 not in seeds
    with pytest.raises(ValueError, match="slice 4 of 4"):
        slice_bounds(n, 4, 4)


def test_evaluator_slices_merge_to_the_fid_of_their_samples(smoke_prepared):
    import torch

    from study.evaluator import Evaluator
    from study.ladder import LADDERS, build_unet, geometry
    from study.metrics import evaluate_images

    cfg, prep = smoke_prepared
    ev = Evaluator(cfg, prep)
    torch.manual_seed(0)
    unet = build_unet(LADDERS[cfg.model.ladder], cfg.model.widths[0], geometry(cfg))
    args = (unet, "ddim", 2, 3.0)
    # k = 1 is today's evaluation: the same images, hence the same FID as before slices existed
    whole, which = ev.generate(*args)
    one, one_which = ev.generate(*args, part=(0, 1))
    assert torch.equal(whole, one) and torch.equal(which, one_which)
    # k = 3: each slice its own noise; together they cover the prompts of the unsplit evaluation
    parts = [ev.generate(*args, part=(i, 3)) for i in range(3)]
    assert torch.equal(torch.cat([w for _, w in parts]), which)
    assert not torch.equal(torch.cat([im for im, _ in parts]), whole)
    slices = [ev.slice_stats(*args, index=i, parts=3) for i in range(3)]
    merged = ev.merge_slices(slices)
    images = torch.cat([im for im, _ in parts])
    single = evaluate_images(ev.extractor, images, ev.reference, labels=ev.labels[which].numpy(),
                             classifier=ev.classifier, bootstrap=0)
    assert merged["num_samples"] == len(images) == cfg.eval.num_samples
    assert merged["fid"] == pytest.approx(single["fid"], rel=1e-6)
    assert merged["prompt_accuracy"] == pytest.approx(single["prompt_accuracy"], rel=1e-6)  # float32 per batch
    assert merged["alignment_metric"] == "prompt_accuracy"
