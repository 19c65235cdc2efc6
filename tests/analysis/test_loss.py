"""The held-out loss as the cheap signal (analysis.loss): points per (size, budget), and a loss-to-FID map whose
held-out errors and interval coverage are what the data say."""

import numpy as np
import pandas as pd
import pytest

from analysis.loss import loss_points, loss_to_fid, predict_fid
from analysis.synthetic import SyntheticSpec, make_results
from analysis.table import normalize


def _table(noise: float, seed: int = 0) -> pd.DataFrame:
    """A synthetic study whose checkpoints' held-out loss maps to FID as FID = 3 loss^2 (times noise)."""
    rng = np.random.default_rng(seed)
    df = make_results(SyntheticSpec(train_images=(2e6, 4e6, 8e6, 16e6), steps=(10, 30), guidances=(2.0, 5.0)),
                      seed=seed).assign(experiment="base")
    per_ckpt = df.groupby(["width", "seed", "train_images"])["fid"].transform("min")
    loss = np.sqrt(per_ckpt / 3.0) * np.exp(rng.normal(0, noise, len(df)))
    # One loss per checkpoint (the same on every row of it), as the evaluation writes it.
    key = df["width"].astype(str) + df["seed"].astype(str) + df["train_images"].astype(str)
    first = pd.Series(loss.values, index=df.index).groupby(key).transform("first")
    return normalize(df.assign(heldout_loss=first, heldout_loss_se=0.001))


def test_a_clean_power_map_is_recovered_and_predicts_held_out_checkpoints():
    maps = loss_to_fid(_table(noise=0.001))
    assert len(maps) and (maps["n"] >= 4).all()
    # FID at a step count is its checkpoint's best FID plus a step penalty: the map is close to FID ~ loss^2.
    assert maps["slope"].between(1.5, 2.5).all() and (maps["r2"] > 0.9).all()
    assert (maps["loo_coverage"] >= 0.75).all()


def test_noise_in_the_loss_widens_the_errors_not_the_claims():
    clean, noisy = loss_to_fid(_table(0.001)), loss_to_fid(_table(0.2))
    assert (noisy["loo_rms_log"].values > clean["loo_rms_log"].values).all()
    assert (noisy["loo_coverage"] >= 0.6).all()  # the intervals widen with the residuals


def test_loss_points_and_prediction_for_a_loss_only_checkpoint():
    t = _table(0.001)
    pts = loss_points(t)
    assert set(pts.columns) >= {"width", "train_images", "params", "train_flops", "loss", "std"}
    assert len(pts) == t.groupby(["width", "train_images"]).ngroups
    curve, steps = t["curve"].iloc[0], int(t["steps"].max())
    p = predict_fid(t, loss=float(pts["loss"].median()), curve=curve, steps=steps)
    assert p["low"] < p["fid"] < p["high"]
    with pytest.raises(ValueError, match="needs >= 4"):
        predict_fid(t.iloc[:2], 0.5, curve, steps)
