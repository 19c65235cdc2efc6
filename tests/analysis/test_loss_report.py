"""The report's sections beyond the paper (analysis.loss_report) on synthetic studies with known laws: isoFLOP
profiles beside the joint law and whether they agree, the loss against compute, the loss-to-FID map; numbers with
intervals that cover the truth, laws that miss their points blanked, and tables without a held-out loss said so."""

import numpy as np
import pandas as pd
import pytest

from analysis.gof import DOES_NOT_FIT
from analysis.loss_report import agreement, loss_sections
from analysis.report import write_report
from analysis.table import normalize
from analysis.training import fit_training, training_points
from study.results import mark_best

E, A, B, ALPHA, BETA = 0.05, 4.0, 40.0, 0.3, 0.4  # the loss: E + A / N^alpha + B / D^beta
SIZES = np.geomspace(1e7, 1e9, 6)
IMAGES = np.geomspace(1e6, 1e9, 7)
STEPS = (4, 16)


def study(seed: int = 0, noise: float = 0.004, broken: float | None = None) -> pd.DataFrame:
    """Checkpoints of six sizes at seven budgets (C = 6 N D): a Chinchilla-form held-out loss with relative noise,
    FID = 3 loss^2 (1 + 2 / steps) with its own noise, at one guidance. broken: the smallest size's loss at its
    middle budget multiplied by it (a bad checkpoint)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(SIZES):
        for j, d in enumerate(IMAGES):
            loss = (E + A / n ** ALPHA + B / d ** BETA) * np.exp(rng.normal(0, noise))
            loss *= broken if (broken and i == 0 and j == 3) else 1.0
            for s in STEPS:
                fid = 3 * loss ** 2 * (1 + 2 / s) * np.exp(rng.normal(0, noise))
                rows.append({"width": 8 * (i + 1), "params": n, "normalized_cost": n / SIZES[-1], "gflops": n * 2e-9,
                             "train_images": d, "train_flops": 6 * n * d, "sampler": "ddim", "steps": s,
                             "guidance": 3.0, "fid": fid, "fid_std": noise * fid, "seed": 0,
                             "heldout_loss": loss, "heldout_loss_se": noise * loss})
    return normalize(mark_best(pd.DataFrame(rows)))


def _sections(table, tmp_path, n_boot=60):
    pts, _ = training_points(table)
    fits = fit_training(pts, n_boot, 0)
    return loss_sections(table, pts, fits, n_boot, 0, tmp_path)


def _row(numbers, fit, quantity):
    r = numbers[(numbers["fit"] == fit) & (numbers["quantity"] == quantity)]
    assert len(r) == 1, (fit, quantity, numbers[["fit", "quantity"]].values.tolist())
    return r.iloc[0]


def test_the_sections_recover_the_laws_and_compare_the_two_approaches(tmp_path):
    secs, numbers, tables = _sections(study(), tmp_path)
    assert [s["id"] for s in secs] == ["isoflop", "loss_laws", "loss_to_fid"]
    # The isoFLOP law of the loss: its exponent's interval holds beta / (alpha + beta).
    a = _row(numbers, "isoflop/held-out loss", "a")
    assert a["determined"] and a["low"] <= BETA / (ALPHA + BETA) <= a["high"], a.to_dict()
    # The joint law of the loss recovers its exponents, with intervals.
    for q, truth in (("alpha", ALPHA), ("beta", BETA)):
        r = _row(numbers, "joint/loss", q)
        assert r["determined"] and r["low"] <= truth <= r["high"], r.to_dict()
    # Approach 2 beside approach 3 for the loss: both exponents given, and the sentence says whether they agree.
    iso = next(s for s in secs if s["id"] == "isoflop")
    said = [s for s in iso["lines"] if s.startswith("held-out loss, exponent of N_opt in C")]
    assert said and ("agree (the 95% intervals overlap)" in said[0] or "disagree" in said[0]), iso["lines"]
    assert not iso["side"].empty and len(tables["isoflop_loss"]) == 5
    # The loss-to-FID map per step count: FID ~ loss^2, and held-out checkpoints inside their intervals.
    maps = tables["loss_to_fid"]
    assert set(maps["steps"]) == set(STEPS)
    assert ((maps["slope_low"] <= 2) & (2 <= maps["slope_high"])).all(), maps
    assert (maps["loo_coverage"] >= 0.75).all() and (maps["loo_rel_error_low"] <= maps["loo_rel_error"]).all()
    # Every section renders into the self-contained report.
    page = {"title": "t", "subtitle": "s", "claims": [], "numbers": None, "sections": secs, "about": []}
    html = (tmp_path / "r.html")
    write_report(html, page)
    text = html.read_text()
    assert "isoFLOP profiles beside the joint law" in text and "data:image/png;base64" in text


def test_budgets_scored_by_their_loss_alone_give_the_loss_its_isoflop_profiles(tmp_path):
    # FID at each size's final budget only, as the study writes a train.loss_milestones budget the others: one row
    # with its loss and no FID, sampler or steps (sweeps.eval_grid._loss_row). The loss's isoFLOP law is found
    # from them; FID, one budget per size, has no profile.
    t = study()
    final = t["train_images"] == t["train_images"].max()
    only = t[~final].drop_duplicates(["width", "train_images"]).assign(
        fid=np.nan, fid_std=np.nan, sampler="", steps=0, guidance=np.nan, best=False)
    table = normalize(pd.concat([t[final], only], ignore_index=True))
    secs, numbers, tables = _sections(table, tmp_path)
    a = _row(numbers, "isoflop/held-out loss", "a")
    assert a["determined"] and a["low"] <= BETA / (ALPHA + BETA) <= a["high"], a.to_dict()
    assert len(tables["isoflop_loss"]) == 5
    iso = next(s for s in secs if s["id"] == "isoflop")
    assert not [r for r in numbers.itertuples() if r.fit == "isoflop/FID" and r.determined], iso["lines"]


def test_a_law_that_misses_its_points_is_blanked_not_quoted(tmp_path):
    _, numbers, _ = _sections(study(broken=1.5), tmp_path)
    rows = numbers[numbers["fit"] == "loss_power/width=8"]  # the smallest size, with one bad checkpoint
    assert len(rows) and not rows["determined"].any()
    assert rows["note"].str.startswith(DOES_NOT_FIT).all() and rows["value"].isna().all()


def test_a_table_without_held_out_loss_says_so(tmp_path):
    t = study().drop(columns=["heldout_loss", "heldout_loss_se"])
    secs, numbers, tables = _sections(t, tmp_path, n_boot=20)
    laws = next(s for s in secs if s["id"] == "loss_laws")
    assert "no held-out loss" in laws["lines"][0] and "eval.heldout_samples" in laws["lines"][0]
    assert "loss_to_fid" not in tables and not numbers["fit"].str.contains("loss").any()
    assert "isoflop_fid" in tables  # FID still has its profiles


@pytest.mark.parametrize("b, verdict", [((2.0, 3.5), "agree"), ((3.1, 4.0), "disagree")])
def test_agreement_is_overlap_of_the_two_intervals(b, verdict):
    a = {"fit": "x", "quantity": "a", "determined": True, "note": "", "low": 1.0, "high": 3.0}
    other = {**a, "low": b[0], "high": b[1]}
    assert agreement(a, other).startswith(verdict)
    assert agreement(a, {**other, "determined": False, "note": "not determined"}).startswith("cannot say")
