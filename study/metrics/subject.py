"""DreamBooth's metrics (Ruiz et al. 2023, sec. 4.1): subject fidelity as the mean cosine similarity of image
embeddings of generated and real subject images (DINO ViT-S/16; CLIP-I), prompt fidelity as the CLIP
image-text similarity (CLIP-T). Models are read from local folders only; the embedded digits use their
domain network instead (the digit classifier's penultimate features, study/metrics/classifier.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from study.metrics.classifier import DigitClassifier, as_images
from study.metrics.extractors import to_rgb


def per_sample_cosine(gen_embeds, ref_embeds) -> torch.Tensor:
    """(N,) each generated image's mean cosine similarity to the M real ones (its share of DINO, CLIP-I)."""
    g = torch.nn.functional.normalize(torch.as_tensor(np.asarray(gen_embeds), dtype=torch.float64), dim=-1)
    r = torch.nn.functional.normalize(torch.as_tensor(np.asarray(ref_embeds), dtype=torch.float64), dim=-1)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1] or not len(g) or not len(r):
        raise ValueError(f"embeddings must be N x D and M x D with N, M >= 1, got {tuple(g.shape)}, {tuple(r.shape)}")
    return (g @ r.T).mean(dim=1)


def mean_cosine(gen_embeds, ref_embeds) -> float:
    """Mean over every (generated, real) pair of the cosine similarity of their embeddings (DINO, CLIP-I)."""
    return float(per_sample_cosine(gen_embeds, ref_embeds).mean())


def _uint8_list(images) -> list[torch.Tensor]:
    # 8-bit RGB as the processors see saved PNGs (ClipScorer does the same)
    return list(to_rgb(as_images(images)).round().clamp(0, 255).to(torch.uint8).cpu())


def _local_dir(path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"no {what} model folder at {path}: save one there with save_pretrained (model and image "
                         f"processor) on a machine with network; nothing is downloaded at run time")
    return path


class DinoEmbedder:
    """The [CLS] embedding of a self-supervised ViT (the paper: DINO ViT-S/16) from a local folder."""

    def __init__(self, model, processor, device: str | torch.device = "cpu", batch_size: int = 64):
        self.model, self.processor = model.to(device).eval(), processor
        self.device, self.batch_size = torch.device(device), batch_size

    @classmethod
    def from_pretrained(cls, local_dir, device: str | torch.device = "cpu", batch_size: int = 64):
        """Load a transformers ViT (e.g. facebook/dino-vits16 saved locally) and its image processor."""
        from transformers import AutoImageProcessor, ViTModel

        local_dir = _local_dir(local_dir, "DINO")
        return cls(ViTModel.from_pretrained(local_dir, local_files_only=True, add_pooling_layer=False),
                   AutoImageProcessor.from_pretrained(local_dir, local_files_only=True), device, batch_size)

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """N x D [CLS] tokens of the last layer for images in [0, 255]."""
        out = []
        imgs = _uint8_list(images)
        for i in range(0, len(imgs), self.batch_size):
            inputs = self.processor(images=imgs[i:i + self.batch_size], return_tensors="pt")
            hidden = self.model(pixel_values=inputs["pixel_values"].to(self.device)).last_hidden_state
            out.append(hidden[:, 0].float().cpu())
        return torch.cat(out)


@torch.no_grad()
def clip_image_embeds(scorer, images) -> torch.Tensor:
    """N x D CLIP image embeddings (projected) of images in [0, 255], for CLIP-I; scorer: a ClipScorer."""
    out = []
    imgs = _uint8_list(images)
    for i in range(0, len(imgs), scorer.batch_size):
        inputs = scorer.processor(images=imgs[i:i + scorer.batch_size], return_tensors="pt")
        feats = scorer.model.get_image_features(pixel_values=inputs["pixel_values"].to(scorer.device))
        out.append(getattr(feats, "pooler_output", feats).float().cpu())  # transformers 5 may wrap the tensor
    return torch.cat(out)


@torch.no_grad()
def domain_predictions(classifier: DigitClassifier, images, batch_size: int = 1024) -> torch.Tensor:
    """The digit the classifier reads in each image."""
    return torch.cat([classifier(b).argmax(dim=1).cpu() for b in as_images(images).split(batch_size)])


def subject_scores(gen_images, instance_images, embed) -> float:
    """Subject fidelity: mean cosine similarity of embed(generated) to embed(instance images)."""
    return mean_cosine(embed(gen_images).cpu(), embed(instance_images).cpu())


def leave_one_out_fidelity(instance_images, embed) -> float:
    """The fidelity of each instance image to the other instances: what a perfect copy of the subject scores."""
    e = torch.nn.functional.normalize(embed(instance_images).cpu().double(), dim=-1)
    n = len(e)
    if n < 2:
        return float("nan")
    sims = e @ e.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))
