"""Text-image alignment beside FID: CLIP score for real data, prompt accuracy for the embedded digits."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from study.metrics.classifier import DigitClassifier, as_images
from study.metrics.extractors import to_rgb

if TYPE_CHECKING:  # transformers takes seconds to import; the digits default never needs it
    from transformers import CLIPModel, CLIPProcessor


@torch.no_grad()
def prompt_accuracy(classifier: DigitClassifier, images, labels, batch_size: int = 1024) -> float:
    """Fraction of images the classifier reads as the digit they were prompted with."""
    x = as_images(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    preds = torch.cat([classifier(b).argmax(dim=1).cpu() for b in x.split(batch_size)])
    return float((preds == y).float().mean())


def clip_scores_from_embeds(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Per-pair CLIP score max(100 cos, 0) / 100 (torchmetrics' definition on the paper's 0..1 scale)."""
    cos = torch.nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
    return (100 * cos).clamp(min=0) / 100


class ClipScorer:
    """CLIP score of image-caption pairs with a CLIP model read from a local folder."""

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        """Load CLIPModel and CLIPProcessor from a local folder; never touches the hub."""
        from transformers import CLIPModel, CLIPProcessor

        local_dir = Path(local_dir).expanduser()
        if not local_dir.is_dir():
            raise ValueError(f"no CLIP model folder at {local_dir}: save one there with save_pretrained "
                             "(model and processor) on a machine with network; nothing is downloaded at run time")
        model = CLIPModel.from_pretrained(local_dir, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(local_dir, local_files_only=True)
        return cls(model, processor, device=device, batch_size=batch_size)

    @torch.no_grad()
    def scores(self, images, texts: list[str]) -> torch.Tensor:
        """CLIP score of each (image in [0, 255], text) pair, on the 0..1 scale."""
        x = as_images(images)
        texts = list(texts)
        if len(x) != len(texts):
            raise ValueError(f"{len(x)} images but {len(texts)} texts")
        max_len = self.model.config.text_config.max_position_embeddings  # 77 for CLIP: longer captions are cut
        out = []
        for start in range(0, len(x), self.batch_size):
            # 8-bit images as torchmetrics sees saved PNGs: the processor resizes uint8 and float differently
            batch = to_rgb(x[start:start + self.batch_size]).round().clamp(0, 255).to(torch.uint8).cpu()
            inputs = self.processor(text=texts[start:start + self.batch_size], images=list(batch),
                                    return_tensors="pt", padding=True, truncation=True, max_length=max_len)
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            out.append(clip_scores_from_embeds(outputs.image_embeds, outputs.text_embeds).cpu())
        return torch.cat(out)

    def score(self, images, texts: list[str]) -> float:
        """Mean CLIP score over image-text pairs (about 0.31 for Stable Diffusion on COCO)."""
        return float(self.scores(images, texts).mean())
