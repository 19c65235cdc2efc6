"""The paper's claims, one checker each: what the paper says, what this run found (with its
interval), and a verdict: reproduced, contradicted, or not resolved at this scale.

Intervals are 95 %: bootstrap intervals where the analysis has them, otherwise +-1.96 standard
errors of the evaluation noise (and of the seed spread where several seeds were trained).
"""

from __future__ import annotations

from analysis import claims_base, claims_derived  # noqa: F401  (their @claim entries register the checkers)
from analysis.verdicts import CLAIMS, Evidence


def check_claims(ev: Evidence) -> list[dict]:
    """Every applicable claim, checked: dicts with key, experiment, title, paper, found, verdict,
    resolve and anchor."""
    out = []
    for c in CLAIMS:
        res = c.check(ev)
        if res is not None:
            found, verdict, resolve = res
            out.append({"key": c.key, "experiment": c.experiment, "title": c.title, "paper": c.paper,
                        "found": found, "verdict": verdict, "resolve": resolve, "anchor": c.anchor})
    return out
