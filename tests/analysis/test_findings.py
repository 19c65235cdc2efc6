"""Findings state their intervals and say when one is not resolved; W&B mode resolution."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.findings import inference_findings, training_findings
from analysis.inference import InferenceResult
from analysis.wandb_log import resolve_mode


def _result(gap_low: float, gap_high: float, noisy: bool = True) -> InferenceResult:
    pair = {"metric": "fid", "sampler": "ddim", "budget": "final", "smaller_width": 128,
            "larger_width": 320, "smaller_params": 145_000_000, "larger_params": 866_000_000,
            "crossover_cost": 9.5, "low": 8.0, "high": 11.0, "n_crossings": 1, "p_cross": 0.97,
            "smaller_wins_below": True, "at_low_cost": 6.0, "at_low_gap": 7.1,
            "at_low_gap_low": 5.2, "at_low_gap_high": 9.0, "at_high_cost": 20.0,
            "at_high_gap": -0.3, "at_high_gap_low": gap_low, "at_high_gap_high": gap_high}
    empty = pd.DataFrame(columns=["budget", "sampler"])
    return InferenceResult(metric="fid", lower_is_better=True, noisy=noisy, curves=empty,
                           frontier=empty, best_size=empty, pairs=pd.DataFrame([pair]))


def test_gap_sentence_with_interval_and_unresolved():
    gaps = inference_findings(_result(-0.8, 0.2))["gaps"]
    assert gaps[0] == ("ddim: at sampling cost 6, the 145M model beats the 866M model by "
                       "7.1 FID [5.2, 9]")
    # The larger model wins at cost 20 by 0.3, but [-0.2, 0.8] includes zero.
    assert gaps[1].startswith("ddim: at sampling cost 20, the 866M model beats the 145M model "
                              "by 0.3 FID [-0.2, 0.8]")
    assert gaps[1].endswith("(not resolved: the interval includes zero)")


def test_crossover_sentence():
    text = inference_findings(_result(-0.8, -0.1))["crossovers"][0]
    assert text == ("ddim: the 145M and 866M curves cross at sampling cost 9.5 [8, 11]; the "
                    "145M model is better below it (a crossing in 97% of resamples)")


def test_no_noise_is_said():
    gaps = inference_findings(_result(float("nan"), float("nan"), noisy=False))["gaps"]
    assert gaps[1].endswith("(no interval: the table has no metric std and one seed per size)")


def test_skipped_fit_is_reported_with_reason():
    skip = {"skipped": True, "reason": "2 training budget(s)"}
    lines = training_findings({"per_size": {"64": skip}, "envelope": skip,
                               "optimal_size": skip, "chinchilla": skip})
    assert lines[0] == "per-size fit, 64: not fitted (2 training budget(s))"


def test_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode(None) is None and resolve_mode("disabled") is None
    assert resolve_mode("online") == "offline"  # no key: never try to upload
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("online") == "online"
    with pytest.raises(ValueError, match="unknown W&B mode"):
        resolve_mode("cloud")
