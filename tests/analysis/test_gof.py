"""Goodness of fit (analysis/gof.py): a law with noise passes at about the test's level; a step, a U-shape
and one outlier are flagged; a law that does not fit is neither drawn nor quoted."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import bootstrap_fit
from analysis.export import fits_table
from analysis.figures import new_figure
from analysis.findings import training_findings
from analysis.frontier import pareto_mask
from analysis.gof import DOES_NOT_FIT, LEVEL, NO, UNTESTED, YES, point_noise
from analysis.laws import get_law
from analysis.plot_training import draw_training
from analysis.readable import prediction_table
from analysis.training import fit_training

POWER = get_law("power")
IMAGES = np.array([1024, 2048, 4096, 8192])


def _test(y, sd, x=None, labels=None) -> dict:
    x = np.geomspace(1e15, 1e18, len(y)) if x is None else x
    return bootstrap_fit(POWER, [x], np.asarray(y, float), n_boot=0, sd=np.asarray(sd, float), labels=labels)["gof"]


def test_a_power_law_with_its_noise_fits_at_about_the_level():
    # 150 seeded replicates of E + A x^-alpha with 5 % noise, 6 points: the false "does not fit" rate stays
    # at most the level (Bonferroni over chi-square and leave-one-out: about 2-3 % measured, never above 5 %
    # beyond the binomial spread of 150 draws, sd 1.8 %).
    rng = np.random.default_rng(7)
    x = np.geomspace(1e15, 1e18, 6)
    true = 5.0 + 30.0 * (x / 1e15) ** -0.5
    verdicts = [_test(true + rng.normal(0, 0.05 * true), 0.05 * true, x)["fits"] for _ in range(150)]
    rate = np.mean([v == NO for v in verdicts])
    assert set(verdicts) <= {YES, NO}
    assert 0.0 < rate <= LEVEL + 0.04, rate


def test_the_issue_s_flat_then_falling_checkpoints_do_not_fit():
    # The embedded study's 3.67M model: FID 11.2, 14.2, 11.0, 2.66 (+- 0.5) at 1K-8K images; a power law
    # sits near 10.7 across them, 8 above the last point.
    labels = [f"3.67M at {d:,} images" for d in IMAGES]
    g = _test([11.2, 14.2, 11.0, 2.66], [0.5] * 4, labels=labels)
    assert g["fits"] == NO and g["gof_p"] < 1e-6 and g["gof_statistic"] > 10
    assert g["worst"].startswith("3.67M at 8,192 images: 2.66 against the law's")


def test_a_step_a_u_shape_and_one_outlier_are_flagged():
    x = np.geomspace(1e15, 1e18, 8)
    step = np.where(np.arange(8) < 4, 20.0, 10.0)
    u = 10.0 + 3.0 * (np.log10(x) - 16.5) ** 2
    smooth = 5.0 + 30.0 * (x / 1e15) ** -0.5
    outlier = smooth.copy()
    outlier[5] += 10 * 0.02 * smooth[5]
    for name, y in (("step", step), ("U", u), ("outlier", outlier)):
        g = _test(y, 0.02 * y, x, labels=[f"p{i}" for i in range(8)])
        assert g["fits"] == NO, (name, g)
    assert _test(outlier, 0.02 * outlier, x, labels=[f"p{i}" for i in range(8)])["worst"].startswith("p5:")
    assert _test(smooth, 0.02 * smooth, x)["fits"] == YES  # the same law without the outlier, exact


def test_a_point_the_fit_bends_to_is_named_by_its_distance_from_the_law_fitted_without_it():
    # The last of 5 points 40 % low: the full fit passes through it (a residual of ~0 sds), so the reason names
    # how far it lies from the law the other points give (it read "0.0 times its noise sd" before).
    x = np.geomspace(1e15, 1e18, 5)
    y = 5.0 + 30.0 * (x / 1e15) ** -0.5
    y[-1] *= 0.6
    g = _test(y, 0.02 * y, x, labels=[f"p{i}" for i in range(5)])
    assert g["fits"] == NO and g["worst"].startswith("p4: 3.57")
    sds = float(re.search(r"([0-9.]+) sds \(its noise and the fit's\) from the law fitted without it", g["worst"])[1])
    assert sds > 5 and abs(g["worst_z"]) == pytest.approx(sds, abs=0.05)


def test_untested_without_noise_or_degrees_of_freedom():
    assert _test([10, 8, 7, 6.5], [np.nan] * 4)["fits"] == UNTESTED
    assert "no degree of freedom" in _test([10, 8, 7], [0.1] * 3)["reason"]


def test_point_noise_adds_the_training_seed_spread_beyond_evaluation_noise():
    one = pd.DataFrame({"std": [0.5, 0.5], "n_seeds": [1, 1], "seed_sd": [np.nan, np.nan]})
    assert np.allclose(point_noise(one), 0.5)
    # Two seeds, each evaluation sd 0.5 (the mean's std 0.5 / sqrt 2), seeds 2.0 apart: seed variance
    # 4 - 0.25 per run, over 2 seeds, added to the mean's evaluation variance.
    two = pd.DataFrame({"std": [0.5 / np.sqrt(2)] * 2, "n_seeds": [2, 2], "seed_sd": [2.0, 2.0]})
    assert np.allclose(point_noise(two), np.sqrt(0.125 + (4.0 - 0.25) / 2))


def _points(curves: dict[float, list[float]]) -> pd.DataFrame:
    rows = [{"width": int(p / 1e5), "params": p, "train_images": d, "train_flops": 3 * p * 50 * d, "fid": f,
             "std": 0.5, "n_seeds": 1, "seed_sd": np.nan} for p, fids in curves.items() for d, f in zip(IMAGES, fids)]
    pts = pd.DataFrame(rows)
    return pts.assign(envelope=pareto_mask(pts["train_flops"].values, pts["fid"].values, lower_is_better=True))


def test_a_table_whose_per_size_laws_do_not_fit_draws_no_law_and_quotes_none():
    # Every size: no progress over the first checkpoints, then a drop (a short constant-rate run).
    pts = _points({0.515e6: [20.1, 22.0, 19.8, 9.0], 1.7e6: [15.2, 17.9, 15.0, 5.1],
                   3.67e6: [11.2, 14.2, 11.0, 2.66]})
    fits = fit_training(pts, n_boot=20)
    assert all(f["gof"]["fits"] == NO for f in fits["per_size"].values())
    fig, (ax,) = new_figure(1)
    laws = draw_training(ax, pts, fits)
    assert not [s for s in laws["drawn"] if s != "envelope"]
    assert laws["not_fit"][:3] == ["0.515M", "1.7M", "3.67M"]
    # Only marker lines remain (errorbar points, the squares) besides an envelope law that fits; the legend
    # says why the per-size curves are missing.
    assert all(line.get_linestyle() == "None" or line.get_label().startswith("envelope fit")
               for line in ax.get_lines() if len(line.get_xdata()))
    assert any(DOES_NOT_FIT.split(" these")[0] in t.get_label() or "does not fit" in t.get_label()
               for t in ax.get_lines())
    table = fits_table(fits)
    per_size = table[table["fit"].str.startswith("power/")]
    assert (per_size["fits"] == NO).all() and (per_size["gof_p"] < LEVEL).all()
    assert per_size["note"].str.startswith(DOES_NOT_FIT).all()
    numbers = prediction_table(fits)
    quoted = numbers[numbers["fit"].str.startswith("power/")]
    assert len(quoted) and quoted["value"].isna().all() and quoted["note"].str.contains("worst residual").all()
    text = [t for t in training_findings(fits) if t.startswith("per-size fit")]
    # No parameter of a law that does not fit is quoted (its test's own p = ... is).
    assert text and all(DOES_NOT_FIT in t and not re.search(r"\b(E|A|alpha) = ", t) for t in text)


def test_a_table_whose_laws_fit_draws_them():
    true = {p: list(3.0 + 12.0 * (IMAGES / 1024) ** -0.5 * (1e6 / p) ** 0.2) for p in (0.515e6, 1.7e6, 3.67e6)}
    rng = np.random.default_rng(3)
    pts = _points({p: list(np.array(f) + rng.normal(0, 0.1, 4)) for p, f in true.items()})
    pts["std"] = 0.1
    fits = fit_training(pts, n_boot=20)
    fig, (ax,) = new_figure(1)
    laws = draw_training(ax, pts, fits)
    fitting = [f for f in fits["per_size"].values() if f["gof"]["fits"] == YES]
    assert len(fitting) >= 2 and len([s for s in laws["drawn"] if s != "envelope"]) == len(fitting)


def test_the_joint_law_refuses_to_predict_when_it_does_not_fit():
    from analysis.predict import fit_joint, require_fit
    from analysis.synthetic import SyntheticSpec, make_results
    from analysis.table import normalize

    spec = SyntheticSpec(train_images=(16e6,), steps=(4, 8, 16, 32, 64), guidances=(3.0,), fid_std=0.1)
    table = normalize(make_results(spec, seed=0))
    # One size's cells at 8 steps ruined: a bad evaluation the law cannot follow.
    hit = (table["width"] == spec.widths[1]) & (table["steps"] == 8)
    table.loc[hit, "fid"] = table.loc[hit, "fid"] * 1.6
    fit = fit_joint(table, "ddim", n_boot=0)
    with pytest.raises(ValueError, match="the law does not fit these points .*worst residual: 142M at 8 steps"):
        require_fit(fit)


def test_sizes_that_tie_at_the_largest_budget_leave_the_size_exponent_open_and_the_numbers_say_why():
    """The demo's case (issue 34): every size near the same FID at the last budget. The joint law's size exponent
    runs to its bound, and the Numbers table gives the points' own reason beside "not determined"."""
    from analysis.training import size_tie_evidence

    rng = np.random.default_rng(0)
    falling = lambda a: list(1.8 + a * (IMAGES / 1024) ** -1.2 + rng.normal(0, 0.05, 4))  # noqa: E731
    pts = _points({1.7e6: falling(9.0), 3.67e6: falling(8.0), 6.3e6: falling(8.5)})
    pts["std"] = 0.3
    pts = pts.assign(noise=point_noise(pts))
    text = size_tie_evidence(pts)
    assert text.startswith("at 8,192 training images FID is 1.7M") and "does not beat the smallest beyond noise" in text
    fits = fit_training(pts, n_boot=20)
    assert "alpha" in fits["chinchilla"]["at_bound"] and fits["chinchilla"]["evidence"]["alpha"] == text
    row = prediction_table(fits).set_index(["fit", "quantity"]).loc[("chinchilla", "alpha")]
    assert not row["determined"] and text in row["note"] and row["note"].startswith("not determined")
    # Separated sizes say so instead
    apart = pts.copy()
    apart.loc[apart["params"] == 6.3e6, "fid"] -= 1.5
    assert "the largest beats the smallest by" in size_tie_evidence(apart)


def test_a_model_size_whose_interval_reaches_zero_is_not_determined():
    from analysis.readable import undetermined

    fit = {"params": {}, "derived": {"n_opt_at_max_compute": {"value": 2.16e6, "low": 0.0, "high": 4.47e6},
                                     "n_opt_exponent": {"value": 0.2, "low": 0.0, "high": 0.4}}}
    flags = undetermined(fit)
    assert "reaches 0" in flags["n_opt_at_max_compute"] and "n_opt_exponent" not in flags


def test_an_exponent_interval_on_a_search_bound_is_said():
    """An exponent searched in [0, 5]: an interval reaching 0 leaves it undetermined (it may not fall at all); one
    whose upper end is the bound 5 keeps its value with the bound named beside it, in the report's text too."""
    from analysis.readable import number_row, undetermined
    from analysis.report import number_text

    gof = {"statistic": 1.0, "dof": 4, "p": 0.9, "fits": True}
    fit = {"law": "chinchilla", "gof": gof,
           "params": {"alpha": {"value": 2.7, "low": 1.7, "high": 5.0}, "beta": {"value": 0.8, "low": 0.0, "high": 4.9},
                      "E": {"value": 2.0, "low": 1.0, "high": 3.0}}, "derived": {}}
    flags = undetermined(fit)
    assert "reaches 0" in flags["beta"] and "alpha" not in flags
    row = number_row("chinchilla", "size exponent", "", "alpha", fit, flags)
    assert row["determined"] and row["high"] == 5.0 and "upper end is the search bound (5)" in row["note"]
    assert number_text(row).startswith("2.7 [1.7, 5] (the interval's upper end is the search bound (5)")
    inside = {**fit, "params": {**fit["params"], "alpha": {"value": 2.7, "low": 1.7, "high": 4.2}}}
    assert number_row("chinchilla", "size exponent", "", "alpha", inside, undetermined(inside))["note"] == ""
    # the floor E is fitted in log space: its bounds are not its own, so no note
    assert number_row("chinchilla", "floor", "", "E", fit, flags)["note"] == ""
