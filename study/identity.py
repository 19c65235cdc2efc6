"""One definition of identity: the stable hash of a JSON-able object, and which config keys define a result.

Every cache key, run identity and experiment name in the study is a `stable_hash` of a JSON object, so
the same object always gives the same key on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import json

# Settings that define what a run folder's results mean: a rerun that changes one of them would mix
# incomparable numbers into one table. Widths, seeds, samplers and steps may grow between reruns.
STUDY_IDENTITY = ("data", "text_encoder", "autoencoder", "train", "model.ladder", "model.prediction_type",
                  "model.reference_width", "eval.num_samples", "eval.seed", "eval.guidance_min",
                  "eval.guidance_max", "eval.search", "eval.timestep_spacing", "eval.checkpoint",
                  "eval.feature_extractor")

# What a trained checkpoint depends on (the sections before evaluation): its results row carries this hash.
TRAINING_SECTIONS = ("data", "text_encoder", "autoencoder", "model", "train")

# Data settings that change how prepare runs (workers, GPUs, batches, memory bounds, debugging), not what it
# computes, so neither caches nor run folders key on them: the shards are the same bytes whatever the workers,
# writers, read-ahead and sort; the device and the encode batch can move float rounding only.
OPERATIONAL_DATA_KEYS = ("prepare_actors", "prepare_gpus_per_actor", "prepare_writers", "prepare_encode_batch",
                         "prepare_readahead", "prepare_driver_sort_max", "keep_parts")

# Training settings that change how a run executes but not what it computes: a rerun may change them freely.
OPERATIONAL_TRAIN_KEYS = ("use_gpu", "cpus_per_worker", "torch_threads", "log_every_images",
                          "checkpoint_every_images")


def stable_hash(obj, n: int = 12) -> str:
    """The first n hex digits of the SHA-256 of obj as canonical JSON (sorted keys; str() for the rest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def get_dotted(d: dict, dotted: str):
    """d["a"]["b"] for "a.b" (the data section without its operational keys)."""
    for part in dotted.split("."):
        d = d[part]
    return data_identity(d) if dotted == "data" else d


def data_identity(data: dict) -> dict:
    """The data section less the keys that change how prepare runs, not what it computes."""
    return {k: v for k, v in data.items() if k not in OPERATIONAL_DATA_KEYS}


def sections(cfg_dict: dict, names=TRAINING_SECTIONS) -> dict:
    """The named sections of a resolved config dict."""
    return {s: cfg_dict[s] for s in names}


def training_identity(cfg_dict: dict) -> dict:
    """The part of a resolved config that decides what a training run computes."""
    model = {k: v for k, v in cfg_dict["model"].items() if k in ("ladder", "prediction_type")}
    train = {k: v for k, v in cfg_dict["train"].items() if k not in OPERATIONAL_TRAIN_KEYS}
    ident = {"data": data_identity(cfg_dict["data"]), "text_encoder": cfg_dict["text_encoder"],
             "autoencoder": cfg_dict["autoencoder"], "model": model, "train": train}
    if cfg_dict.get("recipe"):  # a derived run (distillation, fine-tune): its recipe, base checkpoint, options
        ident["recipe"] = cfg_dict["recipe"]
    return ident
