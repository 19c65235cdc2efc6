"""Report sections beyond the base analysis: each derived experiment's own analysis
(analysis/experiments/<name>.py) and the backtest of the joint law (analysis/predict.py) on the run's largest size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.experiments import analyses
from analysis.gof import gof_summary
from analysis.predict import backtest


def experiment_analyses(table: pd.DataFrame, out: Path, n_boot: int, seed: int) -> dict[str, dict]:
    """Each derived experiment's own analysis (figures, tables) for the experiments the table holds."""
    exp = table["experiment"].astype(str)
    return {name: module.analyze(table, out, n_boot, seed) for name, module in analyses().items()
            if hasattr(module, "analyze") and (exp == name).any()}


def experiment_sections(done: dict[str, dict], claims: list[dict]) -> list[dict]:
    """One report section per derived experiment analysed: its figures, its claims' verdicts and its tables."""
    sections = []
    for name, res in done.items():
        captions = res.get("captions", {})
        sections.append({
            "id": f"exp_{name}", "title": res.get("title", name),
            "figures": [{"png": p, "caption": captions.get(k, "")} for k, p in res.get("figures", {}).items()],
            "side": res.get("side"),  # a table shown beside the figures (the ema experiment's best length per size)
            "lines": [f"{c['paper']} This run: {c['found']} Verdict: {c['verdict']}."
                      + (f" To resolve: {c['resolve']}" if c.get("resolve") else "")
                      for c in claims if c["experiment"] == name],
            "details": [{"summary": k.replace("_", " "), "table": t} for k, t in res.get("tables", {}).items()
                        if isinstance(t, pd.DataFrame)]})
    return sections


def backtest_section(base: pd.DataFrame, n_boot: int, seed: int, out: Path) -> dict | None:
    """Predict the largest size from the others (joint law) and compare with what was measured."""
    try:
        b = backtest(base, n_boot=min(n_boot, 100), seed=seed)
    except ValueError as err:  # too few sizes or step counts: say so in the report
        return {"id": "backtest", "title": "Prediction before training: backtest", "lines": [str(err)]}
    pts, cross = b["curve_points"], b["crossovers"]
    pts.to_csv(out / "backtest_curve.csv", index=False)
    cross.to_csv(out / "backtest_crossovers.csv", index=False)
    lines = [f"The joint law fitted without the largest size ({b['held_out']}, {b['curve']}) predicted its FID "
             f"within the 95% interval of a new evaluation at {int(pts['inside'].sum())} of {len(pts)} step counts "
             f"(log-RMS of the fit {b['rmse_log']:.3f}; on the other sizes' cells "
             f"{gof_summary({'gof': b['gof']})})."]
    for r in cross.itertuples():
        pred = ("no crossing" if not np.isfinite(r.crossover_cost)
                else f"{r.crossover_cost:.3g} [{r.low:.3g}, {r.high:.3g}]")
        meas = "no crossing" if not np.isfinite(r.measured_cost) else f"{r.measured_cost:.3g}"
        verdict = ("inside the interval" if r.inside_interval else "outside the interval" if r.inside_interval is False
                   else "same answer" if r.same_answer else "different answer")
        lines.append(f"{r.smaller} vs {r.larger}: predicted crossover {pred}, measured {meas}: {verdict}.")
    return {"id": "backtest", "title": "Prediction before training: backtest of the largest size", "lines": lines,
            "details": [{"summary": "predicted and measured FID of the held-out size", "table": pts,
                         "csv": str(out / "backtest_curve.csv")},
                        {"summary": "predicted and measured crossovers", "table": cross,
                         "csv": str(out / "backtest_crossovers.csv")}]}
