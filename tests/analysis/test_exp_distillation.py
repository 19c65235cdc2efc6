"""The distillation analysis on synthetic tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.claims import judge_experiment


def analyze(table, out, n_boot=500, seed=0):
    res, claims = judge_experiment("distillation", table, out, n_boot, seed)
    return {**res, "claims": claims}

WIDTHS = {8: (0.5e6, 0.11), 16: (1.7e6, 0.3), 24: (3.7e6, 0.62), 32: (6.3e6, 1.0)}
BASE_STEPS = (2, 4, 8, 16, 32)


def _row(exp, w, sampler, steps, guidance, fid, std=0.05, calls=None, images=32000, seed=0):
    params, nc = WIDTHS[w]
    row = {"experiment": exp, "task": "text2image", "width": w, "params": params, "normalized_cost": nc,
           "train_images": images, "train_flops": 1e12, "sampler": sampler, "steps": steps, "guidance": guidance,
           "fid": fid, "fid_std": std, "seed": seed, "fid_floor": 1.0,
           "checkpoint": f"/runs/t/{'train' if exp == 'base' else 'distillation/train'}/w{w}-s0/checkpoints/m"}
    if calls is not None:
        row["unet_calls"] = calls
    return row


def table(distilled_fid_at_4=None, with_calls=True):
    """Base: FID = 2 + 20 / (nc^0.3 x steps) at the best guidance 3 (a worse guidance 1.5 row beside it);
    distilled: FID = 2 + 16 / (nc^0.3 x steps) unless given; an earlier base budget that must be ignored."""
    rows = []
    for w, (_, nc) in WIDTHS.items():
        for steps in BASE_STEPS:
            fid = 2 + 20 / (nc ** 0.3 * steps)
            rows.append(_row("base", w, "ddim", steps, 3.0, fid, calls=2 * steps if with_calls else None))
            rows.append(_row("base", w, "ddim", steps, 1.5, fid + 1, calls=2 * steps if with_calls else None))
            rows.append(_row("base", w, "ddim", steps, 3.0, fid - 5, images=8000,
                             calls=2 * steps if with_calls else None))
        for steps in (1, 2, 4, 8):
            fid = 2 + 16 / (nc ** 0.3 * steps)
            if steps == 4 and distilled_fid_at_4 is not None:
                fid = distilled_fid_at_4(w)
            rows.append(_row("distillation", w, "lcm", steps, 3.0, fid, calls=steps if with_calls else None))
    return pd.DataFrame(rows)


def _expected_match(fid_target, nc):
    """Where 2 + 20 / (nc^0.3 s) = target on the evaluated steps, interpolated linearly in log cost."""
    steps = np.array(BASE_STEPS)
    fid = 2 + 20 / (nc ** 0.3 * steps)
    j = int(np.argmax(fid <= fid_target))
    t = (fid[j - 1] - fid_target) / (fid[j - 1] - fid[j])
    return float(np.exp(np.log(nc * steps[j - 1]) + t * (np.log(nc * steps[j]) - np.log(nc * steps[j - 1]))))


@pytest.mark.parametrize("with_calls", [True, False])
def test_gain_and_matches(tmp_path, with_calls):
    res = analyze(table(with_calls=with_calls), tmp_path, n_boot=200, seed=0)
    gain, matches = res["tables"]["gain"], res["tables"]["matches"]
    assert list(gain["width"]) == [8, 16, 24, 32] and (gain["steps"] == 4).all()
    # Gains are exact (the final budget only; the better 8000-image rows are ignored) and clearly positive.
    np.testing.assert_allclose(gain["gain"], [4 / (nc ** 0.3 * 4) for _, nc in WIDTHS.values()])
    assert (gain["low"] > 0).all() and (gain["undistilled_unet_calls"] == 8).all()
    assert (gain["distilled_unet_calls"] == 4).all()  # from the column, or the rule when it is missing
    # Distilled 6.3M at 4 steps (FID 6) vs undistilled 1.7M: the match cost on the paper axis, and on calls (x2).
    m = matches[(matches["distilled_width"] == 32) & (matches["undistilled_width"] == 16)].set_index("axis")
    expected = _expected_match(6.0, 0.3)
    assert 4 * 0.3 < expected < 8 * 0.3
    assert m.loc["paper", "cost"] == pytest.approx(expected)
    assert m.loc["calls", "cost"] == pytest.approx(2 * expected)
    assert m.loc["paper", "low"] < expected < m.loc["paper", "high"] and m.loc["paper", "p_reached"] == 1.0
    assert m.loc["paper", "distilled_cost"] == pytest.approx(4.0) and m.loc["calls", "distilled_cost"] == 4.0
    gain_claim = res["claims"]["distill_gain"]
    assert gain_claim["verdict"] == "reproduced" and "calls" in gain_claim["found"]
    match_claim = res["claims"]["distill_match"]
    assert match_claim["verdict"] == "contradicted"  # matched, at cost ~1.8 [tight], far below 6..10
    assert len(res["claims"]) == 2
    assert (tmp_path / "distillation_fid_vs_cost.png").is_file() and (tmp_path / "distillation_gain.csv").is_file()


def test_verdicts_follow_the_intervals(tmp_path):
    # The smallest student at 4 steps is worse than its teacher at 2 guided steps (the same 4 UNet calls): it has
    # not trained enough to say anything about distillation (not a contradiction).
    worse = table(distilled_fid_at_4=lambda w: 30.0 if w == 8 else 2.5)
    claim = analyze(worse, tmp_path, n_boot=100)["claims"]["distill_gain"]
    assert claim["verdict"] == "not resolved: under-trained"
    assert "Below the baseline: distilled 0.5M FID 30 at 4 UNet calls, its teacher 21.4" in claim["found"]
    # Better than its teacher at equal calls (21.4), worse than it at equal steps (11.7): distillation trained and
    # still loses at 4 steps: contradicted.
    between = table(distilled_fid_at_4=lambda w: 15.0 if w == 8 else 2.5)
    assert analyze(between, tmp_path, n_boot=100)["claims"]["distill_gain"]["verdict"] == "contradicted"
    # A distilled FID so good that no undistilled size reaches it: the match is never found.
    res = analyze(table(distilled_fid_at_4=lambda w: 1.0), tmp_path, n_boot=100)
    m = res["tables"]["matches"]
    assert np.isinf(m["cost"]).all() and (m["p_reached"] == 0).all()
    match_claim = res["claims"]["distill_match"]
    assert match_claim["verdict"] == "contradicted" and "never" in match_claim["found"]
    # A target the 1.7M model reaches at paper cost 8 (26.7 steps, between its evaluated 16 and 32): reproduced.
    target = 2 + 20 / (0.3 ** 0.3 * (8 / 0.3))
    res = analyze(table(distilled_fid_at_4=lambda w: target if w == 32 else 2.5), tmp_path, n_boot=100)
    m = res["tables"]["matches"].query("distilled_width == 32 and undistilled_width == 16 and axis == 'paper'")
    assert 7 < float(m["cost"].iloc[0]) < 9
    assert res["claims"]["distill_match"]["verdict"] == "reproduced"


def test_no_distillation_rows_is_one_clear_error(tmp_path):
    t = table()
    with pytest.raises(ValueError, match="distillation"):
        analyze(t[t["experiment"] == "base"], tmp_path, n_boot=10)


def test_grids_are_found_from_the_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "distillation").mkdir(parents=True)
    (run / "distillation" / "grid-w8-s0.png").write_bytes(b"png")
    t = table()
    t.loc[t["experiment"] == "distillation", "checkpoint"] = str(run / "distillation/train/w8-s0/checkpoints/m")
    res = analyze(t, tmp_path / "out", n_boot=10)
    assert res["figures"]["grid_w8-s0"] == str(run / "distillation" / "grid-w8-s0.png")
    assert "grid_w8-s0" in res["captions"]


def test_two_sizes_match_the_smaller_undistilled_against_the_larger_distilled(tmp_path):
    # With two sizes the paper's ranks collapse: the match is the small undistilled model against the large
    # distilled one, never a size against itself.
    two = table().query("width in (8, 32)")
    found = analyze(two, tmp_path, n_boot=100)["claims"]["distill_match"]["found"]
    assert found.startswith("The undistilled 0.5M model") and "of the distilled 6.3M" in found


def test_curve_of_distilled_fid_against_distillation_images(tmp_path):
    """Distillation milestones as rows (train_images = images of distillation): one curve point per size and
    milestone at 4 steps, the change between milestones with its interval, the teacher at equal calls."""
    rows = [r for r in table().to_dict("records")]
    for w, (_, nc) in WIDTHS.items():  # earlier milestones of every distilled size: 10 at 256, 7 at 512 images
        for images, fid in ((256, 10.0), (512, 7.0)):
            rows.append(_row("distillation", w, "lcm", 4, 3.0, fid, std=0.5, calls=4, images=images))
    res = analyze(pd.DataFrame(rows), tmp_path, n_boot=100, seed=0)
    curve = res["tables"]["curve"]
    g = curve[curve["width"] == 24].set_index("distill_images")
    assert list(g.index) == [256, 512, 32000] and (curve["steps"] == 4).all()
    assert g.loc[512, "change"] == pytest.approx(-3.0)
    assert g.loc[512, "change_low"] < -3.0 < g.loc[512, "change_high"] < 0  # a real improvement
    assert g.loc[256, "low"] == pytest.approx(10 - 1.96 * 0.5)
    # the baseline: the undistilled size's best FID at 4 UNet calls (2 guided DDIM steps at the final budget)
    assert g.loc[256, "teacher_fid_same_calls"] == pytest.approx(2 + 20 / (0.62 ** 0.3 * 2))
    assert "fid_vs_images" in res["figures"]
    # the headline comparisons still read the final milestone only
    gain = res["tables"]["gain"].set_index("width")
    assert gain.loc[24, "distilled_fid"] == pytest.approx(g.loc[32000, "distilled_fid"])
    assert g.loc[32000, "distilled_fid"] == pytest.approx(2 + 16 / (0.62 ** 0.3 * 4))
