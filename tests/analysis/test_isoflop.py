"""IsoFLOP profiles (analysis.isoflop) on synthetic Chinchilla-form tables with a known compute-optimal size:
the intervals cover it, the law's exponent is recovered, and tables that cannot support a profile say why."""

import numpy as np
import pandas as pd
import pytest

from analysis.isoflop import isoflop

E, A, B, ALPHA, BETA = 1.0, 400.0, 2000.0, 0.34, 0.34
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))  # Chinchilla eq. 4 with C = 6 N D


def table(rng, sigma: float, sizes=np.geomspace(1e6, 1e9, 8)) -> pd.DataFrame:
    rows = []
    for n in sizes:
        for d in np.geomspace(1e6, 1e10, 12):
            rows.append({"params": n, "train_images": d, "train_flops": 6 * n * d, "std": sigma,
                         "fid": E + A * n ** -ALPHA + B * d ** -BETA + rng.normal(0, sigma)})
    return pd.DataFrame(rows)


def true_n_opt(compute):
    return G * (np.asarray(compute) / 6) ** (BETA / (ALPHA + BETA))


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_intervals_cover_the_true_optimum_and_exponent(sigma):
    level_hits, exp_hits, top_hits = [], [], []
    for r in range(20):
        t = table(np.random.default_rng(r), sigma)
        res = isoflop(t, n_boot=60, seed=r)
        lv = res["levels"][res["levels"]["inside_sizes"]]
        truth = true_n_opt(lv["compute"])
        level_hits += list((lv["low"] <= truth) & (truth <= lv["high"]))
        a = res["law"]["a"]
        exp_hits.append(a["low"] <= BETA / (ALPHA + BETA) <= a["high"])
        # The law's compute-optimal size at the table's largest compute (the number set beside the joint law's).
        top = res["law"]["derived"]["n_opt_at_max_compute"]
        top_hits.append(top["low"] <= true_n_opt(t["train_flops"].max()) <= top["high"])
    cover = np.mean(level_hits), np.mean(exp_hits), np.mean(top_hits)
    assert min(cover) >= 0.85, cover


def test_a_minimum_beyond_the_trained_sizes_is_flagged_and_left_out_of_the_law():
    # Sizes far below the optimum at every level: each profile falls to its largest size.
    res = isoflop(table(np.random.default_rng(0), 0.01, sizes=np.geomspace(1e2, 1e3, 4)), n_boot=20)
    assert not res["levels"]["inside_sizes"].any()
    assert res["law"]["skipped"] and "inside the trained sizes" in res["law"]["reason"]


def test_curves_that_do_not_overlap_say_why():
    t = table(np.random.default_rng(0), 0.01)
    t = t[t["params"] < 3e6]  # two sizes
    res = isoflop(t, n_boot=10)
    assert res["skipped"] and "fewer than 3 sizes share a range" in res["reason"]
