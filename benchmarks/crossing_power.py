"""Crossing test: its false-crossing rate and power, against the end-gap intersection-union test;
and the coverage and width of a power-law fit's exponent interval.

    python benchmarks/crossing_power.py [--tables 40] [--null-tables 200] [--boot 200] [--fits 30]
    python benchmarks/crossing_power.py --tiny     # two tables per setting, a few fits: seconds

Power: the ladder of analysis.synthetic (FID_w(c) = F_w + G n_w / c, widths 16/32/64, true
crossings 7.5, 22.5 and 45), N(0, sigma) on every FID with fid_std recorded, each table analysed
in process as `study analyze` does (analysis.inference.analyze_metric); also the two-size family's
single and double crossings. Level: the family's ties and near-misses (analysis.synthetic
NEAR_MISSES). Each row: the share of tables whose pair the analysis calls a crossing, and the
share the end-gap intersection-union test finds on the analysis' own numbers (the pair's 95 %
intervals of the gap at the two ends of the overlap exclude zero on opposite sides); for found
crossings, the share of 95 % intervals holding the truth.
Fits: synthetic power laws (8 points over 3 decades, 2 % noise): the exponent's 95 % interval
against 3.92 x the estimator's spread over replicates, as shipped and with the noise level known.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit, interval
from analysis.batched import refit_batch
from analysis.fitting import HUBER_DELTA, fit_law
from analysis.inference import FINAL, analyze_metric
from analysis.laws import get_law
from analysis.synthetic import (FAMILY_CROSSINGS, LADDER_CROSSINGS, NEAR_MISSES, FamilySpec,
                                LadderSpec, family_table, ladder_table)
from analysis.table import normalize

LADDER_SETTINGS = [(0.5, (0,)), (1.0, (0,)), (1.0, (0, 1, 2)), (2.0, (0, 1, 2))]  # sigma, seeds
# sigma (fid_std; 0: none recorded), seeds, seed sd: the family's noise settings.
FAMILY_SETTINGS = [(0.3, (0,), 0.0), (1.0, (0,), 0.0), (1.0, (0, 1, 2), 0.0),
                   (0.0, (0, 1, 2), 0.3)]


def end_iut(row) -> bool:
    """The end-gap intersection-union test on a pair row: significant at both ends, opposite signs."""
    lo = (row.at_low_gap_low > 0) - (row.at_low_gap_high < 0)
    hi = (row.at_high_gap_low > 0) - (row.at_high_gap_high < 0)
    return bool(lo * hi < 0)


def _covered(truths: tuple[float, ...], lists: list[dict]) -> list[bool]:
    """Per listed crossing matched to a true one (in order): whether its interval holds it."""
    if len(lists) != len(truths):
        return []
    return [x["low"] <= t <= x["high"] for x, t in zip(lists, truths)]


def ladder_power(tables: int, boot: int) -> list[dict]:
    """Detection, end-IUT detection and coverage per (setting, pair) of the ladder."""
    out = []
    for sigma, seeds in LADDER_SETTINGS:
        acc: dict[tuple[int, int], dict] = {}
        for t in range(tables):
            res = analyze_metric(normalize(ladder_table(LadderSpec(fid_std=sigma, seeds=seeds), seed=t)),
                                 "fid", n_boot=boot, seed=t)
            pairs = res.pairs[res.pairs["budget"] == FINAL]
            for idx, row in zip(pairs.index, pairs.itertuples()):
                key = (row.smaller_width, row.larger_width)
                a = acc.setdefault(key, {"found": 0, "iut": 0, "iut_only": 0, "covered": []})
                found = row.verdict == "crossing"
                a["found"] += found
                a["iut"] += end_iut(row)
                a["iut_only"] += end_iut(row) and not found
                if found:
                    a["covered"] += [row.low <= LADDER_CROSSINGS[key] <= row.high]
        for key, a in acc.items():
            out.append({"sigma": sigma, "seeds": len(seeds), "pair": f"{key[0]}/{key[1]}",
                        "truth": LADDER_CROSSINGS[key], "tables": tables, **_shares(a, tables)})
    return out


def family_rates(kinds: tuple[str, ...], tables: int, boot: int) -> list[dict]:
    """Per (kind, setting) of the two-size family: share called crossing, end-IUT share, coverage."""
    out = []
    for kind in kinds:
        for sigma, seeds, seed_sd in FAMILY_SETTINGS:
            a = {"found": 0, "iut": 0, "iut_only": 0, "covered": [], "all_listed": 0}
            for t in range(tables):
                spec = FamilySpec(kind=kind, fid_std=sigma, seeds=seeds, seed_sd=seed_sd)
                res = analyze_metric(normalize(family_table(spec, seed=t)), "fid", n_boot=boot, seed=t)
                row = next(res.pairs.itertuples())
                found = row.verdict == "crossing"
                a["found"] += found
                a["iut"] += end_iut(row)
                a["iut_only"] += end_iut(row) and not found
                listed = res.crossing_lists[0]
                a["all_listed"] += bool(FAMILY_CROSSINGS[kind]) and len(listed) == len(FAMILY_CROSSINGS[kind])
                a["covered"] += _covered(FAMILY_CROSSINGS[kind], listed)
            out.append({"kind": kind, "sigma": sigma, "seeds": len(seeds), "seed_sd": seed_sd,
                        "tables": tables, **_shares(a, tables),
                        "all_listed": a["all_listed"] / tables})
    return out


def _shares(a: dict, tables: int) -> dict:
    cov = a["covered"]
    return {"found": a["found"] / tables, "iut": a["iut"] / tables, "iut_only": a["iut_only"],
            "coverage": float(np.mean(cov)) if cov else float("nan")}


def fit_widths(reps: int, boot: int) -> dict:
    """The exponent's 95 % interval over reps synthetic power laws: coverage and median width
    over 3.92 x the estimator's spread. Shipped: the residual bootstrap with Student-t mixing
    (analysis.bootstrap). Its parts, on the same fits: the same residuals without the t mixing
    (as if the noise level read from 5 residual degrees of freedom were exact), and the noise
    level known (each resample draws N(0, 2 %) around the fit: the oracle's width)."""
    law, sd = get_law("power"), 0.02
    truth = {"E": 20.0, "A": 2e7, "alpha": 0.35}  # as tests/analysis/test_coverage.py
    x = np.geomspace(1e16, 1e19, 8)
    clean = law.predict(truth, {"x": x})
    inits = law.grid()[::7]
    est, bounds = [], {"shipped": [], "no t mixing": [], "noise known": []}
    for r in range(reps):
        y = clean * np.exp(np.random.default_rng(r).normal(0.0, sd, x.size))
        res = bootstrap_fit(law, [x], y, n_boot=boot, seed=r, inits=inits)
        est.append(res["params"]["alpha"]["value"])
        bounds["shipped"].append((res["params"]["alpha"]["low"], res["params"]["alpha"]["high"]))
        fit, data = fit_law(law, [x], y, inits=inits)
        pred, _ = law.log_predict(fit.theta, data.u)
        rng = np.random.default_rng(10_000 + r)
        resid = data.v - pred
        resid = (resid - resid.mean()) * np.sqrt(x.size / (x.size - len(law.params)))
        targets = {"no t mixing": pred + resid[rng.integers(0, x.size, (boot, x.size))],
                   "noise known": pred + rng.normal(0.0, sd, (boot, x.size))}
        for name, v in targets.items():
            thetas, _ = refit_batch(law, data, fit.theta, np.ones((boot, x.size)), HUBER_DELTA, v=v)
            alphas = [law.to_public(th, data.shift_x, data.shift_y)["alpha"] for th in thetas]
            bounds[name].append(interval(np.array(alphas)))
    spread = 3.92 * float(np.std(est))
    out = []
    for name, b in bounds.items():
        lo, hi = np.array(b).T
        held = (lo <= truth["alpha"]) & (truth["alpha"] <= hi)
        out.append({"resamples": name, "coverage": float(np.mean(held)),
                    "width_ratio": f"{np.median(hi - lo) / spread:.2f}x"})
    return {"reps": reps, "rows": out}


def _table(rows: list[dict], cols: list[str]) -> str:
    """A markdown table of rows' cols."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c, r[c]) for c in cols) + " |")
    return "\n".join(lines)


SHARES = ("found", "iut", "all_listed", "coverage")


def _cell(col: str, v) -> str:
    """Shares as percentages, other values as they are."""
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    return f"{v:.0%}" if col in SHARES else f"{v:g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=40, help="tables per power setting")
    ap.add_argument("--null-tables", type=int, default=200, help="tables per no-crossing setting")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples (study analyze's default)")
    ap.add_argument("--fits", type=int, default=30, help="power-law replicates for the fit intervals")
    ap.add_argument("--tiny", action="store_true", help="two tables per setting and 3 fits: seconds")
    args = ap.parse_args(argv)
    if args.tiny:
        args.tables, args.null_tables, args.boot, args.fits = 2, 2, 50, 3
    t0 = time.time()
    power = ladder_power(args.tables, args.boot)
    print("## Power: the ladder (truth 7.5, 22.5, 45)\n")
    print(_table(power, ["sigma", "seeds", "pair", "truth", "tables", "found", "iut", "iut_only",
                         "coverage"]))
    family = family_rates(("once", "twice"), args.tables, args.boot)
    print("\n## Power: the family's single and double crossings\n")
    print(_table(family, ["kind", "sigma", "seeds", "seed_sd", "tables", "found", "iut",
                          "all_listed", "coverage"]))
    level = family_rates(NEAR_MISSES, args.null_tables, args.boot)
    print("\n## Level: ties and near-misses (every crossing found is false)\n")
    print(_table(level, ["kind", "sigma", "seeds", "seed_sd", "tables", "found", "iut"]))
    fits = fit_widths(args.fits, 100 if not args.tiny else 20)
    print(f"\n## Fits: the power law's exponent, {fits['reps']} replicates\n")
    print(_table(fits["rows"], ["resamples", "coverage", "width_ratio"]))
    worst = max((r["found"] for r in level), default=0.0)
    short = [r for r in power + family if r["found"] < r["iut"]]
    print(f"\nworst false-crossing rate {worst:.1%}; settings below the end-gap test's power: "
          f"{len(short)}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
