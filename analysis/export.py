"""Write fits and curves as JSON and CSV; NaN becomes null so the JSON stays standard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.gof import NO, not_fit_text

CROSSOVER_COLUMNS = ["sampler", "smaller_width", "larger_width", "crossover_cost", "low", "high",
                     "p_cross", "n_crossings"]
# Written when the crossover analysis provides them: its plain verdict and how the interval was made.
OPTIONAL_CROSSOVER_COLUMNS = ["verdict", "method"]


def jsonable(obj):
    """Plain JSON types: bootstrap samples dropped, numpy unwrapped, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if k != "samples"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj) -> str:
    """Write obj as indented JSON; return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    return str(p)


def write_csv(path: str | Path, frame: pd.DataFrame) -> str:
    """Write a table as CSV without the index; return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(p, index=False)
    return str(p)


FIT_COLUMNS = ["fit", "law", "quantity", "value", "low", "high", "gof_statistic", "gof_p", "fits", "note"]


def fits_table(fits: dict) -> pd.DataFrame:
    """Flatten training fits to rows (fit, law, quantity, value, low, high), each with its law's
    goodness of fit (gof_statistic: chi-square per dof, gof_p, fits: yes/no/untested; analysis.gof)."""
    named = [(f"power/width={w}", f) for w, f in fits["per_size"].items()]
    named += [(k, fits[k]) for k in ("envelope", "optimal_size", "chinchilla")]
    rows = []
    for name, fit in named:
        if fit.get("skipped"):
            rows.append({"fit": name, "note": fit["reason"]})
            continue
        g = fit.get("gof") or {}
        test = {"gof_statistic": g.get("gof_statistic"), "gof_p": g.get("gof_p"), "fits": g.get("fits"),
                "note": not_fit_text(fit) if g.get("fits") == NO else g.get("reason", "")}
        for kind in ("params", "derived"):
            for q, v in fit[kind].items():
                rows.append({"fit": name, "law": fit["law"], "quantity": q, **v, **test})
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


def crossover_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """The headline crossovers: pairs whose curves cross, CROSSOVER_COLUMNS (+ verdict, method)."""
    # Always the same columns (empty ones where the analysis gave none), so readers can rely on them.
    cols = CROSSOVER_COLUMNS + OPTIONAL_CROSSOVER_COLUMNS
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    return pairs[pairs["crossover_cost"].notna()].reindex(columns=cols).reset_index(drop=True)
