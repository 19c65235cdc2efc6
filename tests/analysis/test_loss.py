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


def _loss_only(t: pd.DataFrame, width: int, images: float) -> tuple[pd.DataFrame, float]:
    """The table with one checkpoint evaluated by its held-out loss alone: its FID rows replaced by one row with
    the loss and no sampler, steps, guidance or FID. Returns it and the checkpoint's removed best FID at 30 DDIM
    steps."""
    mine = (t["width"] == width) & (t["train_images"] == images)
    truth = t[mine & t["best"] & (t["sampler"] == "ddim") & (t["steps"] == 30)]["fid"].iloc[0]
    row = t[mine].iloc[[0]].assign(fid=np.nan, sampler=np.nan, steps=np.nan, guidance=np.nan, best=False)
    return pd.concat([t[~mine], row], ignore_index=True), float(truth)


def test_a_budget_scored_by_its_loss_alone_gets_its_fid_with_an_interval(tmp_path):
    from analysis.loss import loss_cells, loss_only
    from analysis.predict import fit_joint, predict_run

    t, truth = _loss_only(_table(0.001), 128, 8e6)
    t = normalize(t)  # a loss-only row may leave sampler, steps and guidance empty
    only = loss_only(t)
    assert list(zip(only["width"], only["train_images"])) == [(128, 8e6)]
    c = loss_cells(t, "ddim")
    at30 = c[c["steps"] == 30].iloc[0]
    assert at30["from_loss"] and at30["low"] <= truth <= at30["high"], (at30.to_dict(), truth)
    fit = fit_joint(t, "ddim", n_boot=20)
    by_loss = fit.points[fit.points["from_loss"]]
    assert by_loss[["width", "train_images"]].drop_duplicates().values.tolist() == [[128, 8e6]]
    # `study predict`'s library call prints and stores the budget's predicted FID with its interval.
    run = tmp_path / "run"
    run.mkdir()
    t.to_parquet(run / "results.parquet", index=False)
    summary = predict_run(run, 5e8, 1.5, "big", "ddim", n_boot=20)
    got = [r for r in summary["from_loss"] if r["steps"] == 30]
    assert len(got) == 1 and got[0]["low"] < got[0]["fid"] < got[0]["high"]


def test_the_loss_to_fid_map_is_not_extrapolated():
    """A loss-only budget whose loss lies outside the losses the map was fitted on gets no FID (a steep map a few
    budgets back predicts absurd FIDs); one inside the range does."""
    from analysis.loss import loss_cells

    t, _ = _loss_only(_table(0.001), 128, 8e6)
    t = normalize(t)
    seen = t[t["fid"].notna()]["heldout_loss"]
    assert len(loss_cells(t, "ddim")) > 0  # inside the range
    mine = (t["width"] == 128) & (t["train_images"] == 8e6)
    for outside in (seen.max() * 1.5, seen.min() / 1.5):
        assert loss_cells(t.assign(heldout_loss=t["heldout_loss"].where(~mine, outside)), "ddim").empty


def test_only_a_loss_only_row_may_leave_its_steps_empty():
    t = _table(0.001)
    bad = t.copy()
    bad.loc[bad.index[0], "steps"] = np.nan  # an FID row without steps is corrupt
    with pytest.warns(UserWarning, match="skipping 1 corrupt row"):
        assert len(normalize(bad)) == len(t) - 1
