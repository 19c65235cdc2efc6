"""The data-set registry: a new data set is one entry here (issue 9), read by config validation, the
ladder's geometry and `study prepare`.

An entry names how the set is read (an embedded set's loader, or a reader layout of study/shards/readers.py), its
image channels, whether labels exist for the domain classifier, the rule for evaluation prompts and its checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from study.data import ImageCaptionSet, load_digits_splits, load_photo_splits


def _held_out_prompts(data_cfg, held_captions: list[str], held_labels) -> tuple[list[str], object]:
    """Evaluation prompts: COCO captions when configured, else the held-out captions in shard order
    (the key-hash order, so the first N are a random draw without holding the set)."""
    import numpy as np

    if data_cfg.eval_captions:
        from study.captions import load_coco_captions

        return load_coco_captions(data_cfg.eval_captions, data_cfg.max_eval_prompts, data_cfg.split_seed), None
    texts = list(held_captions[: data_cfg.max_eval_prompts])
    labels = None if held_labels is None else np.asarray(held_labels[: len(texts)])
    return texts, labels


def _no_checks(d, check) -> None:
    return None


def _needs_root(what: str) -> Callable:
    def validate(d, check) -> None:
        check(d.root is not None, "data.root", what, d.root)
        check(d.shard_size > 0, "data.shard_size", "a positive number of samples per shard", d.shard_size)
        check(0 <= d.max_bad_fraction < 1, "data.max_bad_fraction", "a fraction in [0, 1)", d.max_bad_fraction)
        check(d.prepare_chunk > 0, "data.prepare_chunk", "a positive number of samples", d.prepare_chunk)
        check(d.prepare_encode_batch > 0, "data.prepare_encode_batch", "a positive number of samples",
              d.prepare_encode_batch)
        check(d.prepare_actors > 0, "data.prepare_actors", "a positive number of encoder actors", d.prepare_actors)
        check(d.prepare_gpus_per_actor >= 0, "data.prepare_gpus_per_actor", "GPUs >= 0", d.prepare_gpus_per_actor)
        check(d.prepare_writers > 0, "data.prepare_writers", "a positive number of tasks", d.prepare_writers)
        check(d.read_retries >= 0, "data.read_retries", "a number of retries >= 0", d.read_retries)
        check(d.read_retry_backoff_s >= 0, "data.read_retry_backoff_s", "seconds >= 0", d.read_retry_backoff_s)
        check(d.prepare_readahead > 0, "data.prepare_readahead", "a positive number of chunks per encoder actor",
              d.prepare_readahead)
    return validate


@dataclass(frozen=True)
class DataSet:
    """One registry entry."""

    name: str
    channels: int  # image channels the latent space sees
    layout: str | None  # reader layout (study/shards/readers.py); None: embedded, loaded in memory
    classifier: bool  # labels exist for every sample: the domain-classifier FID can be used
    eval_prompts: Callable  # (data_cfg, held_captions, held_labels) -> (prompts, labels or None)
    validate: Callable  # (data_cfg, check(cond, key, expected, value)) -> None, raising on a bad value
    # Shard order: the key hash (streamed sets: mixes every source file into every shard, whoever read it),
    # or the set's native order (the digits: bit for bit the arrays, and so the FIDs, of the in-memory path).
    hash_order: bool = True
    load: Callable | None = None  # embedded sets: data_cfg -> (train, held-out) ImageCaptionSets in memory


DATASETS: dict[str, DataSet] = {
    "digits": DataSet("digits", channels=1, layout=None, classifier=True, eval_prompts=_held_out_prompts,
                      validate=_no_checks, hash_order=False, load=load_digits_splits),
    # grey patches of the photographs in scikit-image's wheel, labelled by photograph (study/data.py)
    "photos": DataSet("photos", channels=1, layout=None, classifier=True, eval_prompts=_held_out_prompts,
                      validate=_no_checks, hash_order=False, load=load_photo_splits),
    "imagefolder": DataSet("imagefolder", 3, "imagefolder", False, _held_out_prompts,
                           _needs_root("a folder (or s3:// prefix) with images and metadata.jsonl")),
    "webdataset": DataSet("webdataset", 3, "webdataset", False, _held_out_prompts,
                          _needs_root("a folder (or s3:// prefix) of WebDataset .tar shards (img2dataset)")),
    "parquet": DataSet("parquet", 3, "parquet", False, _held_out_prompts,
                       _needs_root("a folder (or s3:// prefix) of .parquet files with image bytes and captions")),
}


def dataset(name: str) -> DataSet:
    """The registry entry of a data set name."""
    if name not in DATASETS:
        raise ValueError(f"data.name={name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def validate_data(d, check) -> None:
    """Config validation of the data section through its registry entry."""
    check(d.name in DATASETS, "data.name", " or ".join(repr(n) for n in DATASETS), d.name)
    dataset(d.name).validate(d, check)


def load_splits(data_cfg) -> tuple[ImageCaptionSet, ImageCaptionSet]:
    """The (train, held-out) split of an embedded data set, in memory; streamed sets (image folders,
    WebDataset, parquet) are never held whole: `study prepare` reads them into shards."""
    entry = dataset(data_cfg.name)
    if entry.load is None:
        raise ValueError(f"data.name={data_cfg.name} is streamed, not loaded in memory: run `study prepare` and "
                         f"read its shards (study.shards.format.ShardIndex)")
    return entry.load(data_cfg)
