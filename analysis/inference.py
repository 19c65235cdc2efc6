"""Inference-budget analysis: quality against sampling cost per size, the frontier across
sizes, the best size per budget and the crossovers between every pair of sizes.

Done per metric (FID: lower is better; alignment: higher is better), per sampler and per
training budget: "final" takes each width at its largest train_images (the headline),
and each train_images value shared by two or more widths is analysed on its own too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.crossovers import METHOD as CROSS_METHOD
from analysis.crossovers import compare_pair
from analysis.frontier import best_size_table, frontier
from analysis.progress import track
from analysis.resample import METHOD as RESAMPLE_METHOD
from analysis.resample import has_noise, resample_curve
from analysis.table import LOWER_IS_BETTER, cells, curves, headline

FINAL = "final"


@dataclass
class InferenceResult:
    """Curves, frontier, best sizes and pairwise comparisons of one metric."""

    metric: str
    lower_is_better: bool
    noisy: bool
    curves: pd.DataFrame  # every budget; column `budget`
    frontier: pd.DataFrame
    best_size: pd.DataFrame
    pairs: pd.DataFrame  # one row per (sampler, budget, pair), crossing or not
    # How crossings, ties and intervals were computed, in words the report can print.
    method: str = f"{CROSS_METHOD}; {RESAMPLE_METHOD}"
    # Row index of `pairs` -> every crossing of that pair (cost, low, high, interp_error).
    crossing_lists: dict = field(default_factory=dict)

    def crossing(self, budget: str = FINAL) -> pd.DataFrame:
        """Pairs whose curves cross beyond the tie tolerance, at one budget."""
        p = self.pairs
        if p.empty:
            return p
        return p[(p["budget"] == budget) & p["crossover_cost"].notna()]

    def crossing_rows(self, budget: str = FINAL) -> pd.DataFrame:
        """One row per crossing (a pair crossing twice gives two), with its interval."""
        p = self.pairs
        cols = ["metric", "sampler", "budget", "smaller_width", "larger_width", "smaller_params",
                "larger_params", "index", "cost", "low", "high", "interp_error", "p_cross"]
        rows = [{**{c: getattr(r, c) for c in cols[:7]}, "index": i + 1, **x,
                 "p_cross": r.p_cross}
                for r in (p[p["budget"] == budget].itertuples() if len(p) else [])
                for i, x in enumerate(self.crossing_lists.get(r.Index, []))]
        return pd.DataFrame(rows, columns=cols)


def _budgets(curve_df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    out = [(FINAL, headline(curve_df))]
    shared = curve_df.groupby("train_images")["width"].nunique()
    for d in sorted(shared[shared >= 2].index):
        out.append((str(int(d)), curve_df[curve_df["train_images"] == d]))
    return out


def _pair_rows(sub: pd.DataFrame, boot: np.ndarray, lower: bool, noisy: bool
               ) -> list[tuple[dict, list[dict]]]:
    rows = []
    sizes = sub.groupby("width")["params"].first().sort_values()
    for small, large in itertools.combinations(sizes.index, 2):
        ms, ml = (sub["width"] == small).to_numpy(), (sub["width"] == large).to_numpy()
        res = compare_pair(sub["sampling_cost"].to_numpy(float)[ms], sub["value"].to_numpy()[ms],
                           boot[:, ms], sub["sampling_cost"].to_numpy(float)[ml],
                           sub["value"].to_numpy()[ml], boot[:, ml], lower, noisy)
        if res is None:
            continue
        gaps = res.pop("gaps")
        listed = res.pop("crossing_list")
        row = {"smaller_width": int(small), "larger_width": int(large),
               "smaller_params": int(sizes[small]), "larger_params": int(sizes[large]), **res,
               "method": CROSS_METHOD}
        for name, g in zip(("at_low", "at_high"), gaps):
            row.update({f"{name}_cost": g["cost"], f"{name}_gap": g["gap"],
                        f"{name}_gap_low": g["low"], f"{name}_gap_high": g["high"]})
        rows.append((row, listed))
    return rows


def analyze_metric(table: pd.DataFrame, metric: str, n_boot: int = 200, seed: int = 0,
                   progress: bool = False) -> InferenceResult | None:
    """The full inference-budget analysis of one metric; None when the table lacks it."""
    cell_df = cells(table, metric)
    if cell_df.empty:
        return None
    lower = LOWER_IS_BETTER[metric]
    noisy = has_noise(cell_df) and n_boot > 0  # no resamples, no intervals
    rng = np.random.default_rng(seed)
    all_curves = curves(cell_df)
    groups = [(s, b, sub) for s in pd.unique(all_curves["curve"])
              for b, sub in _budgets(all_curves[all_curves["curve"] == s])]
    curve_parts, fronts, bests, pairs, lists = [], [], [], [], []
    for sampler, budget, sub in track(groups, len(groups), f"crossovers {metric}", progress):
        sub = sub.reset_index(drop=True)
        cell_sub = cell_df.merge(sub[["width", "train_images", "curve", "steps"]])
        boot = resample_curve(sub, cell_sub, n_boot, rng)
        tag = {"metric": metric, "sampler": sampler, "budget": budget}
        curve_parts.append(sub.assign(**tag))
        best = best_size_table(sub, lower, boot if noisy else None)
        # Each frontier point is a budget of the best-size table: it carries that budget's ties.
        ties = best[["cost_budget", "tied_widths", "tied_label"]].drop_duplicates("cost_budget")
        fronts.append(frontier(sub, lower).merge(
            ties, left_on="sampling_cost", right_on="cost_budget", how="left").drop(
            columns="cost_budget").assign(**tag))
        bests.append(best.assign(**tag))
        for r, listed in _pair_rows(sub, boot, lower, noisy):
            pairs.append({**tag, **r})
            lists.append(listed)
    return InferenceResult(metric=metric, lower_is_better=lower, noisy=noisy,
                           curves=_tag_first(curve_parts), frontier=_tag_first(fronts),
                           best_size=_tag_first(bests), pairs=pd.DataFrame(pairs),
                           crossing_lists=dict(enumerate(lists)))


def _tag_first(parts: list[pd.DataFrame]) -> pd.DataFrame:
    # One table per metric; `curve` duplicates `sampler` once tagged.
    frame = pd.concat(parts, ignore_index=True).drop(columns=["curve"], errors="ignore")
    tags = ["metric", "sampler", "budget"]
    return frame[tags + [c for c in frame.columns if c not in tags]]


def optimal_guidance(table: pd.DataFrame) -> pd.DataFrame:
    """FID-best guidance per (sampler, width, steps) at the final budget, mean over seeds."""
    c = curves(cells(table, "fid"))
    return headline(c)[["curve", "width", "params", "steps", "guidance"]].rename(
        columns={"curve": "sampler"})
