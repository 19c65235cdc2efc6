"""Super-resolution metrics against their definitions."""

import numpy as np
import pytest
import torch

from study.metrics.superres import LocalLpips, feature_distance, psnr, ssim, train_patch_network
from study.experiments.superres.data import load_pair_source


def test_psnr_of_a_known_mse():
    target = torch.full((3, 1, 16, 16), 100.0)
    pred = target + torch.tensor([1.0, 5.0, 20.0])[:, None, None, None]  # MSE = d^2
    want = 10 * np.log10(255.0 ** 2 / np.array([1.0, 25.0, 400.0]))
    np.testing.assert_allclose(psnr(pred, target), want, rtol=1e-6)


def test_ssim_is_one_for_identical_images_and_less_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 255
    np.testing.assert_allclose(ssim(x, x), 1.0)
    noise = torch.randn(x.shape, generator=g)
    scores = [ssim(x + s * noise, x).mean() for s in (10.0, 30.0, 90.0)]
    assert 1 > scores[0] > scores[1] > scores[2], scores


@pytest.fixture(scope="module")
def patches_and_net():
    src = load_pair_source("embedded", None, 16, 1, 0, 64, photo_shrink=2)
    hr, _ = src.train_pairs(0, 256)
    net = train_patch_network(hr, src.train_labels(0, 256), epochs=2)
    return src.eval_pairs()[0], net


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(x, kernel_size=7, sigma=sigma)


def test_domain_distance_is_zero_for_identical_images_and_grows_with_blur(patches_and_net):
    hr, net = patches_and_net
    assert np.all(feature_distance(net, hr, hr) == 0)
    means = [feature_distance(net, _blur(hr, s), hr).mean() for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(means, means[1:])), means


def test_local_lpips_loads_the_backbone_from_a_file_and_measures_distance(tmp_path):
    import torchvision

    torch.manual_seed(0)
    alex = torchvision.models.alexnet()
    torch.save(alex.state_dict(), tmp_path / "alexnet.pth")
    lp = LocalLpips(tmp_path / "alexnet.pth")
    assert torch.equal(lp.model.net.slice1[0].weight, alex.features[0].weight)
    assert torch.equal(getattr(lp.model.net.slice5, "10").weight, alex.features[10].weight)
    x = torch.rand(2, 3, 64, 64) * 255
    assert np.all(lp.distance(x, x) == 0)
    assert np.all(lp.distance(x, 255 - x) > 0)
    assert lp.distance(torch.rand(2, 1, 64, 64) * 255, torch.rand(2, 1, 64, 64) * 255).shape == (2,)  # grey
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        LocalLpips(tmp_path / "missing.pth")
