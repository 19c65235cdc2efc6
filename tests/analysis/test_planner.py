"""The planner's ranking on a synthetic study with a known law."""

import numpy as np
import pandas as pd
import pytest

from analysis.planner import cell_weights, design_interval, noise_parts, plan, target_values, width_flops
from analysis.predict import fit_joint
from analysis.table import normalize

SIZES = pd.DataFrame({"width": [8, 16, 24, 32, 48], "params": [0.5e6, 1.7e6, 3.7e6, 6.3e6, 13.9e6],
                      "normalized_cost": [0.11, 0.3, 0.6, 1.0, 2.2]}).assign(gflops=lambda d: 0.1 * d.normalized_cost)


def law(n, s):
    return 2.0 + 30.0 * (np.asarray(n) / 1e6) ** -0.5 + 20.0 * np.asarray(s, float) ** -1.0


@pytest.fixture(scope="module")
def fit():
    rng = np.random.default_rng(0)
    rows = [dict(width=r.width, params=r.params, normalized_cost=r.normalized_cost, train_images=32000,
                 train_flops=1.0, sampler="ddim", steps=s, guidance=2.0, seed=0, sampling_cost=r.normalized_cost * s,
                 fid=law(r.params, s) * np.exp(rng.normal(0, 0.02)))
            for r in SIZES[SIZES.width.isin([8, 16, 24])].itertuples() for s in (2, 4, 8, 16)]
    return fit_joint(normalize(pd.DataFrame(rows), "synthetic"), "ddim", n_boot=30)


def test_the_size_exponent_is_best_pinned_by_the_widest_extrapolation(fit):
    ranking = plan(fit, "alpha", SIZES, num_samples=250)
    new = ranking[ranking.kind == "new_width"].set_index("width")
    # A width far from the trained ones constrains the exponent most; a closer one less.
    assert new.loc[48, "interval_after"] < new.loc[32, "interval_after"] < ranking["interval_now"].iloc[0]
    assert (ranking["shrinkage"] >= 0).all() and ranking["shrinkage_per_pflop"].is_monotonic_decreasing


def test_the_delta_method_interval_is_of_the_bootstrap_s_order(fit):
    ranking = plan(fit, "beta", SIZES, num_samples=250)
    v = target_values(fit, "beta", SIZES)
    boot = np.subtract(*np.percentile(v, [97.5, 2.5]))
    assert 0.33 < ranking["interval_now"].iloc[0] / boot < 3.0


def test_unknown_targets_and_widths_are_named(fit):
    with pytest.raises(ValueError, match="unknown target"):
        plan(fit, "gamma", SIZES, 250)
    with pytest.raises(ValueError, match="width 7 is not in the ladder"):
        plan(fit, "fid:7@4", SIZES, 250)


def test_a_crossover_the_law_does_not_predict_is_refused_naming_the_alternatives(fit):
    # Under this law the 0.5M model never catches the 1.7M one within 16 steps: no crossing, no interval.
    with pytest.raises(ValueError, match="no crossing of these two widths within the evaluated steps .*fid:WIDTH@STEPS"):
        plan(fit, "crossover:8-16", SIZES, 250)
    ranking = plan(fit, "crossover:16-24", SIZES, 250)  # one it does predict: ranked, with a finite interval
    assert np.isfinite(ranking["interval_now"]).all() and (ranking["shrinkage"] >= 0).all()


# --- Following the planner on a synthetic study (issue 17's validation) -------------------------------
# A known law, 6 widths of a ladder whose FLOPs (and params) grow as width^2, 4 step counts, 2 % log-normal
# evaluation noise at the base sample count (falling as 1 / sqrt(samples)). The study starts from the 3
# cheapest widths, then does the planner's top choice again and again, drawing each chosen run's cells from
# the TRUE law. Precision is the delta-method 95 % interval at the TRUE law and noise (design_interval), a
# property of the design alone, so the comparison with the full grid is not won or lost on one noise draw;
# the test checks that measure against refits on fresh noise.
TRUE = {"E": 2.0, "A": 30.0, "alpha": 0.5, "B": 20.0, "beta": 1.0}
LADDER = pd.DataFrame({"width": [8, 16, 24, 32, 40, 48]}).assign(
    normalized_cost=lambda d: (d.width / 32) ** 2, params=lambda d: 6.3e6 * (d.width / 32) ** 2,
    gflops=lambda d: 0.1 * (d.width / 32) ** 2)
STEPS, IMAGES, BASE, NOISE = (2, 4, 8, 16), 32000, 250, 0.02


def evaluate(rng, width, seed=0, mult=1):
    """One seed of a width evaluated at mult x the base samples: its cells' rows of the results table."""
    r = LADDER[LADDER.width == width].iloc[0]
    true = 2.0 + 30.0 * (r.params / 1e6) ** -0.5 + 20.0 / np.array(STEPS, float)
    sd = NOISE / np.sqrt(mult)
    return pd.DataFrame({"width": width, "params": r.params, "normalized_cost": r.normalized_cost,
                         "train_images": IMAGES, "train_flops": 1.0, "sampler": "ddim", "guidance": 1.0,
                         "seed": seed, "steps": STEPS, "num_samples": BASE * mult,
                         "fid": true * np.exp(rng.normal(0, sd, len(STEPS))), "fid_std": true * sd})


def fit_of(table):
    return fit_joint(normalize(table, "synthetic"), "ddim", n_boot=0)  # the planner needs no bootstrap


def true_interval(fit, target):
    """The design's 95 % interval at the true law (in the fit's centring) and the true noise."""
    n0, s0 = fit.scale["N0"], fit.scale["s0"]
    theta = [np.log(TRUE["E"]), np.log(TRUE["A"]) - TRUE["alpha"] * np.log(n0 / 1e6), TRUE["alpha"],
             np.log(TRUE["B"]) - TRUE["beta"] * np.log(s0), TRUE["beta"]]
    return design_interval(fit, target, LADDER, theta=np.array(theta),
                           variances=NOISE ** 2 / cell_weights(fit.points, BASE))


def run_flops(width):
    return sum(width_flops(LADDER, width, IMAGES, BASE, STEPS))


def follow_planner(target, start, rng, max_runs=20):
    """(goal, share of the full grid's FLOPs spent when the goal was reached or given up, the final table)."""
    full_cost = sum(run_flops(w) for w in LADDER.width)
    goal = true_interval(fit_of(pd.concat([evaluate(rng, w) for w in LADDER.width])), target)
    runs = {(w, 0): 1 for w in start}  # (width, seed) -> sample multiple
    table, spent = pd.concat([evaluate(rng, w) for w in start]), sum(run_flops(w) for w in start)
    for _ in range(max_runs):
        if true_interval(fit_of(table), target) <= goal or spent > full_cost:
            break
        top = plan(fit_of(table), target, LADDER, BASE).iloc[0]
        w = int(top.width)
        if top.kind in ("new_width", "seed"):  # a new training run, evaluated at the base samples
            s = sum(key[0] == w for key in runs)
            runs[w, s] = 1
            table = pd.concat([table, evaluate(rng, w, s)])
        else:  # more samples: every seed of the width re-evaluated at 4x its samples, its old rows replaced
            assert top.kind == "more_samples", top.kind  # one budget: the law has no budget term to value
            runs.update({key: 4 * m for key, m in runs.items() if key[0] == w})
            table = pd.concat([table[table.width != w]] +
                              [evaluate(rng, w, s, m) for (v, s), m in runs.items() if v == w])
        spent += top.flops
    return goal, spent / full_cost, table


def test_following_the_planner_reaches_the_full_grid_s_alpha_with_under_half_its_compute():
    """Target alpha, the size exponent: what the full grid's widths are there to measure, and the quantity
    the planner cannot cheapen by a trick of the target (a point prediction at a trained size would be
    pinned by sampling that size alone). Measured (3 starting widths, 2 % noise, all of it evaluation
    noise): the planner takes 4x samples of the widths it has, twice for the two smallest (8 x16, 16 x16,
    24 x4), and reaches the full grid's interval (0.070) at 0.066 with 30.5 % of the full grid's FLOPs, the
    same in every noise draw tried (6). Refits on 200 fresh noise draws give 95 % widths of 0.065 (that
    design) and 0.072 (full grid), agreeing with the delta method (0.066, 0.070).
    Where the claim does NOT hold (measured with this file's simulation, not asserted here):
    - the FID of the largest width (fid:48@16): 82-102 % of the full grid's FLOPs (3 draws), as it must
      train that width;
    - from 2 starting widths: the delta method says 0.044 where refits give 0.46 (alpha is not identified
      by two sizes), so the planner stops far too early; start from 3;
    - when part of the noise is training-seed noise that more samples do not remove (fid_std carrying only
      the evaluation part): with a quarter of the variance from seeds, 53-95 % (4 draws); with half,
      50-99 % (4 draws). There even the cheapest of the simple designs (3-4 widths, 1-2 seeds, 1x or 4x
      samples) that reaches the full grid's interval costs 50.5 %: half is out of reach, and the greedy
      path, steered by a noisy split of 12 residuals into seed and evaluation noise, overshoots it."""
    rng = np.random.default_rng(0)
    goal, share, table = follow_planner("alpha", [8, 16, 24], rng)
    final = fit_of(table)
    assert true_interval(final, "alpha") <= goal
    assert share <= 0.5
    # The design's precision, checked against refits of it on fresh noise (the delta method is a
    # linearisation): the spread of alpha over 40 refits, as a 95 % width, within a factor of it.
    runs = table[["width", "seed", "num_samples"]].drop_duplicates()
    design = {(w, s): m for w, s, m in runs.itertuples(index=False)}
    alphas = [fit_of(pd.concat([evaluate(rng, w, s, m // BASE) for (w, s), m in design.items()])).theta[2]
              for _ in range(40)]
    assert 0.7 < 3.92 * np.std(alphas) / true_interval(final, "alpha") < 1.4


def test_the_planner_counts_the_samples_and_seeds_already_behind_a_width():
    """A width evaluated at 4x the samples, or averaged over 2 seeds, weighs 4 or 2 base evaluations: a
    further 4x costs 4x as much and is valued from there (the flaw of planning from unweighted points)."""
    rng = np.random.default_rng(1)
    table = pd.concat([evaluate(rng, 8, 0, 1), evaluate(rng, 8, 1, 1), evaluate(rng, 16, 0, 4), evaluate(rng, 24)])
    fit = fit_of(table)
    w = pd.Series(cell_weights(fit.points, BASE), index=fit.points["width"]).groupby(level=0).mean()
    assert w.to_dict() == {8: 2.0, 16: 4.0, 24: 1.0}
    more = plan(fit, "alpha", LADDER, BASE).query("kind == 'more_samples'").set_index("width")["flops"]
    _, ev16 = width_flops(LADDER, 16, IMAGES, BASE, STEPS)
    assert more[16] == pytest.approx(3 * 4 * ev16)
    again = fit_of(pd.concat([table[table.width != 16], evaluate(rng, 16, 0, 16)]))
    before = plan(fit, "alpha", LADDER, BASE).query("kind == 'more_samples' and width == 16").iloc[0]
    after = plan(again, "alpha", LADDER, BASE).query("kind == 'more_samples' and width == 16").iloc[0]
    assert after["shrinkage_per_pflop"] < before["shrinkage_per_pflop"]  # diminishing returns are seen


def test_more_samples_are_worth_nothing_against_training_seed_noise():
    """The same scatter, once reported by the evaluator as its own noise (fid_std) and once not (the cells'
    evaluation noise tiny, so the scatter is seed noise): only the first makes more samples worth buying."""
    rng = np.random.default_rng(2)
    table = pd.concat([evaluate(rng, w) for w in (8, 16, 24)])
    evaluation = plan(fit_of(table), "alpha", LADDER, BASE).query("kind == 'more_samples'")
    seeds = fit_of(table.assign(fid_std=table["fid_std"] / 100))
    seed_var, _ = noise_parts(seeds, BASE)
    assert seed_var == pytest.approx(np.mean(seeds.residuals ** 2), rel=0.01)
    from_seeds = plan(seeds, "alpha", LADDER, BASE).query("kind == 'more_samples'")
    assert (evaluation["shrinkage"] > 0).all()
    assert (from_seeds["shrinkage"] < 0.01 * evaluation["shrinkage"].max()).all()


def test_the_gap_target_is_the_law_s_fid_difference_and_narrows_with_a_seed_of_either_width(fit):
    # gap:8-24@4 is FID(width 8, 4 steps) - FID(width 24, 4 steps) under the law at every draw.
    gap = target_values(fit, "gap:8-24@4", SIZES)
    diff = target_values(fit, "fid:8@4", SIZES) - target_values(fit, "fid:24@4", SIZES)
    np.testing.assert_allclose(gap, diff, rtol=1e-9)
    assert np.median(gap) > 0  # the law's smaller model is worse at 4 steps
    ranking = plan(fit, "gap:8-24@4", SIZES, 250)
    seeds = ranking[ranking.kind == "seed"].set_index("width")
    assert (seeds.loc[[8, 24], "interval_after"] < ranking["interval_now"].iloc[0]).all()
    with pytest.raises(ValueError, match="gap:W1-W2@STEPS"):
        plan(fit, "gap:8-24", SIZES, 250)
