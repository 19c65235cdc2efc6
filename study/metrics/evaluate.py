"""The one call the evaluation makes: FID, KID, their bootstrap noise and text-image alignment of a sample."""

from __future__ import annotations

import numpy as np

from study.metrics.alignment import ClipScorer, prompt_accuracy
from study.metrics.classifier import DigitClassifier
from study.metrics.extractors import FeatureExtractor, iter_batches
from study.metrics.fid import bootstrap_std, fid, kid
from study.metrics.reference import ReferenceStats


def evaluate_images(extractor: FeatureExtractor, images, reference: ReferenceStats, labels=None,
                    classifier: DigitClassifier | None = None, texts: list[str] | None = None,
                    clip: ClipScorer | None = None, batch_size: int = 256, bootstrap: int = 30,
                    seed: int = 0) -> dict:
    """FID, KID, their bootstrap std and alignment of images (tensor, array or iterable of batches)."""
    # bootstrap = replicates for fid_std/kid_std (0 skips them); labels + classifier add prompt_accuracy,
    # texts + clip add clip_score; "alignment" repeats whichever is there (CLIP score first)
    if extractor.name != reference.name:
        raise ValueError(f"reference was computed with {reference.name!r}, not with {extractor.name!r}")
    if (labels is None) != (classifier is None) or (texts is None) != (clip is None):
        raise ValueError("prompt accuracy needs labels and classifier; CLIP score needs texts and clip")
    feats, acc_sum, clip_sum, seen = [], 0.0, 0.0, 0
    # one pass over the batches: generated samples may be streamed and not fit in memory at once
    for batch in iter_batches(images, batch_size):
        b = len(batch)
        feats.append(extractor.features(batch).detach().cpu().float().numpy())
        if classifier is not None:
            acc_sum += prompt_accuracy(classifier, batch, np.asarray(labels)[seen:seen + b]) * b
        if clip is not None:
            clip_sum += clip.score(batch, list(texts[seen:seen + b])) * b
        seen += b
    if not seen:
        raise ValueError("no images to evaluate")
    for what, given in (("labels", labels), ("texts", texts)):
        if given is not None and len(given) != seen:
            raise ValueError(f"{len(given)} {what} for {seen} images")
    gen = np.concatenate(feats)
    out = {
        "fid": fid(gen, reference.mu, reference.sigma),
        "kid": kid(gen, reference.feats, seed=seed),
        "fid_std": None,
        "kid_std": None,
        "num_samples": seen,
        # the real-vs-real floor travels with every number so tables can show how far above it a model is
        "floor_fid": reference.floor_fid,
        "floor_n": reference.floor_n,
        "reference": reference.key,
        "extractor": extractor.name,
    }
    if bootstrap:  # 0 skips it
        out.update(bootstrap_std(gen, reference.mu, reference.sigma, reference.feats, n=bootstrap, seed=seed,
                                 device=getattr(extractor, "device", "cpu")))  # the extractor's GPU, if any
    if classifier is not None:
        out["prompt_accuracy"] = acc_sum / seen
    if clip is not None:
        out["clip_score"] = clip_sum / seen
    # one column for "how well the prompt is followed", whichever data set: CLIP score where there is one
    for metric in ("clip_score", "prompt_accuracy"):
        if metric in out:
            out["alignment"], out["alignment_metric"] = out[metric], metric
            break
    return out
