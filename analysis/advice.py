"""What would resolve a verdict, from the planner: for each claim the run leaves "not resolved" whose
quantity the planner's joint FID law can target (analysis/planner.py), the next run it ranks first.

A claim maps to a planner target on its experiment's FID rows:
- "bigger is better" (model_size, superres_size): the FID gap of the smallest and the largest width at the
  most steps every size has, `gap:SMALL-LARGE@S`, the quantity whose interval includes zero;
- the sampling-cost claims (sampling_cost, samplers, superres_cost): the crossover of the first pair of
  neighbouring widths whose fitted curves cross, `crossover:W1-W2`; where none crosses, the gap of the two
  largest widths at the fewest steps (the cheap end, where the paper says the smaller wins);
- quality against training compute: the training exponent `delta` (or `alpha` when the run has one budget).
Claims on other metrics (DreamBooth's fidelities) or on two tables at once (distillation against the base)
have no planner target: their "to resolve" stays the checker's generic text.

The planner ranks only the widths the run trained (another seed, the next budget, more samples); a new
width needs the ladder, which `study plan` (the command quoted with each advice) reads from the run's config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.verdicts import UNRESOLVED
from analysis.planner import plan
from analysis.predict import JointFit, _default_curve, crossovers_between, fit_joint, require_fit
from analysis.table import size_label

KIND = {"seed": "another training seed of the {size} model (width {width})",
        "next_budget": "training the {size} model (width {width}) on to twice its images",
        "more_samples": "4x the evaluation samples of the {size} model's cells (width {width})",
        "new_width": "training and evaluating a {size} model (width {width})"}


def _sizes(fit: JointFit, table: pd.DataFrame) -> pd.DataFrame:
    """The trained widths with what the planner needs (params, normalized cost, GFLOPs), from the table."""
    cols = ["params", "normalized_cost", "gflops"]
    return table.groupby("width")[cols].first().reset_index()[lambda d: d["width"].isin(fit.points["width"])]


def _gap(fit: JointFit, sizes: pd.DataFrame) -> str:
    steps = int(fit.points.groupby("width")["steps"].max().min())  # the most steps every size has
    ws = sorted(sizes["width"])
    return f"gap:{ws[0]}-{ws[-1]}@{steps}"


def _cost(fit: JointFit, sizes: pd.DataFrame) -> str:
    rows = sizes.sort_values("normalized_cost").to_dict("records")
    max_steps = float(fit.points["steps"].max())
    for a, b in zip(rows, rows[1:]):
        c = crossovers_between(fit, {**a, "label": "a"}, {**b, "label": "b"}, max_steps)
        if np.isfinite(c["crossover_cost"]):
            return f"crossover:{int(a['width'])}-{int(b['width'])}"
    return f"gap:{int(rows[-2]['width'])}-{int(rows[-1]['width'])}@{int(fit.points['steps'].min())}"


def _training(fit: JointFit, sizes: pd.DataFrame) -> str:
    return "delta" if fit.has_budget else "alpha"


TARGETS = {"model_size": ("base", _gap), "superres_size": ("superres", _gap),
           "sampling_cost": ("base", _cost), "samplers": ("base", _cost), "superres_cost": ("superres", _cost),
           "training_compute": ("base", _training)}


def advise(table: pd.DataFrame, key: str, run_dir: str, seed: int = 0, fits: dict | None = None) -> dict | None:
    """The planner's first-ranked next run for one claim (None when the claim has no planner target or the
    law cannot be fitted): target, command, kind, width, interval now and after, and a sentence. `fits`
    caches the fitted law per experiment across claims."""
    if key not in TARGETS:
        return None
    experiment, pick = TARGETS[key]
    rows = table[table["experiment"].fillna("base").astype(str) == experiment] if "experiment" in table else table
    if rows.empty or not {"params", "normalized_cost", "gflops", "num_samples"} <= set(rows.columns):
        return None  # a table without the ladder's cost columns cannot be planned on (FLOPs per candidate)
    curve = _default_curve(rows)
    fits = {} if fits is None else fits
    try:
        if experiment not in fits:  # the planner needs the estimate, not its bootstrap draws
            fits[experiment] = fit_joint(rows, curve, n_boot=0, seed=seed)
        fit = fits[experiment]
        require_fit(fit)  # no advice from a law that does not fit its cells
        sizes = _sizes(fit, rows)
        target = pick(fit, sizes)
        # the samples of an evaluation (a budget scored by its loss alone drew none)
        samples = int(pd.to_numeric(rows.loc[rows["fid"].notna(), "num_samples"], errors="coerce").min())
        ranking = plan(fit, target, sizes, samples, seed=seed)
    except ValueError:  # too few cells for the law, a law that does not fit, or a target it leaves undefined
        return None
    ranking = ranking[ranking["shrinkage"] > 0]
    if ranking.empty:
        return None
    top = ranking.iloc[0]
    params = float(sizes.loc[sizes["width"] == top["width"], "params"].iloc[0])
    flag = "" if experiment == "base" else f" --experiment {experiment}"
    command = f"study plan {run_dir} --target {target} --sampler {curve}{flag}"
    what = KIND.get(top["kind"], top["kind"] + " of the {size} model (width {width})")
    text = (f"the planner (`{command}`) ranks first "
            f"{what.format(size=size_label(params), width=int(top['width']))}: the {target} interval "
            f"{top['interval_now']:.3g} -> "
            f"{top['interval_after']:.3g} (95 %, delta method on the {curve} joint law)")
    return {"target": target, "command": command, "kind": str(top["kind"]), "width": int(top["width"]),
            "interval_now": float(top["interval_now"]), "interval_after": float(top["interval_after"]),
            "text": text}


def add_planner_advice(claims: list[dict], table: pd.DataFrame, run_dir: str, seed: int = 0) -> list[dict]:
    """Each unresolved claim with a planner target gets `plan` (the command) and `advice` (the planner's
    first-ranked run, a sentence) beside its generic `resolve`; the others get them empty."""
    out, fits = [], {}
    for c in claims:
        a = advise(table, c["key"], run_dir, seed, fits) if c.get("verdict") == UNRESOLVED else None
        out.append({**c, "plan": a["command"] if a else "", "advice": a["text"] if a else ""})
    return out
