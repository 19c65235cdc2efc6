"""A test of "the two curves cross" whose false-crossing rate holds on ties, near-misses and
one-sided gaps, and which finds more true crossings than the end-gap test.

H0 (no crossing): the gap never changes sign over the overlap (>= 0 everywhere or <= 0
everywhere). Both parts below are intersection-union tests (Berger 1982, NOTES.md): they reject
H0 when the gap is significantly positive somewhere and significantly negative somewhere else
(the windows read beyond the interpolation slack). A crossing is claimed when either part
rejects; their levels add up to 3.5 %, the rest of 5 % left to what the nominal levels do not hold: a tail read
from 200 resamples is itself uncertain, and an interpolated curve's bias at an end where the
true gap is zero (the end-gap test alone, nominally 2.5 %, finds 3.3 % false crossings there):

  ends (2.5 %): the gap at the low end of the overlap and at the high end, each against its own
  one-sided 97.5 % percentile bound: the end-gap test's own reading (its 95 % intervals spend
  2.5 % on each side), so this part rejects wherever that test does and the windows only add
  power (at least the end-gap test's on every table, not only on average). No interpolation
  slack at the ends: one curve sits on its own point there, and two sizes on one curve gave
  the end-gap test no false crossing even at fid_std 0.003 (200 tables). A false crossing needs
  one end truly of one sign and the other end at zero read as the opposite sign (2.5 %); with both
  ends at zero it needs two false findings at once. Ends at 3 % put the least favourable
  near-miss at 3.9 % (800 tables), too near 5 % for an interval on the rate to show it holds.
  windows (1 %): the mean gap over windows of the overlap (anchored at either end over 1/8,
  1/4 and 1/2 of it, and 1/4 of it every 1/8 inside), over its bootstrap sd. A mean over
  several evaluated points is less noisy than one end where the gap flattens, and the inner
  windows find the middle stretch of a double crossing. Critical value, least favourable
  over H0 (per sign, on the resamples): a false finding of one sign completes a rejection only
  with a true finding of the other, which needs the true gap nonzero at some point a of a
  window; the windows that can then sit at H0's boundary are those without a, and the critical
  value is the largest over every such a of the 99 % quantile of the resamples' maximum over
  them (a tie, every window at the boundary, needs both signs false at once: checked too).

Each change of sign along the chain of disjoint significant windows (or between the two ends)
is a crossing. benchmarks/crossing_power.py measures the false-crossing rate (2000 tables per
no-crossing setting, with its 95 % Clopper-Pearson interval) and the power against the end-gap
test (docs/benchmarks.md, "Crossing test: level and power").
"""

from __future__ import annotations

import numpy as np

END_LEVEL = 0.025  # one-sided, at each end: the part a single crossing shows in most
WINDOW_LEVEL = 0.01
EDGE_SHARES = (1 / 8, 1 / 4, 1 / 2)  # windows anchored at each end, as shares of the overlap
INNER_SHARE = 1 / 4  # inner windows: this share of the overlap, every half of it
NAME = ("intersection-union test of a sign change, least favourable over no-crossing curves: "
        "the two ends of the overlap at one-sided 2.5% each, plus windows of the overlap at 1% "
        "(bootstrap critical value)")


def windows(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of the windows over `size` grid points (half-open index ranges)."""
    spans = []
    for share in EDGE_SHARES:
        n = max(2, int(round(share * size)))
        spans += [(0, n), (size - n, size)]
    n = max(2, int(round(INNER_SHARE * size)))
    spans += [(s, s + n) for s in range(n // 2, size - n - n // 2 + 1, n // 2)]
    spans = sorted(set((a, b) for a, b in spans if 0 <= a < b <= size))
    return tuple(np.array(x) for x in zip(*spans))  # type: ignore[return-value]


def _means(vals: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """(..., J) means of vals (..., G) over each window."""
    csum = np.concatenate([np.zeros(vals.shape[:-1] + (1,)), np.cumsum(vals, axis=-1)], axis=-1)
    return (csum[..., stop] - csum[..., start]) / (stop - start)


def _critical(z: np.ndarray, start: np.ndarray, stop: np.ndarray, level: float) -> float:
    """Least-favourable critical value of the max over windows of z (resamples, J)."""
    q = -np.inf
    for a in np.unique(np.r_[start, stop[stop < stop.max()]]):
        # The true gap is nonzero at a: the windows holding a have a nonzero mean.
        null = (stop <= a) | (start > a)
        if null.any() and not null.all():
            q = max(q, float(np.quantile(z[:, null].max(axis=1), level)))
    return q


def _ordered(pos: np.ndarray, neg: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Per row: whether some positive window ends before a negative one starts, or back."""
    big = np.iinfo(np.int64).max
    end_p, end_n = (np.where(m, stop, big).min(axis=-1) for m in (pos, neg))
    start_p, start_n = (np.where(m, start, -1).max(axis=-1) for m in (pos, neg))
    return (end_p <= start_n) | (end_n <= start_p)


def _window_part(gap: np.ndarray, boot_gap: np.ndarray, slack: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, positive, negative) windows at WINDOW_LEVEL, and the resamples' verdicts."""
    start, stop = windows(gap.size)
    est, boot, tol = (_means(x, start, stop) for x in (gap, boot_gap, slack))
    sd = boot.std(axis=0)
    ok = sd > 0
    safe = np.where(ok, sd, np.inf)
    err = (boot - est) / safe  # the estimate's error in sd; 0 where a window has no noise
    level = 1.0 - WINDOW_LEVEL
    # A false positive finding is the error beyond the critical value, a false negative one its
    # mirror image: one critical value per sign.
    q_pos, q_neg = _critical(err, start, stop, level), _critical(-err, start, stop, level)
    # A tie: every window at the boundary, both signs found by chance together.
    both = np.minimum(err.max(axis=1) - q_pos, (-err).max(axis=1) - q_neg)
    shift = max(0.0, float(np.quantile(both, level)))
    q_pos, q_neg = q_pos + shift, q_neg + shift
    pos = ok & ((est - tol) / safe > q_pos)
    neg = ok & ((-est - tol) / safe > q_neg)
    # The resamples read with the same critical values: how often a repeat would find it.
    again = _ordered(ok & ((boot - tol) / safe > q_pos), ok & ((-boot - tol) / safe > q_neg),
                     start, stop)
    return start, stop, pos, neg, again


def _end_part(gap: np.ndarray, boot_gap: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The sign found at each end (+1, -1 or 0) at END_LEVEL, and the resamples' verdicts.

    Read as the end-gap test reads its 95 % intervals, without the interpolation slack: at each
    end one curve sits on its own evaluated point, and a slack measured on noisy curves held back
    12 of the end-gap test's 2000-odd detections on the power settings (docs/benchmarks.md)."""
    signs, again = [], []
    for j in (0, gap.size - 1):
        lo, hi = np.quantile(boot_gap[:, j], [END_LEVEL, 1.0 - END_LEVEL])
        # Percentile bounds; a resample is read with the same margins around its own value.
        below, above = gap[j] - lo, hi - gap[j]
        signs.append(int(lo > 0) - int(hi < 0))
        again.append((boot_gap[:, j] - below > 0).astype(int) - (boot_gap[:, j] + above < 0).astype(int))
    return signs, again[0] * again[1] < 0


def sign_test(gap: np.ndarray, boot_gap: np.ndarray, slack: np.ndarray) -> dict:
    """Whether and where the gap changes sign beyond noise and slack: the chain of disjoint
    significant stretches of alternating sign (each change a crossing), whether either sign is
    found at all, and the share of resamples in which the same test finds a crossing.

    gap (G,) and slack (G,) on the grid; boot_gap (K, G) resamples of the gap.
    """
    start, stop, pos, neg, again_w = _window_part(gap, boot_gap, slack)
    ends, again_e = _end_part(gap, boot_gap)
    runs = chain(pos, neg, start, stop)
    if len(runs) < 2 and ends[0] * ends[1] < 0:
        runs = [(0, 1, ends[0]), (gap.size - 1, gap.size, ends[1])]
    return {"chain": runs if len(runs) >= 2 else [],
            "found": bool(pos.any() or neg.any() or any(ends)),
            "replicated": float((again_w | again_e).mean()) if boot_gap.size else float("nan")}


def chain(pos: np.ndarray, neg: np.ndarray, start: np.ndarray, stop: np.ndarray
          ) -> list[tuple[int, int, int]]:
    """Longest run of disjoint significant windows of alternating sign, left to right, as
    (start, stop, sign): greedy by earliest end, from either first sign."""
    spans = sorted([(int(b), int(a), 1) for a, b, p in zip(start, stop, pos) if p]
                   + [(int(b), int(a), -1) for a, b, n in zip(start, stop, neg) if n])
    best: list[tuple[int, int, int]] = []
    for first in (1, -1):
        run, want, end = [], first, 0
        for b, a, s in spans:
            if s == want and a >= end:
                run.append((a, b, s))
                want, end = -s, b
        best = run if len(run) > len(best) else best
    return best


def end_gap_test(gaps: list[dict]) -> bool:
    """The end-gap intersection-union test, the reference for power: the pair's 95 % intervals of
    the gap at the low and the high end of the overlap (compare_pair's `gaps`, the report's
    at_low_gap_low/high and at_high_gap_low/high) exclude zero on opposite sides."""
    sign = [(g["low"] > 0) - (g["high"] < 0) for g in gaps]
    return sign[0] * sign[1] < 0


def locate(gap: np.ndarray, lo: int, hi: int, sign: int) -> int:
    """Grid index j in [lo, hi - 1) where the gap best splits into `sign` up to j and the other
    sign from j + 1 on: the maximum of the cumulative split (a zero of the gap)."""
    g = sign * gap[lo:hi]
    split = 2 * np.cumsum(g) - g.sum()  # sum up to the cut minus the sum after it
    return lo + int(np.argmax(split[:-1]))
