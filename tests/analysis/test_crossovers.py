"""Crossovers: exact on piecewise-linear curves, and near the truth on a synthetic sweep."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.crossovers import compare_pair, crossings, gap_on_knots
from analysis.inference import FINAL, analyze_metric
from analysis.synthetic import SyntheticSpec, make_results, true_crossover
from analysis.table import load_results


def test_crossing_is_exact_for_lines_in_log_cost():
    # small: 30 - 2 ln c; large: 40 - 6 ln c; equal where 4 ln c = 10, c = e^2.5.
    cs, cl = np.geomspace(0.1, 50, 9), np.geomspace(1, 500, 7)
    fs, fl = 30 - 2 * np.log(cs), 40 - 6 * np.log(cl)
    knots, gap = gap_on_knots(cs, fs, cl, fl, lower_is_better=True)
    first, count = crossings(knots, gap)
    assert first[0] == pytest.approx(np.exp(2.5), rel=1e-12)
    assert count[0] == 1
    assert gap[0, 0] > 0  # the small model wins at the low end of the overlap


def test_no_overlap_and_no_crossing():
    cs, cl = np.array([0.1, 0.5, 1.0]), np.array([2.0, 5.0, 10.0])
    assert gap_on_knots(cs, np.ones(3), cl, np.ones(3), True) is None
    c = np.array([1.0, 2.0, 4.0])
    res = compare_pair(c, np.array([5.0, 4, 3]), np.zeros((0, 3)), c,
                       np.array([6.0, 5, 4]), np.zeros((0, 3)), True, noisy=False)
    assert np.isnan(res["crossover_cost"]) and res["n_crossings"] == 0
    assert np.isnan(res["low"])  # no noise, no interval


def test_several_crossings_are_counted_first_reported():
    c = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    knots, gap = gap_on_knots(c, np.array([1.0, 3, 1, 3, 1]), c, np.full(5, 2.0), True)
    first, count = crossings(knots, gap)
    assert count[0] == 4
    assert first[0] == pytest.approx(np.exp(np.log(1) + 0.5 * np.log(2)))


def test_higher_is_better_flips_the_gap():
    c = np.array([1.0, 10.0])
    _, gap = gap_on_knots(c, np.array([0.30, 0.31]), c, np.array([0.28, 0.33]), False)
    assert gap[0, 0] == pytest.approx(0.02) and gap[0, -1] == pytest.approx(-0.02)


DENSE = SyntheticSpec(steps=(4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100, 150, 250),
                      guidances=(2.0, 4.0, 6.0, 8.0), train_images=(4e6, 16e6), fid_std=0.1)


@pytest.fixture(scope="module")
def dense_result(tmp_path_factory):
    run = tmp_path_factory.mktemp("dense")
    make_results(DENSE, seed=3).to_parquet(run / "results.parquet")
    return analyze_metric(load_results(run), "fid", n_boot=200, seed=0)


@pytest.mark.parametrize("sampler", list(DENSE.samplers))
def test_synthetic_crossovers_near_truth_and_inside_interval(dense_result, sampler):
    found = dense_result.crossing(FINAL)
    found = found[found["sampler"] == sampler]
    assert len(found) == 3  # every pair of the three sizes crosses
    for row in found.itertuples():
        small, large = DENSE.widths.index(row.smaller_width), DENSE.widths.index(row.larger_width)
        truth = true_crossover(DENSE, small, large, sampler, max(DENSE.train_images))
        assert row.low <= truth <= row.high, (row, truth)
        assert row.crossover_cost == pytest.approx(truth, rel=0.1)
        assert row.p_cross > 0.9 and row.smaller_wins_below


def test_findings_per_budget_too(dense_result):
    budgets = set(dense_result.pairs["budget"])
    assert budgets == {FINAL, "4000000", "16000000"}
    early = dense_result.crossing("4000000")
    # Less training raises every floor by B D^-beta alike: the crossings barely move.
    assert len(early) == 6 and early["crossover_cost"].notna().all()


def test_seeds_alone_give_intervals(tmp_path):
    # No evaluation std, but three training seeds per size: resampling seeds is the noise.
    spec = SyntheticSpec(seeds=(0, 1, 2), seed_sd=0.3, fid_std=0.0, guidances=(3.0, 6.0),
                         train_images=(16e6,))
    df = make_results(spec, seed=5).drop(columns=["fid_std"])
    df.to_parquet(tmp_path / "results.parquet")
    res = analyze_metric(load_results(tmp_path), "fid", n_boot=100, seed=0)
    assert res.noisy
    cross = res.crossing()
    assert len(cross) == 6
    assert (cross["high"] > cross["low"]).all()
    assert ((cross["low"] <= cross["crossover_cost"]) & (cross["crossover_cost"] <= cross["high"])).all()
