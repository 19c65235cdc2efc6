"""Metrics: FID and KID through clean-fid with pluggable features, noise floors, text-image alignment."""

from study.metrics.alignment import ClipScorer, clip_scores_from_embeds, prompt_accuracy
from study.metrics.classifier import (
    ClassifierConfig,
    DigitClassifier,
    load_classifier,
    save_classifier,
    train_digit_classifier,
)
from study.metrics.evaluate import evaluate_images
from study.metrics.extractors import (
    INCEPTION_FILE,
    ClassifierExtractor,
    FeatureExtractor,
    InceptionExtractor,
    MissingInceptionError,
    extract_features,
)
from study.metrics.fid import bootstrap_std, feature_stats, fid, fid_from_stats, kid, noise_floor
from study.metrics.reference import ReferenceStats, compute_reference, load_reference, reference_key

__all__ = [
    "INCEPTION_FILE",
    "ClassifierConfig",
    "ClassifierExtractor",
    "ClipScorer",
    "DigitClassifier",
    "FeatureExtractor",
    "InceptionExtractor",
    "MissingInceptionError",
    "ReferenceStats",
    "bootstrap_std",
    "clip_scores_from_embeds",
    "compute_reference",
    "evaluate_images",
    "extract_features",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "kid",
    "load_classifier",
    "load_reference",
    "noise_floor",
    "prompt_accuracy",
    "reference_key",
    "save_classifier",
    "train_digit_classifier",
]
