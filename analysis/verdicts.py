"""What a claim checker is made of: the Evidence it reads, the @claim registry, and the shared tests of a
verdict (differences with intervals, who wins the cheap end of a pair of curves).

A checker reads the `Evidence` of one analysis (the results table and what the analysis
computed from it) and returns `(found, verdict, resolve)`, or None when the run does not include
its experiment. The checkers live with their experiment's analysis (analysis/experiments/<name>.py), one
function each; analysis.claims runs them all.
Intervals are 95 %: bootstrap intervals where the analysis has them, otherwise +-1.96 standard
errors of the evaluation noise (and of the seed spread where several seeds were trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from analysis.findings import bracket, num
from analysis.frontier import winner_ranges
from analysis.inference import FINAL, InferenceResult
from analysis.table import size_label

REPRODUCED, CONTRADICTED, UNRESOLVED = "reproduced", "contradicted", "not resolved at this scale"
# The models a claim compares are below their own trivial baseline (a distilled student worse than its teacher at
# equal UNet calls, super-resolution worse than bicubic, DreamBooth at the plain-class end): no verdict rests on them.
UNDERTRAINED = "not resolved: under-trained"
Z = 1.96  # two-sided 95 % normal quantile


@dataclass
class Evidence:
    """Everything a claim checker may read: the table and the analysis of it."""

    table: pd.DataFrame  # every row of the results table
    base: pd.DataFrame  # rows of the base experiment (the ladder itself)
    pts: pd.DataFrame = field(default_factory=pd.DataFrame)  # FID per (size, budget) at the reference cell
    ref: dict = field(default_factory=dict)  # the reference sampler and steps of the training-compute analysis
    fits: dict = field(default_factory=dict)  # analysis.training.fit_training
    results: dict[str, InferenceResult] = field(default_factory=dict)  # base experiment, per metric
    experiments: dict[str, dict[str, InferenceResult]] = field(default_factory=dict)
    # A derived experiment's own analysis (analysis/experiments/<name>.py: analyze()), by experiment name.
    analyses: dict[str, dict] = field(default_factory=dict)


@dataclass
class Checker:
    """One claim of the paper and the function that checks it."""

    key: str
    experiment: str
    title: str
    paper: str  # the claim in one line, with where the paper shows it
    check: Callable[[Evidence], tuple[str, str, str] | None]
    anchor: str  # the report section holding the figure behind it


CLAIMS: list[Checker] = []


def claim(key: str, experiment: str, title: str, paper: str, anchor: str):
    """Register a checker of one paper claim (decorator)."""
    def register(fn):
        CLAIMS.append(Checker(key, experiment, title, paper, fn, anchor))
        return fn
    return register


# ---------------------------------------------------------------- helpers shared by checkers

def _more_data(table: pd.DataFrame) -> str:
    """What narrows an interval here: the sample count per FID and the number of seeds."""
    n = int(table["num_samples"].max()) if "num_samples" in table and table["num_samples"].notna().any() else None
    seeds = int(table["seed"].nunique()) if "seed" in table else 1
    return (f"more samples per FID (eval.num_samples{f', now {n}' if n else ''}) or more training seeds "
            f"(sweep.seeds, now {seeds})")


def _sd(row) -> float:
    """Standard error of one curve point: evaluation noise plus the seed spread of its mean."""
    std = float(row["std"]) if pd.notna(row.get("std")) else 0.0
    seed_sd, n = row.get("seed_sd"), row.get("n_seeds", 1)
    seed_var = float(seed_sd) ** 2 / max(int(n), 1) if pd.notna(seed_sd) else 0.0
    sd = math.sqrt(std ** 2 + seed_var)
    return sd if sd > 0 else float("nan")


def _diff(a: float, sa: float, b: float, sb: float) -> tuple[float, float, float]:
    """a - b with a 95 % interval from the two standard errors (NaN bounds without noise)."""
    sd = math.hypot(sa, sb)
    return a - b, a - b - Z * sd, a - b + Z * sd


def _sign(lo: float, hi: float) -> int:
    """+1 / -1 when the interval excludes zero on that side, 0 when it includes it or is missing."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _final(res: InferenceResult, what: str) -> pd.DataFrame:
    frame = getattr(res, what)
    return frame[frame["budget"] == FINAL] if len(frame) else frame


def pair_verdict(row) -> str:
    """'crossing' / 'no evidence of crossing' / 'tied within noise' for one pair of sizes: the
    analysis's own verdict where it gives one, else from the share of resamples that cross."""
    v = getattr(row, "verdict", None)
    if isinstance(v, str) and v:
        return v
    if not math.isfinite(row.crossover_cost):
        return "no evidence of crossing"
    p = row.p_cross
    return "crossing" if math.isfinite(p) and p >= 0.95 else "no evidence of crossing"


def _low_end(pairs: pd.DataFrame) -> tuple[str, str]:
    """Who wins at the cheap end of each pair's shared costs: ('small' | 'large' | 'noise' |
    'no interval', the strongest example as a sentence)."""
    if pairs.empty:
        return "noise", ""
    lo, hi = pairs["at_low_gap_low"].to_numpy(float), pairs["at_low_gap_high"].to_numpy(float)
    signs = np.array([_sign(a, b) for a, b in zip(lo, hi)])
    if (signs > 0).any():
        row = pairs.iloc[int(np.nanargmax(np.where(signs > 0, lo, -np.inf)))]
        kind = "small"
    elif len(signs) and (signs < 0).all():
        row, kind = pairs.iloc[int(np.nanargmin(hi))], "large"
    else:
        row = pairs.iloc[int(np.nanargmax(pairs["at_low_gap"].to_numpy(float)))]
        kind = "noise" if np.isfinite(lo).any() else "no interval"
    small, large = size_label(row.smaller_params), size_label(row.larger_params)
    gap, a, b = row.at_low_gap, row.at_low_gap_low, row.at_low_gap_high
    who, other, d, a, b = (small, large, gap, a, b) if gap > 0 else (large, small, -gap, -b, -a)
    return kind, f"at cost {num(row.at_low_cost)} the {who} model beats the {other} by {num(d)} {bracket(a, b)}"


def _best_sizes(res: InferenceResult, sampler: str) -> str:
    best = _final(res, "best_size")
    parts = []
    for r in winner_ranges(best[best["sampler"] == sampler]):
        upto = f"up to {num(r['to_cost'])}" if r["to_cost"] is not None else "above"
        parts.append(f"{r.get('label') or size_label(r['params'])} {upto}")  # label: "A ~ B" when tied
    return ", ".join(parts)


def _crossing_text(pairs: pd.DataFrame, steps_of_larger: bool = False) -> str:
    rows = [r for r in pairs.itertuples() if pair_verdict(r) == "crossing"]
    if not rows:
        return "no crossing beyond noise"
    r = rows[0]
    text = (f"{size_label(r.smaller_params)}/{size_label(r.larger_params)} cross at cost "
            f"{num(r.crossover_cost)} {bracket(r.low, r.high)}")
    if steps_of_larger and "larger_nc" in pairs:
        text += f" (~{num(r.crossover_cost / r.larger_nc)} steps of the larger)"
    more = f" and {len(rows) - 1} more crossing(s)" if len(rows) > 1 else ""
    return text + more


def tradeoff_by_sampler(res: InferenceResult, samplers: list[str] | None = None,
                        steps_of_larger: bool = False, brief: bool = False) -> list[tuple[str, str, str]]:
    """Per sampler: (sampler, who wins the cheap end: 'small' | 'large' | 'noise' | 'no interval',
    a sentence with the strongest example and, unless brief, the best size per budget and the crossings)."""
    pairs = _final(res, "pairs")
    samplers = samplers or list(pd.unique(pairs["sampler"]))
    if steps_of_larger:
        nc = res.curves.groupby("width")["normalized_cost"].first()
        pairs = pairs.assign(larger_nc=pairs["larger_width"].map(nc))
    out = []
    for s in samplers:
        sp = pairs[pairs["sampler"] == s]
        kind, example = _low_end(sp)
        text = f"{s}: {example}" if brief else (f"{s}: {example}; best size {_best_sizes(res, s)}; "
                                                f"{_crossing_text(sp, steps_of_larger)}")
        out.append((s, kind, text))
    return out


def tradeoff_verdict(rows: list[tuple[str, str, str]], table: pd.DataFrame,
                     need_all: bool = False) -> tuple[str, str, str]:
    """Reproduced when a smaller size wins the cheap end beyond noise (for every sampler if
    need_all), contradicted when larger sizes win it beyond noise (for every sampler, or for any
    one if need_all), else not resolved."""
    kinds = [k for _, k, _ in rows]
    found = ". ".join(t for *_, t in rows)
    if (all if need_all else any)(k == "small" for k in kinds):
        return found, REPRODUCED, ""
    if (any if need_all else all)(k == "large" for k in kinds):
        return found, CONTRADICTED, ""
    why = ("the table has no evaluation std and one seed: record fid_std or train 2+ seeds"
           if "no interval" in kinds else _more_data(table))
    return found, UNRESOLVED, why


def cost_tradeoff(res: InferenceResult | None, table: pd.DataFrame, samplers: list[str] | None = None,
                  steps_of_larger: bool = False) -> tuple[str, str, str] | None:
    """Do smaller sizes beat larger ones at low sampling cost, beyond noise? One verdict."""
    if res is None or res.pairs.empty:
        return None
    return tradeoff_verdict(tradeoff_by_sampler(res, samplers, steps_of_larger), table)


def size_order(res: InferenceResult | None, table: pd.DataFrame, sampler: str | None = None,
               higher_is_better: bool = False) -> tuple[str, str, str] | None:
    """At the most steps evaluated, is the largest size better than the smallest, beyond noise?"""
    if res is None:
        return None
    cur = _final(res, "curves")
    sampler = sampler if sampler in set(cur["sampler"]) else (cur["sampler"].iloc[0] if len(cur) else None)
    cur = cur[cur["sampler"] == sampler]
    if cur["params"].nunique() < 2:
        return None
    steps = cur.groupby("width")["steps"].max().min()  # the most steps every size has
    at = cur[cur["steps"] == steps].sort_values("params")
    if at["params"].nunique() < 2:
        return None
    small, large = at.iloc[0], at.iloc[-1]
    d, lo, hi = _diff(small["value"], _sd(small), large["value"], _sd(large))
    if higher_is_better:
        d, lo, hi = -d, -hi, -lo
    values = ", ".join(f"{size_label(r.params)} {num(r.value)}" for r in at.itertuples())
    found = (f"{sampler}, {int(steps)} steps, final checkpoints: {values}; the largest beats the smallest by "
             f"{num(d)} {bracket(lo, hi)}")
    sign = _sign(lo, hi)
    if sign > 0:
        return found, REPRODUCED, ""
    if sign < 0:
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, _more_data(table)
