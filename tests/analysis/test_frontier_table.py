"""Results table loading (parquet, CSV fallback, errors), cells, frontier and best sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.frontier import best_size_table, pareto_mask, winner_ranges
from analysis.inference import analyze_metric
from analysis.synthetic import FamilySpec, SyntheticSpec, family_table, make_results, write_run
from analysis.table import (cells, curves, load_results, normalize, reference_cell,
                            results_path, size_label)

TINY = SyntheticSpec(train_images=(1e6, 4e6), steps=(4, 10, 50), guidances=(2.0, 6.0),
                     samplers={"ddim": 1.0})


def test_csv_fallback_reads_the_same_table(tmp_path):
    pq, csv = tmp_path / "a", tmp_path / "b"
    write_run(pq, TINY, fmt="parquet")
    write_run(csv, TINY, fmt="csv")
    assert results_path(csv).name == "results.csv"
    a, b = load_results(pq), load_results(csv)
    # Free-text columns (version "0") may come back as numbers from CSV; the analysis'
    # cells are what must agree.
    pd.testing.assert_frame_equal(cells(a, "fid"), cells(b, "fid"), check_dtype=False)
    # Both present: parquet wins.
    write_run(csv, TINY, fmt="parquet")
    assert results_path(csv).name == "results.parquet"


def test_missing_table_and_columns_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no results table.*results.parquet or results.csv"):
        load_results(tmp_path)
    make_results(TINY).drop(columns=["train_flops", "guidance"]).to_csv(
        tmp_path / "results.csv", index=False)
    with pytest.raises(ValueError, match="lacks column.*train_flops, guidance"):
        load_results(tmp_path)


def test_cells_keep_fid_best_guidance_and_mean_over_seeds(tmp_path):
    spec = SyntheticSpec(**{**TINY.__dict__, "seeds": (0, 1), "seed_sd": 0.5})
    write_run(tmp_path, spec)
    df = load_results(tmp_path)
    c = cells(df, "fid")
    assert len(c) == len(df) // len(spec.guidances)
    marked = df[df["best"]].set_index(["width", "seed", "train_images", "sampler", "steps"])
    got = c.set_index(["width", "seed", "train_images", "curve", "steps"])["value"]
    assert np.allclose(got.sort_index().values, marked["fid"].sort_index().values)
    cur = curves(c)
    assert (cur["n_seeds"] == 2).all() and cur["seed_sd"].notna().all()
    assert reference_cell(cur) == ("ddim", 50)


def test_pareto_and_best_size():
    cost = np.array([1.0, 2.0, 3.0, 1.5, 4.0])
    fid = np.array([30.0, 25.0, 26.0, 31.0, 20.0])
    assert pareto_mask(cost, fid, True).tolist() == [True, True, False, False, True]
    assert pareto_mask(cost, -fid, False).tolist() == [True, True, False, False, True]
    curve = pd.DataFrame({"sampling_cost": cost, "value": fid, "width": [1, 1, 2, 2, 3],
                          "params": [10, 10, 20, 20, 30], "steps": [1, 2, 3, 4, 5]})
    table = best_size_table(curve, True)
    assert table["width"].tolist() == [1, 1, 3]
    assert table["tied_widths"].tolist() == ["1", "1", "3"]  # no noise: no ties
    ranges = winner_ranges(table)
    assert [r["width"] for r in ranges] == [1, 3] and ranges[-1]["to_cost"] is None
    assert [r["label"] for r in ranges] == ["1e-05M", "3e-05M"] and not ranges[0]["tied"]


def test_sizes_within_noise_are_one_tied_range_not_a_flip_flop():
    # Two sizes whose point estimates alternate by 0.05 at neighbouring budgets, noise 0.3.
    cost = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 11.0])
    fid = np.array([30.0, 29.95, 29.0, 28.95, 28.0, 27.95, 20.0, 25.0])
    curve = pd.DataFrame({"sampling_cost": cost, "value": fid, "width": [1, 2] * 3 + [3, 1],
                          "params": [1e6, 2e6] * 3 + [3e6, 1e6], "steps": np.arange(8)})
    point = best_size_table(curve, True)
    assert point["width"].tolist()[:6] == [1, 2, 1, 2, 1, 2]  # the flip-flop of the point estimate
    boot = fid + np.random.default_rng(0).normal(0, 0.3, (300, fid.size))
    table = best_size_table(curve, True, boot)
    ranges = winner_ranges(table)
    # At cost 1 only the 1M size is affordable; from 2 the two are one tied range until 3M wins.
    assert [r["label"] for r in ranges] == ["1M", "1M ~ 2M", "3M"]
    assert ranges[1]["tied"] and ranges[1]["widths"] == [1, 2]
    assert ranges[1]["from_cost"] == 2.0 and ranges[1]["to_cost"] == 10.0


def test_tied_family_reads_as_a_tie(tmp_path):
    res = analyze_metric(normalize(family_table(FamilySpec(kind="tied", fid_std=0.3), seed=1)),
                         "fid", n_boot=200)
    labels = {r["label"] for r in winner_ranges(res.best_size)}
    assert "37.5M ~ 142M" in labels
    assert res.frontier["tied_label"].notna().all()  # each frontier point carries its ties


def test_experiment_and_task_columns(tmp_path):
    df = make_results(TINY)
    df.to_parquet(tmp_path / "results.parquet")
    old = load_results(tmp_path)  # written before the columns existed: the base study
    assert set(old["experiment"]) == {"base"} and set(old["task"]) == {"text2image"}
    other = df.assign(experiment="distillation", task="text2image", fid=df["fid"] + 100)
    both = pd.concat([df.assign(experiment="base", task="text2image"), other])
    both.to_parquet(tmp_path / "results.parquet")
    base = load_results(tmp_path)
    assert len(base) == len(df) and (base["fid"] < 100).all()  # only the base rows are analysed
    assert len(load_results(tmp_path, experiment=None)) == 2 * len(df)
    with pytest.raises(ValueError, match="no rows of experiment 'superres'.*base, distillation"):
        load_results(tmp_path, experiment="superres")


def test_corrupt_rows_skipped_with_a_warning_or_refused(tmp_path):
    df = make_results(TINY).astype({"fid": object, "steps": object})
    df.loc[3, "fid"] = "nan-ish"
    df.loc[7, "fid"] = -1.0
    df.to_csv(tmp_path / "results.csv", index=False)
    with pytest.warns(UserWarning, match=r"skipping 2 corrupt row\(s\) \(row 3: fid='nan-ish'; row 7: fid=-1"):
        got = load_results(tmp_path)
    assert len(got) == len(df) - 2 and got["fid"].dtype == float
    df.loc[: len(df) // 2, "steps"] = "four"
    df.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ValueError, match=r"rows are corrupt \(row 0: steps='four'.*repair the table") as err:
        load_results(tmp_path)
    assert "\n" not in str(err.value)


def test_small_model_best_at_low_budget_large_at_high(tmp_path):
    write_run(tmp_path, SyntheticSpec(guidances=(3.0, 6.0)))
    res = analyze_metric(load_results(tmp_path), "fid", n_boot=50)
    best = res.best_size[(res.best_size["budget"] == "final") & (res.best_size["sampler"] == "ddim")]
    assert best["width"].iloc[0] == 64 and best["width"].iloc[-1] == 320
    # Far from a crossover the winner is certain and alone; near one, p_best drops.
    assert best["p_best"].iloc[0] > 0.95 and best["tied_label"].iloc[0] == "37.5M"
    assert best["p_best"].iloc[-1] > 0.95 and best["tied_label"].iloc[-1] == "860M"
    assert best["p_best"].min() < 0.9


def test_no_noise_means_no_interval(tmp_path):
    write_run(tmp_path, SyntheticSpec(fid_std=0.0, guidances=(3.0, 6.0)))
    df = load_results(tmp_path).drop(columns=["fid_std"])
    res = analyze_metric(df, "fid", n_boot=50)
    assert not res.noisy
    cross = res.crossing()
    assert len(cross) and cross["low"].isna().all() and cross["p_cross"].isna().all()


def test_size_labels():
    assert [size_label(p) for p in (145e6, 37.5e6, 3.5e5, 2.18e9, 1.2e6)] == [
        "145M", "37.5M", "0.35M", "2.18B", "1.2M"]
