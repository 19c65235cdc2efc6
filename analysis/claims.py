"""The paper's claims, one checker each: what the paper says, what this run found (with its
interval), and a verdict: reproduced, contradicted, or not resolved at this scale.

Intervals are 95 %: bootstrap intervals where the analysis has them, otherwise +-1.96 standard
errors of the evaluation noise (and of the seed spread where several seeds were trained).
"""

from __future__ import annotations

from analysis.experiments import analyses
from analysis import verdicts
from analysis.verdicts import Evidence


def check_claims(ev: Evidence, experiment: str | None = None) -> list[dict]:
    """Every applicable claim (of one experiment, if given), checked: dicts with key, experiment, title, paper,
    found, verdict, resolve and anchor."""
    # Every experiment's module registers its checkers on import; read them base first, then by experiment name,
    # each experiment's in the order its module declares them (whatever order the modules were imported in).
    order = sorted(analyses(), key=lambda name: (name != "base", name))
    out = []
    for c in sorted(verdicts.CLAIMS, key=lambda c: order.index(c.experiment) if c.experiment in order else len(order)):
        if experiment is not None and c.experiment != experiment:
            continue
        res = c.check(ev)
        if res is not None:
            found, verdict, resolve = res
            out.append({"key": c.key, "experiment": c.experiment, "title": c.title, "paper": c.paper,
                        "found": found, "verdict": verdict, "resolve": resolve, "anchor": c.anchor})
    return out


def judge_experiment(name: str, table, out, n_boot: int = 200, seed: int = 0) -> tuple[dict, dict[str, dict]]:
    """One derived experiment analysed on its own and its claims checked: (its analysis, {claim key: claim})."""
    module = analyses()[name]
    done = module.analyze(table, out, n_boot, seed)
    base = table[table["experiment"] == "base"] if "experiment" in table else table.iloc[:0]
    ev = Evidence(table=table, base=base, analyses={name: done})
    return done, {c["key"]: c for c in check_claims(ev, experiment=name)}
