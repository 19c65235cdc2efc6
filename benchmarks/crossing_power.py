"""Crossing test: its false-crossing rate and power, against the end-gap intersection-union test;
and the coverage and width of a power-law fit's exponent interval.

    python benchmarks/crossing_power.py [--tables 200] [--null-tables 2000] [--boot 200] [--fits 30]
    python benchmarks/crossing_power.py --tiny     # a few tables per setting: seconds
    # resumable and split: each shard appends its tables to DIR; any run with DIR prints what is there
    python benchmarks/crossing_power.py --cache DIR --shard 0/2 & ... --cache DIR --shard 1/2

Every table is read as `study analyze` reads it: analysis.synthetic.pair_results, which gives
analyze_metric's pair rows exactly (200 resamples) at a seventeenth of its cost.
Power: the ladder of analysis.synthetic (FID_w(c) = F_w + G n_w / c, widths 16/32/64, true
crossings 7.5, 22.5 and 45), N(0, sigma) on every FID with fid_std recorded; and the two-size
family's single and double crossings. Level: the family's ties and near-misses (NEAR_MISSES),
where every crossing found is false. Each row: the share of tables whose pair the analysis calls a
crossing, and the share the end-gap intersection-union test finds on the same numbers
(analysis.crossing_test.end_gap_test); for found crossings, the share of 95 % intervals holding
the truth. The level's claim: the 95 % Clopper-Pearson interval's upper bound of every no-crossing
setting's false rate is at most 5 %.
Fits: synthetic power laws (8 points over 3 decades, 2 % noise): the exponent's 95 % interval
against 3.92 x the estimator's spread over replicates, as shipped and with parts removed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from analysis.bootstrap import bootstrap_fit, interval
from analysis.batched import refit_batch
from analysis.crossing_test import end_gap_test
from analysis.fitting import HUBER_DELTA, fit_law
from analysis.laws import get_law
from analysis.synthetic import (FAMILY_CROSSINGS, LADDER_CROSSINGS, NEAR_MISSES, FamilySpec,
                                LadderSpec, family_table, ladder_table, pair_results)

LEVEL = 0.05  # the false-crossing rate the test must hold
LADDER_SETTINGS = [(0.5, (0,)), (1.0, (0,)), (1.0, (0, 1, 2)), (2.0, (0, 1, 2))]  # sigma, seeds
# sigma (fid_std; 0: none recorded), seeds, seed sd: the family's noise settings.
FAMILY_SETTINGS = [(0.3, (0,), 0.0), (1.0, (0,), 0.0), (1.0, (0, 1, 2), 0.0),
                   (0.0, (0, 1, 2), 0.3)]


def settings(tables: int, null_tables: int, boot: int) -> list[dict]:
    """Every setting of the benchmark: section, its spec, the number of tables and of resamples."""
    out = [{"section": "ladder", "kind": "ladder", "sigma": s, "seeds": seeds, "seed_sd": 0.0,
            "tables": tables, "boot": boot} for s, seeds in LADDER_SETTINGS]
    for section, kinds, n in (("family", ("once", "twice"), tables), ("level", NEAR_MISSES, null_tables)):
        out += [{"section": section, "kind": k, "sigma": s, "seeds": seeds, "seed_sd": sd, "tables": n,
                 "boot": boot} for k in kinds for s, seeds, sd in FAMILY_SETTINGS]
    return out


def _key(st: dict) -> str:
    """A setting's name in the cache (the resamples' count with it: records of other counts are not mixed in)."""
    return f"{st['kind']}|{st['sigma']}|{len(st['seeds'])}|{st['seed_sd']}|{st['boot']}"


def one_table(st: dict, t: int) -> dict:
    """Per pair of table t of a setting: found, end-gap test, crossings listed, intervals holding the truth."""
    if st["kind"] == "ladder":
        table, truths = ladder_table(LadderSpec(fid_std=st["sigma"], seeds=st["seeds"]), seed=t), None
    else:
        spec = FamilySpec(kind=st["kind"], fid_std=st["sigma"], seeds=st["seeds"], seed_sd=st["seed_sd"])
        table, truths = family_table(spec, seed=t), FAMILY_CROSSINGS[st["kind"]]
    out = {}
    for (ws, wl), res in pair_results(table, np.random.default_rng(t), st["boot"]).items():
        truth = truths if truths is not None else (LADDER_CROSSINGS[(ws, wl)],)
        listed = res["crossing_list"]
        # Listed crossings matched to the true ones in order, when there are as many.
        covered = [bool(x["low"] <= c <= x["high"]) for x, c in zip(listed, truth)] \
            if len(listed) == len(truth) else []
        out[f"{ws}/{wl}"] = {"found": bool(res["verdict"] == "crossing"), "iut": bool(end_gap_test(res["gaps"])),
                             "listed": len(listed), "covered": covered}
    return out


def run_shard(todo: list[dict], shard: tuple[int, int], cache: Path | None, done: dict) -> None:
    """Read this shard's missing tables (t % n == k), each appended to the cache as it is read (a killed
    shard keeps what it read; rerun it to go on)."""
    k, n = shard
    path = cache / f"shard-{k}-of-{n}.jsonl" if cache else None
    for st in todo:
        key = _key(st)
        have = done.setdefault(key, {})
        for t in range(k, st["tables"], n):
            if str(t) in have:
                continue
            have[str(t)] = rec = one_table(st, t)
            if path:
                with path.open("a") as f:  # a line of its own even after a line a kill cut short
                    f.write("\n" + json.dumps({"setting": key, "t": t, "pairs": rec}))


def load(cache: Path | None) -> dict:
    """Records already read: {setting: {t: pairs}}, from every shard's file in the cache."""
    done: dict = {}
    for path in sorted(cache.glob("shard-*.jsonl")) if cache and cache.is_dir() else []:
        for line in filter(None, path.read_text().splitlines()):
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a kill: that table is read again
                continue
            done.setdefault(rec["setting"], {})[str(rec["t"])] = rec["pairs"]
    return done


def rows(sts: list[dict], done: dict) -> list[dict]:
    """One row per (setting, pair) over the first `tables` tables of each setting."""
    out = []
    for st in sts:
        recs = [done.get(_key(st), {}).get(str(t)) for t in range(st["tables"])]
        recs = [r for r in recs if r is not None]
        for pair in sorted(recs[0], key=lambda p: tuple(map(int, p.split("/")))) if recs else []:
            rs = [r[pair] for r in recs]
            n, found, iut = len(rs), sum(r["found"] for r in rs), sum(r["iut"] for r in rs)
            truths = (LADDER_CROSSINGS[tuple(map(int, pair.split("/")))],) if st["kind"] == "ladder" \
                else FAMILY_CROSSINGS[st["kind"]]
            cov = [c for r in rs for c in r["covered"]]
            lo, hi = stats.binomtest(found, n).proportion_ci(0.95, method="exact")
            out.append({"kind": st["kind"], "sigma": st["sigma"], "seeds": len(st["seeds"]),
                        "seed_sd": st["seed_sd"], "pair": pair, "truth": ", ".join(f"{c:g}" for c in truths),
                        "tables": n, "found": found / n, "iut": iut / n,
                        "iut_only": sum(r["iut"] and not r["found"] for r in rs),
                        "all_listed": sum(r["listed"] == len(truths) > 0 for r in rs) / n,
                        "coverage": float(np.mean(cov)) if cov else float("nan"),
                        "false": f"{found}/{n}", "ci": f"{lo:.1%}-{hi:.1%}", "upper": hi,
                        "complete": n == st["tables"]})
    return out


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
    spread = 3.92 * float(np.std(est, ddof=1))
    out = []
    for name, b in bounds.items():
        lo, hi = np.array(b).T
        held = (lo <= truth["alpha"]) & (truth["alpha"] <= hi)
        out.append({"resamples": name, "coverage": float(np.mean(held)),
                    "width_ratio": f"{np.median(hi - lo) / spread:.2f}x"})
    # The yardstick: an exact Student-t interval of a linear model with Gaussian noise, its noise
    # level read from the same 5 degrees of freedom, is t(5)/z x E[s]/sigma = 1.31 x 0.95 = 1.24x.
    dof = x.size - len(law.params)
    out.append({"resamples": f"exact t interval, {dof} dof (yardstick)", "coverage": 0.95,
                "width_ratio": f"{stats.t.ppf(0.975, dof) / stats.norm.ppf(0.975) * _c4(dof):.2f}x"})
    return {"reps": reps, "spread_error": 1 / np.sqrt(2 * (reps - 1)), "rows": out}


def _c4(dof: int) -> float:
    """E[s] / sigma for a variance read from dof degrees of freedom."""
    from scipy.special import gammaln

    return float(np.sqrt(2 / dof) * np.exp(gammaln((dof + 1) / 2) - gammaln(dof / 2)))


def _table(rows_: list[dict], cols: list[str]) -> str:
    """A markdown table of rows' cols."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows_:
        lines.append("| " + " | ".join(_cell(c, r[c]) for c in cols) + " |")
    return "\n".join(lines)


SHARES = ("found", "iut", "all_listed", "coverage")


def _cell(col: str, v) -> str:
    """Shares as percentages, other values as they are."""
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"
    if col in SHARES:
        return f"{v:.1%}" if 0 < v < 0.1 else f"{v:.0%}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=200, help="tables per crossing setting")
    ap.add_argument("--null-tables", type=int, default=2000,
                    help="tables per no-crossing setting: enough for the rate's upper bound to show 5 %%")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples (study analyze's default)")
    ap.add_argument("--fits", type=int, default=30, help="power-law replicates for the fit intervals")
    ap.add_argument("--shard", default="0/1", help="K/N: read tables t with t %% N == K (with --cache)")
    ap.add_argument("--cache", type=Path, help="folder of per-table records: a rerun resumes, shards combine")
    ap.add_argument("--tiny", action="store_true", help="a few tables per setting and 3 fits: seconds")
    args = ap.parse_args(argv)
    if args.tiny:
        args.tables, args.null_tables, args.boot, args.fits = 2, 4, 50, 3
    try:
        k, n = (int(x) for x in args.shard.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        ap.error(f"--shard {args.shard!r}: expected K/N with 0 <= K < N, e.g. 0/2")
    if n > 1 and args.cache is None:
        ap.error("--shard needs --cache DIR: the shards' tables meet there")
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sts = settings(args.tables, args.null_tables, args.boot)
    done = load(args.cache)
    run_shard(sts, (k, n), args.cache, done)
    done = load(args.cache) if args.cache else done
    fits = None
    fits_path = args.cache / "fits.json" if args.cache else None
    if fits_path and fits_path.exists():
        fits = json.loads(fits_path.read_text())
    elif k == 0:
        fits = fit_widths(args.fits, 100 if not args.tiny else 20)
        if fits_path:
            fits_path.write_text(json.dumps(fits))
    out = {s: rows([st for st in sts if st["section"] == s], done) for s in ("ladder", "family", "level")}
    missing = sum(str(t) not in done.get(_key(st), {}) for st in sts for t in range(st["tables"]))
    print("## Power: the ladder\n")
    print(_table(out["ladder"], ["sigma", "seeds", "pair", "truth", "tables", "found", "iut", "iut_only",
                                 "coverage"]))
    print("\n## Power: the family's single and double crossings\n")
    print(_table(out["family"], ["kind", "sigma", "seeds", "seed_sd", "truth", "tables", "found", "iut",
                                 "iut_only", "all_listed", "coverage"]))
    print("\n## Level: ties and near-misses (every crossing found is false)\n")
    print(_table(out["level"], ["kind", "sigma", "seeds", "seed_sd", "tables", "false", "found", "ci", "iut"]))
    if fits:
        print(f"\n## Fits: the power law's exponent, {fits['reps']} replicates\n")
        print(_table(fits["rows"], ["resamples", "coverage", "width_ratio"]))
        print(f"\n(the spread over {fits['reps']} replicates is itself uncertain by about "
              f"{fits['spread_error']:.0%}, and every width ratio with it)")
    worst = max(out["level"], key=lambda r: r["upper"], default=None)
    power = out["ladder"] + out["family"]
    short = [r for r in power if r["found"] < r["iut"]]
    if worst:
        print(f"\nlevel: highest false rate {max(r['found'] for r in out['level']):.1%}; highest 95 % "
              f"Clopper-Pearson upper bound {worst['upper']:.1%} ({worst['kind']}, sigma {worst['sigma']:g}, "
              f"{worst['seeds']} seeds, seed sd {worst['seed_sd']:g}): "
              f"{'every upper bound at most 5 %' if worst['upper'] <= LEVEL else 'ABOVE 5 %'}")
    print(f"power: settings below the end-gap test's {len(short)} of {len(power)}; tables the end-gap test "
          f"finds and this one misses {sum(r['iut_only'] for r in power)}")
    print(f"{'complete' if missing <= 0 else f'{missing} tables still to read (other shards?)'}; "
          f"this run {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
