"""A test of "the two curves cross" whose false-crossing rate holds on ties, near-misses and
one-sided gaps, and which spends its level where a crossing shows.

H0 (no crossing): the gap never changes sign over the overlap (>= 0 everywhere or <= 0
everywhere). The test is an intersection-union test (Berger 1982, NOTES.md): it rejects H0
when the gap is significantly positive on one window of log cost and significantly negative on
a later or earlier, disjoint one. Each window's statistic is its mean gap less the
interpolation slack, over its bootstrap sd, less a penalty:
  the two ends of the overlap (points, penalty 0): a single crossing shows most there;
  windows anchored at either end over 1/8, 1/4 and 1/2 of the overlap (penalty 0.5 sd): a
  mean over several evaluated points is less noisy than one end where the gap flattens;
  windows of 1/4 of the overlap every 1/8 inside it (penalty 1 sd): they find the middle
  stretch of a double crossing.
Critical value, least favourable over H0 (computed on the resamples, per sign): a false
finding of one sign can only complete a rejection together with a true finding of the other,
which needs the true gap to be nonzero at some point a of a window; the windows that can be
at H0's boundary (zero mean) are then those not holding a. The critical value is the largest,
over every such a, of the `level` quantile of the resamples' maximum statistic over those
windows; a tie (every window at the boundary) needs both signs false at once, checked too.
So the rate of false crossings is at most 1 - level wherever the gap never changes sign.

Against the end-gap intersection-union test (95 % intervals at the two ends, each one-sided at
2.5 %), the ends here are read at about one-sided 5 %: the two ends cannot both sit at H0's
boundary while the other sign is truly found, so no Bonferroni split between them is needed.
benchmarks/crossing_power.py measures both (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from analysis.bootstrap import LEVEL

EDGE_SHARES = (1 / 8, 1 / 4, 1 / 2)  # windows anchored at each end, as shares of the overlap
EDGE_PENALTY = 0.5  # sd: most of the level stays with the ends
INNER_SHARE = 1 / 4  # inner windows: this share of the overlap, every half of it
INNER_PENALTY = 1.0
NAME = ("least-favourable intersection-union test of a sign change over windows of the overlap "
        "(ends, end-anchored and inner windows; bootstrap critical value)")


def windows(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, penalty) of the test's windows over `size` grid points (half-open ranges)."""
    spans = [(0, 1, 0.0), (size - 1, size, 0.0)]
    for share in EDGE_SHARES:
        n = max(2, int(round(share * size)))
        spans += [(0, n, EDGE_PENALTY), (size - n, size, EDGE_PENALTY)]
    n = max(2, int(round(INNER_SHARE * size)))
    spans += [(s, s + n, INNER_PENALTY) for s in range(n // 2, size - n - n // 2 + 1, n // 2)]
    spans = sorted(set((a, b, p) for a, b, p in spans if 0 <= a < b <= size))
    return tuple(np.array(x) for x in zip(*spans))  # type: ignore[return-value]


def _means(vals: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """(..., J) means of vals (..., G) over each window."""
    csum = np.concatenate([np.zeros(vals.shape[:-1] + (1,)), np.cumsum(vals, axis=-1)], axis=-1)
    return (csum[..., stop] - csum[..., start]) / (stop - start)


def _critical(z: np.ndarray, start: np.ndarray, stop: np.ndarray, level: float) -> float:
    """Least-favourable critical value of max over windows of z (resamples, J)."""
    q = -np.inf
    for a in np.unique(np.r_[start, stop[stop < stop.max()]]):
        # The true gap is nonzero at a: the windows holding a have a nonzero mean.
        null = (stop <= a) | (start > a)
        if null.any() and not null.all():
            q = max(q, float(np.quantile(z[:, null].max(axis=1), level)))
    return q


def _pairs(pos: np.ndarray, neg: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Per row: whether some positive window ends before a negative one starts, or back."""
    big = np.iinfo(np.int64).max
    end_p = np.where(pos, stop, big).min(axis=-1)
    end_n = np.where(neg, stop, big).min(axis=-1)
    start_p = np.where(pos, start, -1).max(axis=-1)
    start_n = np.where(neg, start, -1).max(axis=-1)
    return (end_p <= start_n) | (end_n <= start_p)


def sign_test(gap: np.ndarray, boot_gap: np.ndarray, slack: np.ndarray, level: float = LEVEL
              ) -> dict:
    """Windows where the gap is significantly positive / negative, the alternating chain of
    disjoint ones (each change of sign in it is a crossing) and the resamples' own verdicts.

    gap (G,) and slack (G,) on the grid; boot_gap (K, G) resamples of the gap.
    """
    start, stop, pen = windows(gap.size)
    est, boot, tol = (_means(x, start, stop) for x in (gap, boot_gap, slack))
    sd = boot.std(axis=0)
    ok = sd > 0
    err = np.where(ok, (boot - est) / np.where(ok, sd, 1.0), 0.0)  # the estimate's error, in sd
    # A false positive finding is the error beyond the critical value, and a false negative
    # one the error's mirror image: one critical value per sign.
    z_pos, z_neg = err - pen, -err - pen
    q_pos, q_neg = _critical(z_pos, start, stop, level), _critical(z_neg, start, stop, level)
    # A tie: every window at the boundary, both signs found by chance together.
    both = np.minimum(z_pos.max(axis=1) - q_pos, z_neg.max(axis=1) - q_neg)
    shift = max(0.0, float(np.quantile(both, level)))
    q_pos, q_neg = q_pos + shift, q_neg + shift

    def found(values: np.ndarray, sign: int, q: float) -> np.ndarray:
        stat = (sign * values - tol) / np.where(ok, sd, np.inf) - pen
        return ok & (stat > q)

    pos, neg = found(est, 1, q_pos), found(est, -1, q_neg)
    # The resamples read with the same critical values: how often a repeat would find it.
    again = _pairs(found(boot, 1, q_pos), found(boot, -1, q_neg), start, stop)
    return {"positive": pos, "negative": neg, "chain": chain(pos, neg, start, stop),
            "replicated": float(again.mean()) if again.size else float("nan"),
            "critical": (q_pos, q_neg)}


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


def locate(gap: np.ndarray, lo: int, hi: int, sign: int) -> int:
    """Grid index j in [lo, hi - 1) where the gap best splits into `sign` before j + 1 and the
    other sign from j + 1 on: the maximum of the cumulative split (a zero of the gap)."""
    g = sign * gap[lo:hi]
    split = 2 * np.cumsum(g) - g.sum()  # sum before the cut minus the sum after, cut after k
    return lo + int(np.argmax(split[:-1]))
