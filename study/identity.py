"""One definition of identity: the stable hash of a JSON-able object, and which config keys define a result.

Every cache key, run identity and experiment name in the study is a `stable_hash` of a JSON object, so
the same object always gives the same key on every machine and Python version. What a training run computed
is `training_identity` (its hash, `training_hash`, is the results rows' `config_hash`, the DONE marker's, and
the Tune experiment's); what a study folder's results mean is `study_identity` (the rerun check).
"""

from __future__ import annotations

import hashlib
import json

# Evaluation settings that define what a study folder's rows mean (beside what trained its checkpoints): a rerun
# that changes one of them would mix incomparable numbers into one table. Widths, seeds, samplers and steps may
# grow between reruns.
STUDY_EVAL_KEYS = ("num_samples", "seed", "guidance_min", "guidance_max", "search", "timestep_spacing",
                   "checkpoint", "feature_extractor", "reference")
# The value of a study key in a folder recorded before the key existed: the behaviour it had then.
STUDY_EVAL_DEFAULTS = {"reference": "heldout"}

# Data settings that change how prepare runs (workers, GPUs, batches, memory bounds, debugging), not what it
# computes, so neither caches nor run folders key on them: the shards are the same bytes whatever the workers,
# writers, read-ahead and sort; the device and the encode batch can move float rounding only.
OPERATIONAL_DATA_KEYS = ("prepare_actors", "prepare_gpus_per_actor", "prepare_writers", "prepare_encode_batch",
                         "prepare_readahead", "keep_parts",
                         "read_retries", "read_retry_backoff_s")

# Training settings that change how a run executes but not what it computes: a rerun may change them freely.
# The post-hoc EMA profiles are tracked beside training and never feed back into it. The memory plan's keys split
# the same global batch differently (float rounding only), as the GPU kind does.
OPERATIONAL_TRAIN_KEYS = ("use_gpu", "cpus_per_worker", "torch_threads", "log_every_images",
                          "checkpoint_every_images", "phema_snapshots", "phema_sigma_rels", "memory_margin",
                          "micro_batch", "checkpointing", "min_micro_batch", "memory_plan")


def sha256_file(path, chunk: int = 8 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks (memory does not grow with the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj, n: int = 12) -> str:
    """The first n hex digits of the SHA-256 of obj as canonical JSON (sorted keys; str() for the rest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# Keys added after run folders existed, by section, with the value that is what those runs did: left out of the
# identity at that value, so every such folder keeps its hash and resumes (loss_milestones: none were scored;
# captions: prepare stored hidden states before token ids).
ABSENT_AT = {"train": {"loss_milestones": []},
             "data": {"captions": "states", "photo_patches": 1536, "photo_heldout": 48}}


def _identity_keys(section: str, values: dict, operational: tuple[str, ...]) -> dict:
    """A config section less its operational keys and its later keys at their old value (ABSENT_AT)."""
    old = ABSENT_AT.get(section, {})
    return {k: v for k, v in values.items() if k not in operational and not (k in old and v == old[k])}


def data_identity(data: dict) -> dict:
    """The data section less the keys that change how prepare runs, not what it computes."""
    return _identity_keys("data", data, OPERATIONAL_DATA_KEYS)


def training_identity(cfg_dict: dict) -> dict:
    """The part of a resolved config that decides what a training run computes."""
    model = {k: v for k, v in cfg_dict["model"].items() if k in ("ladder", "prediction_type")}
    train = _identity_keys("train", cfg_dict["train"], OPERATIONAL_TRAIN_KEYS)
    ident = {"data": data_identity(cfg_dict["data"]), "text_encoder": cfg_dict["text_encoder"],
             "autoencoder": cfg_dict["autoencoder"], "model": model, "train": train}
    if cfg_dict.get("recipe"):  # a derived run (distillation, fine-tune): its recipe, base checkpoint, options
        ident["recipe"] = cfg_dict["recipe"]
    return ident


def training_hash(cfg_dict: dict) -> str:
    """The hash of training_identity: the results rows' config_hash, the DONE marker's, the Tune experiment's."""
    return stable_hash(training_identity(cfg_dict))


def study_identity(cfg_dict: dict) -> dict:
    """What a study folder's results mean: what trained its checkpoints (the base ladder's), the reference size
    of its cost axis and the evaluation settings its rows were measured with."""
    ident = training_identity({k: v for k, v in cfg_dict.items() if k != "recipe"})
    ident["model"]["reference_width"] = cfg_dict["model"]["reference_width"]
    ev = cfg_dict["eval"]
    ident["eval"] = {k: ev.get(k, STUDY_EVAL_DEFAULTS[k]) if k in STUDY_EVAL_DEFAULTS else ev[k]
                     for k in STUDY_EVAL_KEYS}
    return ident
