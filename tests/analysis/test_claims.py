"""The paper's claims checked on synthetic tables whose answer is known: reproduced, contradicted,
not resolved (and what would resolve it); numbers the points do not determine; the terminal lines."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.api import summary_lines
from analysis.claims import check_claims
from analysis.verdicts import CONTRADICTED, REPRODUCED, UNRESOLVED, Evidence
from analysis.experiments import analyses
from analysis.experiments.base import model_size, sampling_cost, samplers
from analysis.experiments.distillation import distill_gain
from analysis.inference import analyze_metric
from analysis.plot_best import best_segments
from analysis.readable import NOT_DETERMINED, prediction_table, undetermined
from analysis.synthetic import SyntheticSpec, make_results
from analysis.table import load_results

# One budget, two samplers, four step counts: enough for the cost trade-off, fast to analyse.
FAST = dict(train_images=(16e6,), steps=(4, 10, 30, 100), guidances=(2.0, 5.0))


def _evidence(tmp_path, spec: SyntheticSpec, drop: tuple[str, ...] = (), extra: pd.DataFrame | None = None) -> Evidence:
    df = make_results(spec, seed=3).assign(experiment="base").drop(columns=list(drop))
    if extra is not None:
        df = pd.concat([df, extra], ignore_index=True)
    df.to_parquet(tmp_path / "results.parquet", index=False)
    table = load_results(tmp_path, experiment=None)
    base = table[table["experiment"] == "base"]
    exps = {e: {"fid": analyze_metric(g, "fid", 40, 0)} for e, g in table.groupby("experiment") if e != "base"}
    derived = {e: analyses()[e].analyze(table, tmp_path / "out", 40, 0) for e in exps}
    return Evidence(table=table, base=base, pts=pd.DataFrame(), ref={"sampler": "ddim"}, fits={},
                    results={"fid": analyze_metric(base, "fid", 40, 0)}, experiments=exps, analyses=derived)


def test_small_models_winning_at_low_cost_is_reproduced(tmp_path):
    ev = _evidence(tmp_path, SyntheticSpec(**FAST))
    found, verdict, resolve = sampling_cost(ev)
    assert verdict == REPRODUCED and resolve == ""
    assert found.startswith("ddim: at cost ") and "model beats the 860M" in found and "cross at cost" in found
    assert samplers(ev)[1] == REPRODUCED and "dpm++: at cost" in samplers(ev)[0]
    assert model_size(ev)[1] == REPRODUCED


def test_bigger_always_better_contradicts_the_paper(tmp_path):
    # No few-step penalty: every size's curve is flat at its floor, and the largest floor is lowest.
    found, verdict, _ = sampling_cost(_evidence(tmp_path, SyntheticSpec(K=0.0, **FAST)))
    assert verdict == CONTRADICTED
    assert "the 860M model beats the" in found


def test_noise_hiding_the_gap_is_not_resolved_and_says_what_would(tmp_path):
    ev = _evidence(tmp_path, SyntheticSpec(fid_std=8.0, **FAST))
    found, verdict, resolve = model_size(ev)
    assert verdict == UNRESOLVED
    assert resolve == ("more samples per FID (eval.num_samples, now 1000) or more training seeds "
                       "(sweep.seeds, now 1)")


def test_a_table_without_noise_says_there_is_no_interval(tmp_path):
    ev = _evidence(tmp_path, SyntheticSpec(fid_std=0.0, **FAST), drop=("fid_std",))
    found, verdict, resolve = sampling_cost(ev)
    assert verdict == UNRESOLVED and "no evaluation std and one seed" in resolve
    assert "[no interval]" in found


def _distilled(factor: float) -> pd.DataFrame:
    spec = SyntheticSpec(samplers={"lcm": factor}, **{**FAST, "steps": (1, 2, 4, 8)})
    return make_results(spec, seed=4).assign(experiment="distillation", unet_calls=lambda d: d["steps"])


def test_distillation_gain_reproduced_and_contradicted(tmp_path):
    found, verdict, _ = distill_gain(_evidence(tmp_path, SyntheticSpec(**FAST), extra=_distilled(0.15)))
    assert verdict == REPRODUCED and found.startswith("At 4 steps (equal steps: the paper's axis")
    # A student whose few-step penalty is three times the teacher's is worse at 4 steps: contradicted.
    assert distill_gain(_evidence(tmp_path, SyntheticSpec(**FAST), extra=_distilled(3.0)))[1] == CONTRADICTED


def test_only_the_experiments_in_the_table_are_checked(tmp_path):
    ev = _evidence(tmp_path, SyntheticSpec(**FAST), extra=_distilled(0.15))
    keys = [c["key"] for c in check_claims(ev)]
    assert "distill_gain" in keys and "distill_match" in keys
    assert not any(k.startswith(("superres", "dreambooth")) for k in keys)


def test_every_experiment_has_its_claims(analyzed_experiments):
    run, summary = analyzed_experiments
    for name in ("distilled_vs_undistilled", "distillation_fid_vs_sampling_cost", "superres_fid_vs_sampling_cost"):
        assert (run / "analysis" / f"{name}.png").stat().st_size > 10_000
    by_key = {c["key"]: c for c in summary["claims"]}
    assert list(by_key) == ["training_compute", "model_size", "sampling_cost", "samplers", "distill_gain",
                            "distill_match", "dreambooth_size", "superres_cost", "superres_size", "superres_compute"]
    # Every size is fine-tuned from its final milestone only: compute and size cannot be told apart.
    assert by_key.pop("superres_compute")["verdict"] == UNRESOLVED
    assert all(c["verdict"] == REPRODUCED for c in by_key.values())
    assert "steps of the larger" in by_key["superres_cost"]["found"]
    assert "subject_fidelity largest minus smallest at 25 steps: 0.0" in by_key["dreambooth_size"]["found"]


def test_numbers_the_points_do_not_determine_are_not_printed():
    vague = {"params": {"E": {"value": 0.818, "low": 2.09e-26, "high": 1.55},
                        "A": {"value": 4.79e27, "low": 4.21e7, "high": 9.23e35},
                        "alpha": {"value": 0.3, "low": 0.2, "high": 0.45}},
             "derived": {"fid_at_10x_compute": {"value": 2.1, "low": 1.9, "high": 2.4}},
             "at_bound": {"alpha": "upper"}, "skipped": False, "label": "6.3M"}
    flags = undetermined(vague)
    assert flags == {"alpha": "at its upper search bound", "E": "interval spans 26 decades",
                     "A": "interval spans 28 decades"}
    skip = {"skipped": True, "reason": "-"}
    table = prediction_table({"per_size": {"32": vague}, "envelope": skip, "optimal_size": skip, "chinchilla": skip})
    rows = table.set_index("quantity")
    assert rows.loc["fid_at_10x_compute", "value"] == 2.1 and rows.loc["fid_at_10x_compute", "determined"]
    assert pd.isna(rows.loc["alpha", "value"]) and rows.loc["alpha", "note"].startswith(NOT_DETERMINED)


def test_tied_sizes_are_one_band_not_a_flip_flop():
    best = pd.DataFrame({"cost_budget": [1.0, 1.2, 1.24, 2.4, 2.5, 5.0], "width": [8, 16, 24, 16, 24, 32],
                         "params": [1, 2, 3, 2, 3, 4], "p_best": [1.0, 0.55, 0.5, 0.6, 0.52, 0.99]})
    segs = best_segments(best, 10.0)
    assert [(s["from"], s["to"], s["widths"], s["tied"]) for s in segs] == [
        (1.0, 1.2, [8], False), (1.2, 5.0, [16, 24], True), (5.0, 10.0, [32], False)]
    # The analysis's own tie sets win over the p_best fallback.
    best["tied_widths"] = ["8", "16;24", "16;24", "16;24", "16;24", "32"]
    assert [s["widths"] for s in best_segments(best, 10.0)] == [[8], [16, 24], [32]]


def test_terminal_summary_lines():
    summary = {"claims": [{"title": "Quality vs sampling cost", "verdict": REPRODUCED, "found": "x" * 300,
                           "resolve": ""},
                          {"title": "Samplers", "verdict": UNRESOLVED, "found": "ddim: 1 [0, 2]",
                           "resolve": "more samples per FID"}],
               "report": "runs/tiny/analysis/report.html", "findings_md": "runs/tiny/analysis/findings.md"}
    lines = summary_lines(summary)
    assert lines[0].startswith("Findings") and lines[1] == "  [+] Quality vs sampling cost: reproduced"
    assert len(lines[2]) <= 120 and lines[2].endswith("...")
    assert "  [?] Samplers: not resolved at this scale" in lines and "      to resolve: more samples per FID" in lines
    assert lines[-2:] == ["report: runs/tiny/analysis/report.html",
                          "findings (Markdown): runs/tiny/analysis/findings.md"]


@pytest.mark.parametrize("claims", [[]])
def test_terminal_summary_without_claims(claims):
    assert "no claim of the paper could be checked" in summary_lines({"claims": claims, "report": "r"})[1]


def test_an_unresolved_claim_quotes_the_planner_s_next_run(tmp_path):
    from analysis.advice import add_planner_advice

    ev = _evidence(tmp_path, SyntheticSpec(fid_std=8.0, **FAST))
    claims = add_planner_advice(check_claims(ev), ev.table, "runs/x")
    by = {c["key"]: c for c in claims}
    size = by["model_size"]
    assert size["verdict"] == UNRESOLVED
    widths = sorted(ev.base["width"].unique())
    # The target is the quantity whose interval includes zero: smallest minus largest at the common steps.
    assert size["plan"].startswith(f"study plan runs/x --target gap:{widths[0]}-{widths[-1]}@100 --sampler ddim")
    assert size["resolve"].startswith("more samples per FID") and size["advice"].startswith("the planner (`study plan")
    named = int(size["advice"].split("(width ")[1].split(")")[0])
    assert named in widths  # a width the run trained, and the interval it would leave
    now, after = (float(x) for x in size["advice"].split(" interval ")[1].split(" (95")[0].split(" -> "))
    assert after < now
    # Resolved claims get no advice; the terminal lines carry it under the claim.
    assert all(c["plan"] == c["advice"] == "" for c in claims if c["verdict"] != UNRESOLVED)
    lines = summary_lines({"claims": claims, "report": "r.html"})
    assert f"      next run: {size['advice']}" in lines


def test_the_report_and_its_markdown_show_the_planner_s_next_run():
    from analysis.report import findings_html, findings_markdown

    claim = {"key": "model_size", "title": "Size", "paper": "p", "found": "f", "verdict": UNRESOLVED,
             "resolve": "more seeds", "anchor": "fid_steps", "plan": "study plan r --target alpha",
             "advice": "the planner (`study plan r --target alpha`) ranks first <another seed>"}
    html = findings_html([claim])
    assert "<div class='why'>next run: the planner (`study plan r --target alpha`) ranks first &lt;another seed&gt;" \
        in html
    md = findings_markdown({"title": "t", "subtitle": "s", "claims": [claim], "numbers": None, "sections": []})
    assert "(to resolve: more seeds) (next run: the planner (`study plan r --target alpha`)" in md
