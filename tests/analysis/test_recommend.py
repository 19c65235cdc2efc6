"""The inference-aware recommendation on a synthetic study with a known law of size, steps and budget."""

import numpy as np
import pandas as pd
import pytest

from analysis.predict import fit_joint
from analysis.recommend import recommend
from analysis.table import normalize

SIZES = pd.DataFrame({"width": [8, 16, 24, 32], "params": [0.5e6, 1.7e6, 3.7e6, 6.3e6],
                      "normalized_cost": [0.11, 0.3, 0.6, 1.0], "gflops": [0.011, 0.03, 0.06, 0.1]})
BUDGETS = (4000, 8000, 16000, 32000)


def law(n, s, d):
    return 1.0 + 15.0 * (n / 1e6) ** -0.5 + 20.0 * np.asarray(s, float) ** -1.0 + 20.0 * (d / 1e4) ** -0.6


def study(noise=0.01, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in SIZES.itertuples():
        for d in BUDGETS:
            for s in ((2, 4, 8, 16) if d == BUDGETS[-1] else (8,)):  # the full grid at the final budget only
                rows.append(dict(width=r.width, params=r.params, normalized_cost=r.normalized_cost, train_images=d,
                                 train_flops=3 * r.gflops * 1e9 * d, sampler="ddim", steps=s, guidance=2.0, seed=0,
                                 sampling_cost=r.normalized_cost * s,
                                 fid=law(r.params, s, d) * np.exp(rng.normal(0, noise))))
    return normalize(pd.DataFrame(rows), "synthetic")


@pytest.fixture(scope="module")
def fit():
    return fit_joint(study(), "ddim", n_boot=40)


def test_the_law_has_a_budget_term_and_finds_its_exponent(fit):
    assert fit.has_budget and fit.theta[6] == pytest.approx(0.6, abs=0.15)


def test_more_images_to_generate_moves_the_choice_to_a_smaller_model(fit):
    few = recommend(fit, SIZES, target_fid=14.0, n_images=0)["choice"]
    many = recommend(fit, SIZES, target_fid=14.0, n_images=1e9)["choice"]
    # With no inference, only training counts; with a billion images, inference dominates and a smaller
    # model (cheaper per call) trained longer wins, as Sardana et al. find for language models.
    assert many["params"] < few["params"] and many["train_images"] > few["train_images"], (few, many)
    assert many["inference_flops"] > many["train_flops"] and few["inference_flops"] == 0
    for choice in (few, many):  # the choice reaches the target under the TRUE law too (the fit is good)
        assert law(choice["params"], choice["steps"], choice["train_images"]) <= 14.0 * 1.05


def test_the_choice_is_the_cheapest_feasible_point(fit):
    res = recommend(fit, SIZES, target_fid=14.0, n_images=1e6, steps=np.arange(1, 33),
                    budgets=np.geomspace(4000, 256000, 25))
    table = res["table"]
    assert res["choice"]["total_flops"] == table["total_flops"].min()
    assert (table["predicted_fid"] <= 14.0).all() and 0 <= res["p_reach"] <= 1


def test_an_unreachable_target_says_so(fit):
    res = recommend(fit, SIZES, target_fid=2.0, n_images=1e6)
    assert res["choice"] is None and "no size of the ladder reaches" in res["message"]
