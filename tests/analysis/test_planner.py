"""The planner's ranking on a synthetic study with a known law."""

import numpy as np
import pandas as pd
import pytest

from analysis.planner import plan, target_values
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
    return fit_joint(normalize(pd.DataFrame(rows), "synthetic"), "ddim", n_boot=60)


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
