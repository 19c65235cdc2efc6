"""Goodness of fit: level and power of analysis/gof.py on seeded synthetic power laws.

    python benchmarks/gof_level.py [--replicates 200] [--tiny]

Level: E + A x^-alpha (E 5, A 30, alpha 0.5, x over 3 decades) with normal noise of 5 % of each point,
its true sd given to the test; the share of replicates said "does not fit" (the false rate; the test's
level is analysis.gof.LEVEL), for 4, 6 and 8 points, with the chi-square and the leave-one-out parts
apart. Power: the share said "does not fit" of a step (half the points at 2x the other half), a U
(quadratic in log x) and the power law with one point moved by 6 sd, at 2 % noise, 8 points.
--tiny: 10 replicates, 4 and 6 points (a check that it runs, not a measurement).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _verdict(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> dict:
    from analysis.bootstrap import bootstrap_fit
    from analysis.laws import get_law

    return bootstrap_fit(get_law("power"), [x], y, n_boot=0, sd=sd)["gof"]


def level(n: int, replicates: int, rng: np.random.Generator, rel: float = 0.05) -> dict[str, float]:
    """False 'does not fit' rates (overall, chi-square part, leave-one-out part) over seeded replicates."""
    x = np.geomspace(1e15, 1e18, n)
    true = 5.0 + 30.0 * (x / 1e15) ** -0.5
    got = [_verdict(x, true + rng.normal(0, rel * true), rel * true) for _ in range(replicates)]
    return {"overall": np.mean([g["fits"] == "no" for g in got]),
            "chi2": np.mean([g["p_chi2"] < 0.05 for g in got]),
            "loo": np.mean([g["p_loo"] < 0.05 for g in got])}


def power(replicates: int, rng: np.random.Generator, rel: float = 0.02, n: int = 8) -> dict[str, float]:
    """Share of replicates of each wrong shape said 'does not fit'."""
    x = np.geomspace(1e15, 1e18, n)
    smooth = 5.0 + 30.0 * (x / 1e15) ** -0.5
    outlier = smooth.copy()
    outlier[n // 2] *= 1 + 6 * rel
    shapes = {"step": np.where(np.arange(n) < n // 2, 20.0, 10.0),
              "U": 10.0 + 3.0 * (np.log10(x) - 16.5) ** 2, "one outlier (6 sd)": outlier}
    return {name: np.mean([_verdict(x, y + rng.normal(0, rel * y), rel * y)["fits"] == "no"
                           for _ in range(replicates)]) for name, y in shapes.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--tiny", action="store_true", help="10 replicates: a check that it runs")
    args = ap.parse_args(argv)
    reps = 10 if args.tiny else args.replicates
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    print(f"level (false 'does not fit' rate), {reps} replicates, 5 % noise:")
    for n in (4, 6) if args.tiny else (4, 6, 8):
        r = level(n, reps, rng)
        print(f"  {n} points: {r['overall']:.3f} (chi-square alone {r['chi2']:.3f}, leave-one-out alone "
              f"{r['loo']:.3f})")
    print(f"power ('does not fit' rate), {reps} replicates, 2 % noise, 8 points:")
    for name, p in power(reps, rng).items():
        print(f"  {name}: {p:.3f}")
    print(f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
