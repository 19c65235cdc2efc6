"""The super-resolution evaluator: upscale the held-out LR patches with one (sampler, steps), score FID, LPIPS,
PSNR and SSIM against the HR patches, with bicubic upsampling's scores on the same images in every row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

FEATURE_PATCHES = 2048  # training crops the embedded domain network learns from (~10 s on one core)
GRID_PATCHES = 8  # patches in each cell's output strip (the image grid's columns)


def _domain_network(cfg, setup, progress: bool):
    """The embedded photographs' domain network, trained once per data setting and cached under cache_dir."""
    from study.identity import stable_hash
    from study.lock import folder_lock
    from study.metrics import load_classifier, save_classifier
    from study.metrics.superres import train_patch_network

    o = cfg.superres
    key = stable_hash({"data": o.data, "hr_size": o.hr_size, "shrink": o.photo_shrink, "c": setup.channels_lr,
                       "seed": cfg.data.split_seed, "epochs": o.feature_epochs, "n": FEATURE_PATCHES, "v": 1})
    folder = Path(cfg.cache_dir).expanduser() / f"superres-net-{key}"
    # evaluation workers start together: one trains, the others wait for it and load
    with folder_lock(folder, "super-resolution feature network", wait_s=600):
        if not (folder / "config.json").exists():
            src = setup.source()
            hr, _ = src.train_pairs(0, FEATURE_PATCHES)
            labels = src.train_labels(0, FEATURE_PATCHES)
            t0 = time.perf_counter()
            net = train_patch_network(hr, labels, seed=cfg.data.split_seed, epochs=o.feature_epochs,
                                      progress=progress)
            tmp = folder.with_name(folder.name + ".tmp")
            save_classifier(net, tmp)
            (tmp / "train.json").write_text(json.dumps({"patches": FEATURE_PATCHES, "seconds":
                                                        round(time.perf_counter() - t0, 1)}))
            tmp.replace(folder)
    return load_classifier(folder)


class SuperResEvaluator:
    """Everything one evaluation process needs, built once: held-out pairs, metric networks, the baseline."""

    def __init__(self, cfg, prepared_dir, device: torch.device | None = None, progress: bool = False):
        from study.metrics import ClassifierExtractor, InceptionExtractor, feature_stats
        from study.experiments.superres.data import upsample
        from study.experiments.superres.setup import superres_setup

        self.cfg, self.o = cfg, cfg.superres
        self.device = device or torch.device("cpu")
        self.setup = superres_setup(cfg, prepared_dir)
        self.setup.space.to(self.device)
        self.hr, self.lr = self.setup.source().eval_pairs()
        self.cond = self.setup.condition(self.lr)
        self.bicubic = upsample(self.lr, self.o.hr_size)
        if self.o.data == "embedded":
            from study.metrics.superres import feature_distance

            net = _domain_network(cfg, self.setup, progress).to(self.device)
            self.extractor = ClassifierExtractor(net, name="superres-domain-net")
            self.lpips_metric = "domain-feature-distance"
            self._distance = lambda a, b: feature_distance(net, a.to(self.device), b.to(self.device))
        else:
            from study.metrics.superres import LocalLpips

            if not cfg.eval.inception_path or not self.o.lpips_backbone:
                raise ValueError("real-data super-resolution needs eval.inception_path (FID) and "
                                 "superres.lpips_backbone (LPIPS's AlexNet weights file): nothing is downloaded")
            self.extractor = InceptionExtractor.from_file(cfg.eval.inception_path, device=self.device)
            lp = LocalLpips(self.o.lpips_backbone, device=self.device)
            self.lpips_metric = "lpips-alex"
            self._distance = lp.distance
        self.ref_feats = self._features(self.hr)
        self.ref_mu, self.ref_sigma = feature_stats(self.ref_feats)
        self.baseline = {f"bicubic_{k}": v for k, v in self.score(self.bicubic).items()
                         if k in ("fid", "fid_std", "lpips", "lpips_std", "psnr", "ssim")}

    def _features(self, images: torch.Tensor) -> np.ndarray:
        from study.metrics import extract_features

        return extract_features(self.extractor, images, batch_size=self.cfg.eval.batch_size)

    def score(self, images: torch.Tensor) -> dict:
        """FID, KID, LPIPS, PSNR and SSIM (means over the held-out patches, with their noise) of SR outputs."""
        from study.metrics import bootstrap_std, fid, kid
        from study.metrics.superres import psnr, ssim

        images = images.round().clamp(0, 255)  # scored as the 8-bit images they would be saved as
        feats = self._features(images)
        dist = self._distance(images, self.hr)
        p, s = psnr(images, self.hr), ssim(images, self.hr)
        n = len(images)
        out = {"fid": fid(feats, self.ref_mu, self.ref_sigma), "kid": kid(feats, self.ref_feats),
               "lpips": float(dist.mean()), "lpips_std": float(dist.std(ddof=1) / np.sqrt(n)),
               "psnr": float(np.mean(p[np.isfinite(p)])) if np.isfinite(p).any() else float("inf"),
               "ssim": float(s.mean()), "num_samples": n, "lpips_metric": self.lpips_metric,
               "extractor": self.extractor.name}
        out.update(bootstrap_std(feats, self.ref_mu, self.ref_sigma, n=30, seed=self.cfg.eval.seed))
        return out

    @torch.no_grad()
    def generate(self, unet, sampler: str, steps: int, n: int | None = None) -> torch.Tensor:
        """SR outputs in [0, 255] of the first n held-out patches, from fixed noise (the same for every model)."""
        from study.experiments.superres.model import bicubic_latents, from_residual, residual_scale, upscale

        n = len(self.cond) if n is None else n
        scale = residual_scale(unet)  # None: the concat formulation diffuses the HR latents themselves
        seed, bs = self.cfg.eval.seed, self.cfg.eval.batch_size
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, self.setup.channels, self.setup.grid, self.setup.grid), generator=gen)
        unet = unet.to(self.device).eval()
        prediction = unet.config.get("prediction_type") or self.cfg.model.prediction_type  # superres.prediction_type
        out = []
        for i in range(0, n, bs):
            step_gen = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + i)
            aug_gen = torch.Generator().manual_seed(seed * 1_000_033 + i)
            lat = upscale(unet, sampler, steps, self.cond[i:i + bs], self.setup.uncond, noise[i:i + bs].to(self.device),
                          step_gen, self.o.eval_noise_level, self.cfg.eval.timestep_spacing, prediction,
                          aug_generator=aug_gen)
            if scale is not None:
                lat = from_residual(lat, bicubic_latents(self.setup.space, self.lr[i:i + bs], self.o.hr_size)
                                    .to(lat.device), scale)
            out.append(self.setup.space.decode(lat).cpu())
        return torch.cat(out)

    def evaluate(self, unet, sampler: str, steps: int, guidance: float = 1.0) -> dict:
        """One (sampler, steps) cell: the SR scores, bicubic's on the same patches, UNet calls per sample, and
        the path of a strip of its first outputs (for the analysis' image grid)."""
        if guidance != 1.0:
            raise ValueError(f"super-resolution samples without guidance (guidance = 1), got {guidance}")
        images = self.generate(unet, sampler, steps)
        res = self.score(images)
        res.update(self.baseline, unet_calls=int(steps), noise_level=int(self.o.eval_noise_level),
                   alignment=float("nan"), alignment_metric="none", **self._strips(unet, sampler, steps, images))
        return res

    def _strips(self, unet, sampler: str, steps: int, images: torch.Tensor) -> dict:
        """PNG strips of the first GRID_PATCHES patches in RUN_DIR/superres/: LR, bicubic, HR once, this cell's output."""
        from study.identity import stable_hash
        from study.paths import run_dir

        k, folder = min(GRID_PATCHES, len(images)), run_dir(self.cfg) / "superres" / "strips"
        out = {}
        for name, ims in (("lr", self.lr), ("bicubic", self.bicubic), ("hr", self.hr)):
            out[f"{name}_strip_path"] = _save_strip(ims[:k], folder / f"{name}.png")
        tag = stable_hash(images[:k].numpy().tobytes().hex(), 8)  # one file per model and cell
        width = unet.config.block_out_channels[0]
        out["strip_path"] = _save_strip(images[:k], folder / f"w{width}-{sampler}-{steps}-{tag}.png")
        return out


def _save_strip(images: torch.Tensor, path: Path) -> str:
    """Images [k, C, h, w] in [0, 255] side by side in one 8-bit PNG (grey or RGB); returns its absolute path."""
    from PIL import Image

    from study.atomic import write_atomic

    a = images.round().clamp(0, 255).to(torch.uint8).permute(2, 0, 3, 1).reshape(images.shape[2], -1, images.shape[1])
    im = Image.fromarray(a[..., 0].numpy() if a.shape[-1] == 1 else a.numpy())
    write_atomic(path, lambda f: im.save(f, format="PNG"))
    return str(path.resolve())


def load_superres_evaluator(cfg, prepared_dir, device=None) -> SuperResEvaluator:
    """The evaluator of the superres4x task (study.tasks.evaluators)."""
    gpu = cfg.eval.gpus_per_eval > 0 and torch.cuda.is_available()
    return SuperResEvaluator(cfg, prepared_dir, device or torch.device("cuda" if gpu else "cpu"))
