"""The report's sections: each figure with a one-line caption saying what to look at, the table
next to it, and the details (pairwise gaps, per-size fits, guidance numbers) folded away."""

from __future__ import annotations

import pandas as pd

from analysis.export import fits_table
from analysis.findings import regression_findings, training_findings
from analysis.gof import DOES_NOT_FIT
from analysis.inference import InferenceResult
from analysis.table import METRIC_LABEL, size_label

CAPTIONS = {
    "best_size": "Read across each band: its colour at a cost is the size to use for that sampling budget; "
                 "a larger size taking over to the right is the paper's 'bigger is not always better'. "
                 "Hatched: sizes tied within noise.",
    "fid_cost": "Where a smaller size's curve lies below a larger one's, the smaller model gives the better FID "
                "at that sampling cost; red crosses mark crossovers with their 95% intervals.",
    "fid_steps": "At many steps the larger models should reach the lowest FID (the paper's Table 1 order); "
                 "at few steps, see how much each size loses.",
    "alignment_cost": "Higher is better: where a smaller size's curve lies above a larger one's, it follows the "
                      "prompt better at that sampling cost.",
    "alignment_steps": "Prompt alignment per size against steps, at each cell's FID-best guidance.",
    "training": "FID falling to the right is quality bought with training compute; squares mark the best FID "
                "reached at each compute. A law is drawn only where it passes its goodness-of-fit test; the "
                "legend names the laws that do not fit their points (their points stay).",
    "guidance": "The FID-optimal guidance per size and step count: look for it shifting with size or steps "
                "(numbers in the details below).",
    "samplers": "Per size, the lowest curve is the best sampler at that sampling cost.",
    "superres": "Super-resolution fine-tunes: where a smaller size lies below a larger one it wins at that "
                "cost; the paper puts the switch to larger models near 20 steps.",
    "versus": "Solid: distilled models, dashed: undistilled ones; where a dashed curve reaches a solid one's FID "
              "is the sampling cost at which the undistilled model matches the distilled one.",
    "distillation": "Distilled models (few steps): compare each size's FID with the undistilled curves of the "
                    "FID-vs-sampling-cost figure at the same cost.",
}


def _fig(figs: dict, key: str, caption: str) -> list[dict]:
    return [{"png": figs[key]["png"], "caption": caption}] if key in figs else []


def budget_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Crossovers at every training budget, sizes as labels; the verdict where the analysis gives one."""
    cols = ["sampler", "budget", "smaller_params", "larger_params", "crossover_cost", "low", "high",
            "p_cross", "n_crossings"] + [c for c in ("verdict",) if c in pairs]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    out = pairs[pairs["crossover_cost"].notna()][cols].copy()
    for c in ("smaller_params", "larger_params"):
        out[c] = out[c].map(size_label)
    return out.rename(columns={"smaller_params": "smaller", "larger_params": "larger"})


def _guidance_grid(guidance: pd.DataFrame) -> pd.DataFrame:
    grid = guidance.pivot_table(index=["sampler", "params"], columns="steps", values="guidance",
                                aggfunc="mean").reset_index()
    grid["params"] = grid["params"].map(size_label)
    grid.columns = [c if isinstance(c, str) else f"{int(c)} steps" for c in grid.columns]
    return grid.rename(columns={"params": "size"})


def sections(figs: dict, results: dict[str, InferenceResult], found: dict, fits: dict, pts: pd.DataFrame,
             guidance: pd.DataFrame, bands: pd.DataFrame, experiments: dict, exp_tables: dict[str, pd.DataFrame],
             paths: dict) -> list[dict]:
    """The report's sections after the findings and the numbers, in reading order."""
    out = [{"id": "best_size", "title": "Best size per sampling budget",
            "figures": _fig(figs, "best_size", CAPTIONS["best_size"]), "side": bands,
            "details": [{"summary": "best size at every budget evaluated, with the share of resamples agreeing",
                         "table": results["fid"].best_size, "csv": paths["best_size"]}]}]
    for m, r in results.items():
        label = METRIC_LABEL[m]
        out.append({
            "id": f"{m}_cost", "title": f"{label} vs sampling cost",
            "figures": _fig(figs, f"{m}_cost", CAPTIONS[f"{m}_cost"]),
            "lines": found[m]["crossovers"],
            "details": [{"summary": "crossovers at every training budget", "table": budget_table(r.pairs),
                         "csv": paths["pairs"]},
                        {"summary": "pairwise gaps at the ends of each shared cost range",
                         "lines": found[m]["gaps"], "csv": paths["pairs"]}]})
        out.append({"id": f"{m}_steps", "title": f"{label} vs sampling steps",
                    "figures": _fig(figs, f"{m}_steps", CAPTIONS[f"{m}_steps"]),
                    "details": [{"summary": "curve points (value, std, seeds)", "table": r.curves,
                                 "csv": paths["curves_csv"]}]})
    per_size = fits_table(fits)
    out.append({"id": "training", "title": "Quality vs training compute",
                "figures": _fig(figs, "training", CAPTIONS["training"]),
                # Then sizes whose FID rose late.
                # Fits the points cannot support or whose law misses them, with the reason and worst point.
                "lines": [t for t in training_findings(fits) if ": not fitted (" in t or DOES_NOT_FIT in t]
                + regression_findings(fits.get("regressions", [])),
                "details": [{"summary": "every fitted parameter, with its interval", "table": per_size,
                             "csv": paths["fits_csv"]},
                            {"summary": "the training points", "table": pts, "csv": paths["training_points"]}]})
    out.append({"id": "samplers", "title": "Samplers",
                "figures": _fig(figs, "samplers", CAPTIONS["samplers"])})
    out.append({"id": "guidance", "title": "Optimal guidance",
                "figures": _fig(figs, "guidance", CAPTIONS["guidance"]),
                "details": [{"summary": "the heat map's numbers", "table": _guidance_grid(guidance),
                             "csv": paths["guidance"]}]})
    for exp, rows in exp_tables.items():
        res = experiments.get(exp, {})
        details = ([{"summary": "crossovers", "table": budget_table(res["fid"].pairs)},
                    {"summary": "curve points", "table": res["fid"].curves}] if "fid" in res else [])
        details.append({"summary": f"every {exp} row of the results table", "table": rows})
        out.append({"id": exp, "title": f"Experiment: {exp}",
                    "figures": _fig(figs, f"{exp}_vs_base", CAPTIONS["versus"])
                    + _fig(figs, f"{exp}_cost", CAPTIONS.get(exp, CAPTIONS["fid_cost"])),
                    "details": details})
    return out
