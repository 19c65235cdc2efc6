"""Each law recovers known parameters from noisy synthetic data, inside its intervals."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bootstrap import bootstrap_fit, interval
from analysis.fitting import FitData, fit_law, huber_objective
from analysis.laws import LAWS, get_law


def _noisy(y: np.ndarray, sd: float, seed: int) -> np.ndarray:
    return y * np.exp(np.random.default_rng(seed).normal(0.0, sd, y.shape))


def _check(out: dict, truth: dict[str, float], rel: float) -> None:
    for name, true in truth.items():
        p = out["params"][name]
        assert p["low"] <= true <= p["high"], (name, true, p)
        assert p["value"] == pytest.approx(true, rel=rel), (name, true, p)


def test_power_recovers_parameters():
    truth = {"E": 2.0, "A": 3.0e5, "alpha": 0.3}
    x = np.geomspace(1e15, 1e20, 30)
    y = _noisy(get_law("power").predict(truth, {"x": x}), 0.01, seed=1)
    out = bootstrap_fit(get_law("power"), [x], y, n_boot=100, seed=0)
    _check(out, truth, rel=0.25)
    assert out["params"]["alpha"]["value"] == pytest.approx(0.3, abs=0.03)
    assert out["bootstrap"]["valid"] == 100
    assert out["at_bound"] == {}  # a well-determined fit is not flagged


def test_a_derived_quantity_undefined_on_some_resamples_is_nan_there_not_a_crash():
    # The embedded study's Chinchilla fit once died here: a resample put B at 0 and N_opt divides by B.
    truth = {"E": 2.0, "A": 3.0e5, "alpha": 0.3}
    x = np.geomspace(1e15, 1e20, 12)
    y = _noisy(get_law("power").predict(truth, {"x": x}), 0.01, seed=5)
    cut = None

    def ratio(p):  # undefined (Python's ZeroDivisionError) on the resamples with alpha below the median
        return 1.0 / (p["alpha"] - p["alpha"]) if p["alpha"] < cut else p["A"] / p["E"]

    cut = bootstrap_fit(get_law("power"), [x], y, n_boot=40, seed=0)["params"]["alpha"]["value"]
    out = bootstrap_fit(get_law("power"), [x], y, n_boot=40, seed=0, derived={"ratio": ratio})
    samples = out["samples"]["ratio"]
    undefined = out["samples"]["alpha"] < cut
    assert undefined.any() and (~undefined).any()
    assert np.isnan(samples[undefined]).all() and np.isfinite(samples[~undefined]).all()
    assert np.isfinite(out["derived"]["ratio"]["low"])  # the interval comes from the finite samples


def test_point_bootstrap_still_available_and_bad_method_is_clear():
    truth = {"E": 2.0, "A": 3.0e5, "alpha": 0.3}
    x = np.geomspace(1e15, 1e20, 12)
    y = _noisy(get_law("power").predict(truth, {"x": x}), 0.01, seed=5)
    pts = bootstrap_fit(get_law("power"), [x], y, n_boot=40, seed=0, method="points")
    res = bootstrap_fit(get_law("power"), [x], y, n_boot=40, seed=0)
    assert pts["bootstrap"]["method"] == "points" and res["bootstrap"]["method"] == "residual"
    # Same point fit, different resamples.
    assert pts["params"]["alpha"]["value"] == res["params"]["alpha"]["value"]
    assert pts["params"]["alpha"]["low"] != res["params"]["alpha"]["low"]
    with pytest.raises(ValueError, match="unknown bootstrap method 'jackknife'"):
        bootstrap_fit(get_law("power"), [x], y, n_boot=5, method="jackknife")


def test_parameter_on_a_search_bound_is_flagged():
    # A 3x drop in one doubling, then flat: no power law's exponent is steep enough, so alpha runs
    # to its upper bound and the fit must say so.
    x = np.array([1e12, 2e12, 4e12, 8e12])
    y = np.array([9.0, 3.0, 3.0, 3.0])
    out = bootstrap_fit(get_law("power"), [x], y, n_boot=20, seed=0)
    assert out["at_bound"].get("alpha") == "upper", out["params"]
    assert out["params"]["alpha"]["value"] == pytest.approx(LAWS["power"].bounds[2][1])


def test_chinchilla_recovers_parameters():
    # Chinchilla's own published fit as the truth, on a 6 x 6 grid of sizes and data.
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    y = _noisy(get_law("chinchilla").predict(truth, {"N": n.ravel(), "D": d.ravel()}), 0.005, 2)
    out = bootstrap_fit(get_law("chinchilla"), [n.ravel(), d.ravel()], y, n_boot=100, seed=0)
    _check(out, truth, rel=0.35)
    for exp in ("alpha", "beta"):
        assert out["params"][exp]["value"] == pytest.approx(truth[exp], abs=0.03)


def test_optimal_size_recovers_parameters():
    truth = {"k": 0.1, "a": 0.5}
    c = np.geomspace(1e17, 1e22, 12)
    y = _noisy(get_law("optimal_size").predict(truth, {"C": c}), 0.05, seed=3)
    out = bootstrap_fit(get_law("optimal_size"), [c], y, n_boot=100, seed=0)
    _check(out, truth, rel=0.5)
    assert out["params"]["a"]["value"] == pytest.approx(0.5, abs=0.03)


def test_fit_is_invariant_to_units():
    # Centring log x and log y must not change the optimum: FLOPs in GFLOPs give the same law.
    truth = {"E": 20.0, "A": 2e7, "alpha": 0.35}  # FID 70 at 1e16 FLOPs, 22 at 1e20
    x = np.geomspace(1e16, 1e20, 12)
    y = _noisy(get_law("power").predict(truth, {"x": x}), 0.01, seed=4)
    a, _ = fit_law(get_law("power"), [x], y)
    b, _ = fit_law(get_law("power"), [x / 1e9], y)
    assert b.params["alpha"] == pytest.approx(a.params["alpha"], rel=1e-4)
    assert b.params["A"] == pytest.approx(a.params["A"] * 1e-9 ** a.params["alpha"], rel=1e-3)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    for law in LAWS.values():
        xs = [np.geomspace(1e6, 1e9, 9) * rng.uniform(1, 2, 9) for _ in law.variables]
        data = FitData.from_arrays(xs, rng.uniform(2, 5, 9))
        theta, w = law.grid()[len(law.grid()) // 2], rng.uniform(0.5, 2, 9)
        # A large delta keeps every residual on the smooth quadratic part of the loss.
        f, g = huber_objective(theta, law, data, w, delta=10.0)
        for i in range(theta.size):
            step = np.zeros_like(theta)
            step[i] = 1e-6
            fd = (huber_objective(theta + step, law, data, w, 10.0)[0]
                  - huber_objective(theta - step, law, data, w, 10.0)[0]) / 2e-6
            assert fd == pytest.approx(g[i], rel=1e-4, abs=1e-7), (law.name, i)


def test_unknown_law_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown law 'cubic'.*chinchilla"):
        get_law("cubic")


def test_interval_ignores_missing_samples():
    lo, hi = interval(np.r_[np.arange(101.0), np.nan])
    assert (lo, hi) == pytest.approx((2.5, 97.5))
    assert np.isnan(interval(np.array([np.nan]))[0])
