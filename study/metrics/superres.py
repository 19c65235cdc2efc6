"""Super-resolution metrics: PSNR and SSIM (scikit-image), LPIPS (the `lpips` package, backbone from a local
file), and for the embedded photographs a domain network with an LPIPS-style distance on its feature maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from study.metrics.classifier import ClassifierConfig, DigitClassifier, as_images, train_digit_classifier


def _pairs(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_images(pred).cpu().numpy(), as_images(target).cpu().numpy()
    if p.shape != t.shape:
        raise ValueError(f"predictions have shape {p.shape}, targets {t.shape}: they must match")
    return p, t


def psnr(pred, target) -> np.ndarray:
    """PSNR (dB) of each image in [0, 255] against its target: 10 log10(255^2 / MSE), via scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio

    p, t = _pairs(pred, target)
    with np.errstate(divide="ignore"):  # identical images: infinite PSNR, as scikit-image returns it
        return np.array([peak_signal_noise_ratio(b, a, data_range=255.0) for a, b in zip(p, t)])


def ssim(pred, target) -> np.ndarray:
    """SSIM (Wang et al. 2004, scikit-image's 7x7 uniform window) of each image in [0, 255] against its target."""
    from skimage.metrics import structural_similarity

    p, t = _pairs(pred, target)
    win = min(7, p.shape[-1] - (1 - p.shape[-1] % 2))  # odd and at most the image side (16x16 patches: 7)
    return np.array([structural_similarity(b, a, data_range=255.0, channel_axis=0, win_size=win)
                     for a, b in zip(p, t)])


# -- the embedded photographs' domain network ---------------------------------------------------------------

def train_patch_network(hr: torch.Tensor, labels: np.ndarray, seed: int = 0, epochs: int = 15,
                        progress: bool = False) -> DigitClassifier:
    """The digits' classifier architecture trained to tell which training photograph an HR patch came from.

    Its penultimate features give the embedded study's domain FID (as the digits' do) and its feature maps
    the LPIPS-style distance: telling textures and edges of different photographs apart is what they encode.
    """
    config = ClassifierConfig(in_size=hr.shape[-1], num_classes=int(np.max(labels)) + 1)
    return train_digit_classifier(hr, labels, epochs=epochs, seed=seed, config=config, progress=progress)


def feature_maps(net: DigitClassifier, images) -> list[torch.Tensor]:
    """The activation maps after each convolution's GELU (3 layers at full, full and half resolution)."""
    x, maps = net._prepare(images), []
    for layer in net.body:
        if isinstance(layer, torch.nn.Flatten):
            break
        x = layer(x)
        if isinstance(layer, torch.nn.GELU):
            maps.append(x)
    return maps


@torch.no_grad()
def feature_distance(net: DigitClassifier, pred, target, batch_size: int = 512) -> np.ndarray:
    """LPIPS-style distance per image pair on the domain network's feature maps (0 for identical images).

    LPIPS's formula with uniform layer weights (the `lpips=False` baseline of Zhang et al. 2018): unit-normalise
    each position's channel vector, square the difference, sum over channels, average over positions, sum over
    layers. The learnt per-channel weights of LPIPS need human judgements this data set does not have.
    """
    from lpips import normalize_tensor

    p, t = as_images(pred), as_images(target)
    out = []
    for a, b in zip(p.split(batch_size), t.split(batch_size)):
        d = 0.0
        for fa, fb in zip(feature_maps(net, a), feature_maps(net, b)):
            d = d + ((normalize_tensor(fa) - normalize_tensor(fb)) ** 2).sum(1).mean((1, 2))
        out.append(d.cpu())
    return torch.cat(out).numpy()


# -- LPIPS for real data ------------------------------------------------------------------------------------

class LocalLpips:
    """LPIPS (AlexNet, v0.1) whose backbone loads from a local torchvision state-dict file, never downloaded.

    The `lpips` wheel ships only the linear heads; the backbone normally comes from torchvision's download.
    """

    def __init__(self, backbone_path: str | Path, device: str | torch.device = "cpu"):
        import lpips
        import torchvision

        path = Path(backbone_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS backbone {path} not found: save torchvision's AlexNet weights there "
                                    "once (torch.save(torchvision.models.alexnet(weights='DEFAULT').state_dict(), "
                                    "PATH)) on a machine with network; nothing is downloaded at run time")
        alex = torchvision.models.alexnet()
        alex.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        # pnet_rand: build the backbone without torchvision's download, then put the local weights in
        self.model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        for i in range(1, self.model.net.N_slices + 1):
            for name, module in getattr(self.model.net, f"slice{i}").named_children():
                module.load_state_dict(alex.features[int(name)].state_dict())
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def distance(self, pred, target, batch_size: int = 64) -> np.ndarray:
        """LPIPS of each image pair in [0, 255] (grey repeated to RGB)."""
        from study.metrics.extractors import to_rgb

        p, t = to_rgb(as_images(pred)), to_rgb(as_images(target))
        out = [self.model(a.to(self.device) / 127.5 - 1, b.to(self.device) / 127.5 - 1).flatten().cpu()
               for a, b in zip(p.split(batch_size), t.split(batch_size))]
        return torch.cat(out).numpy()
