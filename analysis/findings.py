"""Plain-language findings, each stated with its interval, and honest about unresolved ones."""

from __future__ import annotations

import math

import pandas as pd

from analysis.frontier import winner_ranges
from analysis.gof import fits as law_fits, gof_summary, not_fit_text
from analysis.inference import FINAL, InferenceResult
from analysis.table import METRIC_LABEL, size_label


def num(v: float | None) -> str:
    """Three significant figures, or 'n/a'."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.3g}"


def bracket(low: float, high: float) -> str:
    """'[low, high]' or a note that no interval exists."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "[no interval]"
    return f"[{num(low)}, {num(high)}]"


def _gap_sentence(row, which: str, res: InferenceResult) -> str:
    cost = getattr(row, f"{which}_cost")
    gap, lo, hi = (getattr(row, f"{which}_gap"), getattr(row, f"{which}_gap_low"),
                   getattr(row, f"{which}_gap_high"))
    small, large = size_label(row.smaller_params), size_label(row.larger_params)
    winner, loser = (small, large) if gap > 0 else (large, small)
    # Report the winner's margin as positive, the interval flipped with it.
    d, a, b = (gap, lo, hi) if gap > 0 else (-gap, -hi, -lo)
    text = (f"{row.sampler}: at sampling cost {num(cost)}, the {winner} model beats the "
            f"{loser} model by {num(d)} {METRIC_LABEL[res.metric]} {bracket(a, b)}")
    if not res.noisy:
        return text + " (no interval: the table has no metric std and one seed per size)"
    if a <= 0 <= b:
        return text + " (not resolved: the interval includes zero)"
    return text


def _cross_sentence(row) -> str:
    small, large = size_label(row.smaller_params), size_label(row.larger_params)
    side = "below" if row.smaller_wins_below else "above"
    text = (f"{row.sampler}: the {small} and {large} curves cross at sampling cost "
            f"{num(row.crossover_cost)} {bracket(row.low, row.high)}; the {small} model is "
            f"better {side} it")
    if math.isfinite(row.p_cross):
        text += f" (a crossing in {row.p_cross:.0%} of resamples)"
    if row.n_crossings > 1:
        listed = getattr(row, "crossings", "")
        text += (f"; the curves cross {row.n_crossings} times" + (f": {listed}" if isinstance(listed, str)
                                                                  and listed else ", the first is given"))
    return text


def inference_findings(res: InferenceResult) -> dict[str, list[str]]:
    """Crossovers, pairwise gaps at the ends of each overlap, best size per budget."""
    out: dict[str, list[str]] = {"crossovers": [], "gaps": [], "best_size": []}
    pairs = res.pairs[res.pairs["budget"] == FINAL] if len(res.pairs) else res.pairs
    for row in pairs.itertuples():
        if math.isfinite(row.crossover_cost):
            out["crossovers"].append(_cross_sentence(row))
        elif getattr(row, "verdict", "") == "tied within noise":  # a tie is said as a tie, not a flip
            out["crossovers"].append(
                f"{row.sampler}: the {size_label(row.smaller_params)} and {size_label(row.larger_params)} "
                f"models are tied within noise from cost {num(row.overlap_low)} to {num(row.overlap_high)}")
        for which in ("at_low", "at_high"):
            out["gaps"].append(_gap_sentence(row, which, res))
    if len(pairs) and not pairs["crossover_cost"].notna().any():
        out["crossovers"].append("no pair of sizes crosses within the sampling costs measured")
    best = res.best_size[res.best_size["budget"] == FINAL]
    for sampler, g in best.groupby("sampler", sort=False):
        parts = []
        for r in winner_ranges(g):
            upto = f"below {num(r['to_cost'])}" if r["to_cost"] is not None else "and above"
            parts.append(f"{size_label(r['params'])} from cost {num(r['from_cost'])} {upto}")
        out["best_size"].append(f"{sampler}: best size per sampling-cost budget: "
                                + "; ".join(parts))
    return out


def regression_findings(regressions: list[dict]) -> list[str]:
    """One sentence per size whose FID rose with more training (analysis.training.regressions)."""
    return [f"{size_label(r['params'])}: FID rose from {num(r['from_fid'])} at {r['from_images']:,} training "
            f"images to {num(r['to_fid'])} at {r['to_images']:,}, beyond the evaluation noise: the run "
            f"may have diverged (see the loss in train/w{r['width']}-s*/metrics.jsonl; lower train.lr or "
            f"train.adam_beta2); its fit and that budget's frontier inherit it" for r in regressions]


def training_findings(fits: dict) -> list[str]:
    """One sentence per training-compute fit with its goodness of fit, the reason it was skipped, or that
    the law does not fit its points (no value then); then any regressions."""
    out = []
    named = [(f"per-size fit, {f.get('label', w)}", f) for w, f in fits["per_size"].items()]
    named += [("compute-optimal envelope", fits["envelope"]),
              ("compute-optimal size N_opt = k C^a", fits["optimal_size"]),
              ("joint law E + A/N^alpha + B/D^beta", fits["chinchilla"])]
    for name, fit in named:
        if fit.get("skipped"):
            out.append(f"{name}: not fitted ({fit['reason']})")
            continue
        if not law_fits(fit):
            out.append(f"{name}: {not_fit_text(fit)}")
            continue
        ps = ", ".join(f"{k} = {num(v['value'])} {bracket(v['low'], v['high'])}"
                       for k, v in fit["params"].items())
        ds = ", ".join(f"{k} = {num(v['value'])} {bracket(v['low'], v['high'])}"
                       for k, v in fit["derived"].items())
        hits = fit.get("at_bound") or {}
        warn = (f"; {', '.join(f'{k} at its {side} search bound' for k, side in hits.items())}: "
                f"not determined by these points" if hits else "")
        out.append(f"{name}: {ps}" + (f"; {ds}" if ds else "")
                   + f" ({fit['n_points']} points, {fit['bootstrap']['valid']} valid resamples{warn}"
                   + (f"; {gof_summary(fit)})" if fit.get("gof") else ")"))
    return out + regression_findings(fits.get("regressions", []))


def frame_of(findings: dict[str, list[str]]) -> pd.DataFrame:
    """Findings as a two-column table (kind, text) for export and W&B."""
    return pd.DataFrame([(k, t) for k, ts in findings.items() for t in ts],
                        columns=["kind", "text"])
