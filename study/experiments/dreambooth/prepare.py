"""What a DreamBooth run and its evaluation read, cached in the prepared folder and keyed by what they depend
on: the subject's prompt embeddings, and each base checkpoint's class images (study.experiments.dreambooth.prior)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from study.atomic import write_atomic
from study.experiments.dreambooth.prior import ClassImageSettings, DreamBoothBatches, ensure_class_images
from study.experiments.dreambooth.subject import Subject, load_subject
from study.identity import stable_hash

CACHE = "dreambooth"  # under the prepared folder


def subject_embeddings(cfg, prepared_dir, subject: Subject) -> dict[str, np.ndarray]:
    """Text-encoder hidden states of the subject's prompts: eval [P, T, D], instance, class and uncond [1, T, D]."""
    from study.config import to_dict

    texts = {"eval": list(subject.eval_prompts), "instance": [subject.instance_prompt],
             "class": [subject.class_prompt], "uncond": [""]}
    path = Path(prepared_dir) / CACHE / f"prompts-{stable_hash([texts, to_dict(cfg)['text_encoder']])}.npz"
    if not path.exists():
        from study.text import load_text_encoder

        encoder = load_text_encoder(cfg.text_encoder)
        arrays = {k: encoder.encode(v).numpy() for k, v in texts.items()}
        write_atomic(path, lambda f: np.savez(f, **arrays))
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def class_settings(cfg, subject: Subject) -> ClassImageSettings:
    """The configured way of sampling class images (dreambooth.class_* and num_class_images)."""
    db = cfg.dreambooth
    return ClassImageSettings(prompt=subject.class_prompt, num_images=db.num_class_images,
                              sampler=db.class_sampler, steps=db.class_steps, guidance=db.class_guidance,
                              seed=db.seed, weights=db.base_weights, batch_size=cfg.eval.batch_size)


def class_images_for(cfg, prepared_dir, base_checkpoint, device=None,
                     subject: Subject | None = None) -> tuple[np.ndarray, Path]:
    """The base checkpoint's class images (generated once, then read from the cache)."""
    from study.autoencoder import load_latent_space

    subject = subject or load_subject(cfg)
    emb = subject_embeddings(cfg, prepared_dir, subject)
    space = load_latent_space(cfg.autoencoder, Path(prepared_dir) / "autoencoder")
    device = device or torch.device("cpu")
    return ensure_class_images(base_checkpoint, Path(prepared_dir) / CACHE / "class_images", class_settings(cfg, subject),
                               torch.from_numpy(emb["class"]), torch.from_numpy(emb["uncond"]), space.to(device),
                               cfg.model.prediction_type, device)


def training_batches(cfg, prepared_dir, base_checkpoint, device=None) -> DreamBoothBatches:
    """The fine-tune's batches: the instance images with the identifier prompt, and (prior preservation) the
    base checkpoint's class images with the class prompt, both encoded into the study's latent space."""
    from study.autoencoder import load_latent_space

    subject = load_subject(cfg)
    emb = subject_embeddings(cfg, prepared_dir, subject)
    space = load_latent_space(cfg.autoencoder, Path(prepared_dir) / "autoencoder")
    inst = space.encode(torch.from_numpy(np.asarray(subject.instance_images)))
    if not cfg.dreambooth.prior_preservation:
        return DreamBoothBatches(inst, emb["instance"])
    images, _ = class_images_for(cfg, prepared_dir, base_checkpoint, device, subject)
    return DreamBoothBatches(inst, emb["instance"], space.to("cpu").encode(torch.from_numpy(images)), emb["class"])


def prepared_geometry(prepared_dir):
    """The ladder geometry of a prepared folder (latent shape, text context), without loading any array."""
    from study.ladder import Geometry

    meta = json.loads((Path(prepared_dir) / "meta.json").read_text())
    (c, h, _), (t, d) = meta["latent_shape"], meta["context_shape"]
    return Geometry(in_channels=int(c), sample_size=int(h), context_dim=int(d), tokens=int(t))
