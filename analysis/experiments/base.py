"""The base experiment's claims (the ladder itself): training compute, model size, sampling cost and samplers.
Its figures and tables are the analysis package's own (analysis.pipeline)."""

from __future__ import annotations

import math

import pandas as pd

from analysis.verdicts import (CONTRADICTED, REPRODUCED, UNRESOLVED, Evidence, _diff, _more_data, _sign,
                             claim, cost_tradeoff, size_order,
                             tradeoff_by_sampler, tradeoff_verdict)
from analysis.findings import bracket, num
from analysis.gof import fits, gof_summary, not_fit_text
from analysis.readable import undetermined
from analysis.table import size_label


@claim("training_compute", "base", "Quality vs training compute",
       "FID improves steadily as training compute grows, for every model size (Fig. 2).", "training")
def training_compute(ev: Evidence):
    if ev.pts.empty:
        return None
    rows = []
    for _, g in ev.pts.sort_values("train_flops").groupby("width"):
        if len(g) < 2:
            continue
        first, last = g.iloc[0], g.iloc[-1]
        sd = lambda r: float(r["std"]) if pd.notna(r["std"]) and r["std"] > 0 else float("nan")  # noqa: E731
        d, lo, hi = _diff(first["fid"], sd(first), last["fid"], sd(last))
        rows.append((size_label(first["params"]), first, last, d, lo, hi))
    if not rows:
        return None
    signs = [_sign(lo, hi) for *_, lo, hi in rows]
    better = sum(s > 0 for s in signs)
    label, first, last, d, lo, hi = max(rows, key=lambda r: r[3])
    found = (f"FID fell beyond noise for {better} of {len(rows)} sizes (e.g. {label}: {num(first['fid'])} -> "
             f"{num(last['fid'])}, {num(d)} {bracket(lo, hi)} better over "
             f"{num(last['train_flops'] / first['train_flops'])}x compute)")
    env = ev.fits.get("envelope", {})
    law = f"the power law E + A C^-alpha on the {env.get('n_points')} compute-optimal points"
    if not env.get("skipped", True) and not fits(env):
        found += f"; the compute-optimal envelope ({law}): {not_fit_text(env)}"
    elif not env.get("skipped", True) and "alpha" not in undetermined(env):
        a = env["params"]["alpha"]
        found += (f"; the compute-optimal envelope falls as C^-alpha, alpha = {num(a['value'])} "
                  f"{bracket(a['low'], a['high'])} ({law}, {gof_summary(env)})")
    rose = ev.fits.get("regressions", [])
    if rose:
        found += "; FID rose late for " + ", ".join(size_label(r["params"]) for r in rose) + " (see the details)"
    if all(math.isnan(lo) for *_, lo, _ in rows):
        return found, UNRESOLVED, "the table has no evaluation std and one seed: record fid_std or train 2+ seeds"
    if better == len(rows):
        return found, REPRODUCED, ""
    if sum(s < 0 for s in signs) * 2 >= len(rows):
        return found, CONTRADICTED, ""
    return found, UNRESOLVED, f"longer training (more train.milestones) or {_more_data(ev.base)}"


@claim("model_size", "base", "Bigger is better at equal training",
       "At the same training length and many sampling steps, larger models reach lower FID "
       "(Table 1: 25.3 at 39M to 20.1 at 5B, DDIM 50 steps).", "fid_steps")
def model_size(ev: Evidence):
    return size_order(ev.results.get("fid"), ev.base, ev.ref.get("sampler"))


@claim("sampling_cost", "base", "Quality vs sampling cost",
       "Under a fixed sampling budget (normalized cost x steps) smaller models often beat larger ones; "
       "the best size grows with the budget (Figs. 5-6).", "fid_cost")
def sampling_cost(ev: Evidence):
    res = ev.results.get("fid")
    return cost_tradeoff(res, ev.base, [ev.ref["sampler"]] if ev.ref.get("sampler") else None)


@claim("samplers", "base", "Samplers",
       "The small-model advantage at low sampling cost holds for every sampler: DDIM, DDPM, "
       "DPM-Solver++ (Fig. 7).", "samplers")
def samplers(ev: Evidence):
    res = ev.results.get("fid")
    if res is None or res.pairs.empty or res.pairs["sampler"].nunique() < 2:
        return None
    # One sampler against the paper is enough to contradict "every sampler"; all must agree to reproduce.
    return tradeoff_verdict(tradeoff_by_sampler(res, brief=True), ev.base, need_all=True)
