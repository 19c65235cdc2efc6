"""The crossing test: its false-crossing rate on ties and near-misses, its power against the end-gap
intersection-union test, double crossings, and the pieces (windows, chain, location).

Seeded replications (they do not flake); bounds sit well away from what a correct test gives
(benchmarks/crossing_power.py measures the full tables, docs/benchmarks.md records them) and
close to what a broken one would: a test at level 10 % would give ~10 of 100 false crossings.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.crossing_test import chain, end_gap_test, locate, sign_test, windows
from analysis.inference import analyze_metric
from analysis.synthetic import (FAMILY_CROSSINGS, LADDER_CROSSINGS, NEAR_MISSES, FamilySpec,
                                LadderSpec, family_table, ladder_table, pair_results)
from analysis.table import normalize

BOOT = 200


def test_pair_results_are_the_analysis_own_pair_rows():
    # The benchmark reads its thousands of tables through pair_results: it must be what `study
    # analyze` computes, number for number, not a look-alike.
    for t, spec in enumerate([FamilySpec(kind="plateau", fid_std=0.3),
                              FamilySpec(kind="twice", fid_std=0.0, seeds=(0, 1, 2), seed_sd=0.3)]):
        fast = pair_results(family_table(spec, seed=t), np.random.default_rng(t), BOOT)[(64, 128)]
        row = analyze_metric(normalize(family_table(spec, seed=t)), "fid", n_boot=BOOT, seed=t).pairs.iloc[0]
        assert fast["verdict"] == row.verdict and fast["p_cross"] == row.p_cross
        assert [fast["gaps"][0]["low"], fast["gaps"][1]["high"]] == [row.at_low_gap_low, row.at_high_gap_high]
        ends = [int(row.at_low_gap_low > 0) - int(row.at_low_gap_high < 0),
                int(row.at_high_gap_low > 0) - int(row.at_high_gap_high < 0)]
        assert end_gap_test(fast["gaps"]) == (ends[0] * ends[1] < 0)


@pytest.mark.parametrize("kind", ["edge", "plateau", "touch", "tied"])
def test_false_crossings_on_near_misses_stay_under_the_level(kind):
    # edge and plateau put the gap at zero over the end or the upper stretch: the least favourable
    # cases, where the test runs near its nominal 3.5 % (3.1-3.3 % on 800 tables, docs/benchmarks.md).
    rng = np.random.default_rng(11)
    reps, false = 100, 0
    for r in range(reps):
        table = family_table(FamilySpec(kind=kind, fid_std=0.3), seed=1000 + r)
        false += pair_results(table, rng)[(64, 128)]["verdict"] == "crossing"
    assert false <= 7, false  # 7 of 100: a level-5 % test exceeds it with probability 0.23


@pytest.mark.parametrize("kind", NEAR_MISSES)
@pytest.mark.parametrize("fid_std, seeds, seed_sd", [(0.3, (0,), 0.0), (1.0, (0, 1, 2), 0.0),
                                                     (0.0, (0, 1, 2), 0.3)])
def test_ties_and_near_misses_never_cross_in_these_seeds(kind, fid_std, seeds, seed_sd):
    spec = FamilySpec(kind=kind, fid_std=fid_std, seeds=seeds, seed_sd=seed_sd)
    for t in range(3):
        res = analyze_metric(normalize(family_table(spec, seed=t)), "fid", n_boot=BOOT, seed=t)
        assert res.pairs.iloc[0]["verdict"] != "crossing", (kind, t)
        assert res.crossing_lists[0] == []


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_power_at_least_the_end_gap_test(seeds):
    # The ladder at sigma 1: the test finds every crossing the end-gap test finds (but for
    # one, allowed: the slack for interpolation error can hold one back), and more in all.
    rng = np.random.default_rng(5)
    found, iut = dict.fromkeys(LADDER_CROSSINGS, 0), dict.fromkeys(LADDER_CROSSINGS, 0)
    covered = []
    for t in range(30):
        for key, res in pair_results(ladder_table(LadderSpec(fid_std=1.0, seeds=seeds), seed=t), rng).items():
            found[key] += res["verdict"] == "crossing"
            iut[key] += end_gap_test(res["gaps"])
            if res["verdict"] == "crossing":
                covered.append(res["low"] <= LADDER_CROSSINGS[key] <= res["high"])
    assert all(found[k] >= iut[k] - 1 for k in found), (found, iut)
    assert sum(found.values()) > sum(iut.values()), (found, iut)
    assert np.mean(covered) >= 0.85, np.mean(covered)


def test_double_crossing_found_listed_and_located():
    # The end-gap test cannot see it (both ends favour the smaller size); the inner windows do.
    rng = np.random.default_rng(2)
    truth = FAMILY_CROSSINGS["twice"]
    both, covered = 0, []
    for t in range(30):
        res = pair_results(family_table(FamilySpec(kind="twice", fid_std=0.3), seed=t), rng)[(64, 128)]
        assert not end_gap_test(res["gaps"])
        if res["n_crossings"] == 2:
            both += 1
            covered += [x["low"] <= c <= x["high"] for x, c in zip(res["crossing_list"], truth)]
        assert res["n_crossings"] in (0, 2)  # never one crossing of a curve pair that crosses twice
    assert both >= 25, both  # measured 96 % in the prototype
    assert np.mean(covered) >= 0.85, np.mean(covered)


def test_windows_cover_the_overlap_disjoint_at_the_middle():
    start, stop = windows(257)
    cover = np.zeros(257, int)
    for a, b in zip(start, stop):
        cover[a:b] += 1
    assert (cover > 0).all()
    halves = [(a, b) for a, b in zip(start, stop) if b - a == 128]
    assert halves == [(0, 128), (129, 257)]  # the two half-overlap windows do not touch


def test_chain_alternates_over_disjoint_windows():
    start, stop = np.array([0, 2, 5, 8, 3]), np.array([2, 4, 7, 10, 9])
    pos, neg = np.array([1, 0, 1, 0, 0], bool), np.array([0, 1, 0, 1, 1], bool)
    assert chain(pos, neg, start, stop) == [(0, 2, 1), (2, 4, -1), (5, 7, 1), (8, 10, -1)]
    assert chain(pos, np.zeros(5, bool), start, stop) == [(0, 2, 1)]  # one sign: no crossing


def test_locate_finds_the_sign_change_that_splits_best():
    gap = np.array([3.0, 2.0, -0.1, 0.2, 1.0, -2.0, -3.0, -1.0])
    # A noisy dip at index 2 is outweighed: the split is after index 4 (1.0 -> -2.0).
    assert locate(gap, 0, gap.size, 1) == 4
    assert locate(-gap, 0, gap.size, -1) == 4


def test_a_tie_finds_nothing_and_a_clear_gap_crosses_once():
    grid = np.linspace(0.0, 3.0, 257)
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, (BOOT, 1)) + rng.normal(0.0, 0.1, (BOOT, 257))
    tie = sign_test(np.zeros(257), noise, np.zeros(257))
    assert not tie["found"] and tie["chain"] == [] and tie["replicated"] < 0.05
    cross = sign_test(1.5 - grid, (1.5 - grid) + noise, np.zeros(257))
    assert [s for *_, s in cross["chain"]] == [1, -1] and cross["replicated"] > 0.9
    # The same gap within its slack (interpolation error): no window finds it; the two ends, read as
    # the end-gap test reads them (one curve sits on its own point there), still do.
    assert sign_test(1.5 - grid, (1.5 - grid) + noise, np.full(257, 2.0))["chain"] == [(0, 1, 1), (256, 257, -1)]
