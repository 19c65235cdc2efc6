"""Fits reported by what they predict, and parameters the data does not determine said so.

A fitted parameter is "not determined by these points" when the fit put it on a search bound
(`at_bound`), or when its bootstrap interval spans more than two decades (a positive quantity), reaches 0 (a
model size, or an exponent searched from 0) or spans more than ten times its own size (one that may change sign).
A determined number whose interval ends on the search bound says so beside it. Such a number is flagged in
fits.json and W&B and never printed as if it were a measurement. A law that fails its goodness-of-fit
test (analysis.gof) is a different finding, "the law does not fit these points": none of its numbers
is printed, and the note names the worst residual.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.gof import fits, not_fit_text

NOT_DETERMINED = "not determined by these points"
MAX_RATIO = 100.0  # high / low of a positive quantity's interval: two decades is no estimate
MAX_SPAN = 10.0  # (high - low) / |value| of a signed quantity


# Quantities that are positive by construction (model sizes): an interval reaching 0 bounds them from one side only.
POSITIVE = ("n_opt_at_max_compute", "n_opt_at_10x_compute")


def search_bounds(fit: dict, q: str) -> tuple[float | None, float | None] | None:
    """The fit's search bounds of a published parameter that is fitted as itself (the exponents), else None."""
    from analysis.laws import LAWS

    law = LAWS.get(fit.get("law", ""))
    if law is None or q not in law.params or law.theta_names[law.params.index(q)] != q:
        return None
    return law.bounds[law.params.index(q)]


def _vague(v: dict, positive: bool = False) -> str | None:
    lo, hi, val = v.get("low"), v.get("high"), v.get("value")
    if lo is None or hi is None or val is None or not all(map(math.isfinite, (lo, hi, val))):
        return None  # no interval: said as such where it is printed
    if positive and lo <= 0 < val:
        return "its interval reaches 0: the resamples bound it from above only"
    if lo > 0 and hi / lo > MAX_RATIO:
        return f"interval spans {math.log10(hi / lo):.0f} decades"
    if lo <= 0 and (hi - lo) > MAX_SPAN * max(abs(val), 1e-300):
        return "interval far wider than the value"
    return None


def undetermined(fit: dict) -> dict[str, str]:
    """{quantity: why} for every parameter or derived quantity of a fit the points do not pin down."""
    if fit.get("skipped", False):
        return {}
    out = {}
    bound = fit.get("at_bound") or {}
    for q, side in bound.items():
        out[q] = f"at its {side} search bound"
    for kind in ("params", "derived"):
        for q, v in fit.get(kind, {}).items():
            # an exponent searched from 0 up is positive too: an interval reaching 0 says it may not fall at all
            why = _vague(v, q in POSITIVE or (search_bounds(fit, q) or (None,))[0] == 0)
            if why and q not in out:
                out[q] = why
    # A prediction built on an undetermined parameter inherits it only when it is vague itself;
    # extrapolations often stay well determined while A and E trade off against each other.
    return out


def flag_fits(fits: dict) -> dict:
    """The fits with `undetermined` ({quantity: why}) added to each fitted law, for fits.json."""
    out = dict(fits)
    out["per_size"] = {w: {**f, "undetermined": undetermined(f)} for w, f in fits["per_size"].items()}
    for k in ("envelope", "optimal_size", "chinchilla"):
        if k in fits:
            out[k] = {**fits[k], "undetermined": undetermined(fits[k])}
    return out


# (fit, quantity, what it says, unit) of the numbers a reader can use, in reading order.
PREDICTIONS = [
    ("envelope", "alpha", "exponent of the compute-optimal envelope: FID - E falls as C^-alpha", ""),
    ("envelope", "E", "FID floor of the envelope as training compute grows without bound", "FID"),
    ("optimal_size", "a", "compute-optimal size grows as C^a", ""),
    ("optimal_size", "n_opt_at_10x_compute", "compute-optimal size at 10x the largest training compute",
     "params"),
    ("chinchilla", "n_opt_exponent", "joint law: N_opt grows as C^(beta/(alpha+beta))", ""),
    ("chinchilla", "n_opt_at_max_compute", "joint law: compute-optimal size at the largest compute", "params"),
    ("chinchilla", "alpha", "joint law: FID exponent in model size", ""),
    ("chinchilla", "beta", "joint law: FID exponent in training images", ""),
]


def number_row(name: str, what: str, unit: str, q: str, fit: dict, flags: dict[str, str]) -> dict:
    """One row of the Numbers table: the quantity q of a fit with its interval, or blank with why (a law that does
    not fit, a number the points do not determine)."""
    v = fit["params"].get(q) or fit["derived"].get(q)
    # A law that misses its points is the wrong model: none of its numbers is a measurement.
    evidence = (fit.get("evidence") or {}).get(q)  # the points' own reason, where the fit recorded one
    note = (not_fit_text(fit) if not fits(fit) else
            f"{NOT_DETERMINED} ({flags[q]}{'; ' + evidence if evidence else ''})" if q in flags else "")
    determined = not note
    bounds = search_bounds(fit, q)
    if determined and bounds and bounds[1] is not None and v["high"] is not None and v["high"] >= bounds[1] - 1e-6:
        # the resamples piled up at the bound: the interval's upper end is the search's, not the points'
        note = f"the interval's upper end is the search bound ({bounds[1]:g}): the points bound it from below only"
    return {"fit": name, "quantity": q, "what": what, "unit": unit,
            "value": v["value"] if determined else None, "low": v["low"] if determined else None,
            "high": v["high"] if determined else None, "determined": determined, "note": note}


def prediction_table(fits: dict) -> pd.DataFrame:
    """What the fits predict, with intervals, one row per number; undetermined ones blanked with why."""
    rows = []
    for name, q, what, unit in PREDICTIONS:
        fit = fits.get(name, {})
        if fit.get("skipped", True) or q not in {**fit["params"], **fit["derived"]}:
            continue
        rows.append(number_row(name, what, unit, q, fit, undetermined(fit)))
    for w, fit in fits["per_size"].items():
        if fit.get("skipped", True):
            continue
        label = fit.get("label", w)
        flags = undetermined(fit)
        for q, what in (("fid_at_10x_compute", f"{label}: FID at 10x its largest training compute"),
                        ("alpha", f"{label}: exponent of FID - E in training compute")):
            if q in {**fit["params"], **fit["derived"]}:
                rows.append(number_row(f"power/width={w}", what, "FID" if q.startswith("fid") else "", q, fit, flags))
    return pd.DataFrame(rows, columns=["fit", "quantity", "what", "unit", "value", "low", "high",
                                       "determined", "note"])
