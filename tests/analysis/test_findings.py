"""Findings state their intervals and say when one is not resolved; W&B mode resolution."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from analysis.findings import inference_findings, training_findings
from analysis.inference import InferenceResult
from analysis.training import regressions
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


def test_fit_on_a_search_bound_is_said():
    fit = {"params": {"E": {"value": 2.4, "low": 1.3, "high": 8.8}, "alpha": {"value": 5.0, "low": 2.5, "high": 5.0}},
           "derived": {}, "n_points": 4, "bootstrap": {"valid": 138}, "at_bound": {"alpha": "upper"}}
    skip = {"skipped": True, "reason": "1 point"}
    line = training_findings({"per_size": {"32": fit}, "envelope": skip, "optimal_size": skip,
                              "chinchilla": skip})[0]
    assert line.endswith("(4 points, 138 valid resamples; alpha at its upper search bound: "
                         "not determined by these points)")


def _points(fids: dict[int, list[float]], std: float) -> pd.DataFrame:
    images = [4000, 8000, 16000, 32000]
    return pd.DataFrame([{"width": w, "params": 1000 * w, "train_images": n, "train_flops": 1e9 * w * n,
                          "fid": f, "std": std} for w, fs in fids.items() for n, f in zip(images, fs)])


def test_fid_rising_with_training_beyond_noise_is_found_and_said():
    # The 6.3M model of a tiny run whose loss spiked near the end: FID 1.57 at 16K, 9.37 at 32K.
    pts = _points({24: [7.7, 3.0, 1.0, 0.85], 32: [8.77, 2.65, 1.57, 9.37]}, std=0.3)
    found = regressions(pts)
    assert [(r["width"], r["from_images"], r["to_images"]) for r in found] == [(32, 16000, 32000)]
    skip = {"skipped": True, "reason": "-"}
    line = training_findings({"per_size": {}, "envelope": skip, "optimal_size": skip, "chinchilla": skip,
                              "regressions": found})[-1]
    assert ": FID rose from 1.57 at 16,000 training images to 9.37 at 32,000, beyond the evaluation noise" in line
    assert "train/w32-s*/metrics.jsonl" in line


def test_rise_within_noise_is_not_a_regression():
    # 1.57 -> 1.9 is within 3 standard errors when each FID has std 0.3; with std 0.05 it is not.
    assert regressions(_points({32: [8.0, 2.6, 1.57, 1.9]}, std=0.3)) == []
    assert len(regressions(_points({32: [8.0, 2.6, 1.57, 1.9]}, std=0.05))) == 1
    # Without a std (one seed, no bootstrap), only a rise of more than 25 % counts.
    assert regressions(_points({32: [8.0, 2.6, 1.57, 1.9]}, std=float("nan"))) == []
    assert len(regressions(_points({32: [8.0, 2.6, 1.57, 2.1]}, std=float("nan")))) == 1


def test_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode(None) is None and resolve_mode("disabled") is None
    assert resolve_mode("online") == "offline"  # no key: never try to upload
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("online") == "online"
    with pytest.raises(ValueError, match="unknown W&B mode"):
        resolve_mode("cloud")


def test_wandb_run_joins_the_study_group_with_native_charts(tmp_path, monkeypatch):
    from analysis.wandb_log import log_analysis

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    curves = pd.DataFrame({"experiment": "base", "metric": "fid", "sampler": ["ddim"] * 4,
                           "size": ["1M", "1M", "2M", "2M"], "params": [1e6, 1e6, 2e6, 2e6], "steps": [4, 8] * 2,
                           "sampling_cost": [0.5, 1.0, 1.0, 2.0], "value": [9.0, 7.0, 8.0, 5.0], "std": 0.1})
    bands = pd.DataFrame({"sampler": ["ddim"], "from_cost": [0.5], "to_cost": [2.0], "best": ["1M ~ 2M"],
                          "tied": [True]})
    folder = log_analysis(tmp_path, "ldm-scaling", "offline", tables={"best_size": bands}, figures={},
                          summary={"claim/sampling_cost": "reproduced"}, config={}, group="tiny-study",
                          curves=curves, training=pd.DataFrame({"params": [1e6, 1e6], "size": "1M",
                                                                 "train_flops": [1e12, 2e12], "fid": [9.0, 7.0]}))
    path = next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    deadline = time.time() + 30
    while b"tiny-study-analysis" not in path.read_bytes() and time.time() < deadline:
        time.sleep(0.5)  # W&B's service process may still be flushing the records it was handed
    record = path.read_bytes()
    assert b"tiny-study" in record and b"tiny-study-analysis" in record  # group and run name
    media = tmp_path / "wandb" / folder.rsplit("/", 1)[-1] / "files" / "media" / "table"
    assert list(media.glob("charts/base/fid_vs_sampling_cost/ddim*.table.json"))
    assert list(media.glob("charts/base/fid_vs_training_compute*.table.json"))
    assert list(media.glob("tables/best_size*.table.json")) and list(media.glob("tables/curves*.table.json"))


def test_tied_pair_is_said_as_a_tie_and_every_crossing_listed():
    res = _result(-0.8, -0.1)
    pair = res.pairs.iloc[0].to_dict()
    tied = {**pair, "crossover_cost": float("nan"), "low": float("nan"), "high": float("nan"), "n_crossings": 0,
            "verdict": "tied within noise", "overlap_low": 1.2, "overlap_high": 4.9}
    twice = {**pair, "n_crossings": 2, "verdict": "crossing", "crossings": "9.5 [8, 11]; 30 [25, 41]"}
    res.pairs = pd.DataFrame([tied, twice])
    lines = inference_findings(res)["crossovers"]
    assert lines[0] == "ddim: the 145M and 866M models are tied within noise from cost 1.2 to 4.9"
    assert lines[1].endswith("; the curves cross 2 times: 9.5 [8, 11]; 30 [25, 41]")
