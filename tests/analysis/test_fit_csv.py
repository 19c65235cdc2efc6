"""`study fit`'s library call: JSON shape, file output, one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.api import fit_csv
from analysis.laws import get_law


@pytest.fixture
def joint_csv(tmp_path):
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5))
    loss = get_law("chinchilla").predict(truth, {"N": n.ravel(), "D": d.ravel()})
    loss *= np.exp(np.random.default_rng(0).normal(0, 0.005, loss.size))
    path = tmp_path / "points.csv"
    pd.DataFrame({"params": n.ravel(), "tokens": d.ravel(), "loss": loss,
                  "note": "x"}).to_csv(path, index=False)
    return path


def test_chinchilla_json_shape_and_file(joint_csv, tmp_path):
    out = tmp_path / "fit.json"
    res = fit_csv(joint_csv, "chinchilla", {"N": "params", "D": "tokens"}, "loss",
                  bootstrap=30, out=str(out))
    assert res["law"] == "chinchilla"
    assert set(res["params"]) == {"E", "A", "B", "alpha", "beta"}
    for p in res["params"].values():
        assert set(p) == {"value", "low", "high"} and p["low"] <= p["value"] <= p["high"]
    assert res["variables"] == {"N": "params", "D": "tokens"} and res["y"] == "loss"
    assert res["bootstrap"]["resamples"] == 30 and res["n_points"] == 25
    assert "n_opt_exponent" in res["derived"]
    assert json.loads(out.read_text()) == res


def test_power_accepts_any_single_variable_name(joint_csv):
    res = fit_csv(joint_csv, "power", {"N": "params"}, "loss", bootstrap=0)
    assert set(res["params"]) == {"E", "A", "alpha"} and res["variables"] == {"x": "params"}
    assert res["params"]["alpha"]["low"] is None  # no resamples, no interval (null in JSON)


def test_optimal_size_law(tmp_path):
    c = np.geomspace(1e18, 1e22, 8)
    path = tmp_path / "opt.csv"
    pd.DataFrame({"flops": c, "n_opt": 0.1 * c ** 0.5}).to_csv(path, index=False)
    res = fit_csv(path, "optimal_size", {"C": "flops"}, "n_opt", bootstrap=20)
    assert res["params"]["a"]["value"] == pytest.approx(0.5, abs=1e-3)
    assert res["params"]["k"]["value"] == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("law, x, y, match", [
    ("cubic", {"x": "params"}, "loss", r"unknown law 'cubic': use one of"),
    ("chinchilla", {"N": "params"}, "loss", r"takes variable\(s\) N, D .* --x N=COLUMN --x D="),
    ("power", {"x": "size"}, "loss", r"unknown column\(s\) size .*use one of params"),
    ("power", {"x": "params"}, "lost", r"unknown column\(s\) lost"),
])
def test_bad_input_is_a_one_line_value_error(joint_csv, law, x, y, match):
    with pytest.raises(ValueError, match=match) as err:
        fit_csv(joint_csv, law, x, y, bootstrap=5)
    assert "\n" not in str(err.value)


def test_too_few_points_and_missing_file(tmp_path):
    path = tmp_path / "few.csv"
    pd.DataFrame({"n": [1e6, 2e6, 0.0], "y": [3.0, 2.5, 2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="too few points: 2 usable row"):
        fit_csv(path, "power", {"x": "n"}, "y")
    with pytest.raises(ValueError, match="does not exist"):
        fit_csv(tmp_path / "nope.csv", "power", {"x": "n"}, "y")
