"""`study analyze`: every fit, curve, figure and finding of one run folder's results table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.export import crossover_table, fits_table, write_csv, write_json
from analysis.findings import frame_of, inference_findings, training_findings
from analysis.frontier import winner_ranges
from analysis.inference import FINAL, analyze_metric, optimal_guidance
from analysis.plot_guidance import plot_guidance
from analysis.plot_inference import plot_cost, plot_samplers, plot_steps
from analysis.plot_training import plot_training
from analysis.report import write_report
from analysis.table import METRIC_LABEL, load_results, results_path, size_label
from analysis.training import fit_training, training_points
from analysis.wandb_log import log_analysis

PAIR_COLUMNS = ["metric", "sampler", "budget", "smaller_width", "larger_width",
                "smaller_params", "larger_params", "crossover_cost", "low", "high",
                "n_crossings", "p_cross", "smaller_wins_below", "overlap_low", "overlap_high",
                "at_low_cost", "at_low_gap", "at_low_gap_low", "at_low_gap_high",
                "at_high_cost", "at_high_gap", "at_high_gap_low", "at_high_gap_high"]


def _intro(table: pd.DataFrame, source: Path, ref: dict, noisy: bool, n_boot: int) -> list[str]:
    sizes = ", ".join(f"{w} ({p / 1e6:.3g}M params)" for w, p in
                      table.groupby("width")["params"].first().items())
    return [
        f"source: {source.name}, {len(table)} rows; widths {sizes}",
        f"samplers: {', '.join(pd.unique(table['curve']))}; training budgets (images): "
        f"{', '.join(str(int(d)) for d in sorted(table['train_images'].unique()))}",
        "each cell (size, seed, budget, sampler, steps) is read at its FID-best guidance; "
        "curves average seeds; the headline uses each size's final checkpoint",
        f"intervals: 95% percentile bootstrap, {n_boot} resamples; fits resample points, "
        "curves resample seeds and perturb each value by its evaluation std"
        + ("" if noisy else " (this table has no std and one seed: curve intervals are "
                            "not available)"),
        f"training-compute reference: {ref['note']}",
    ]


def analyze(run_dir: str | Path, n_boot: int = 200, seed: int = 0,
            wandb_mode: str | None = "offline", wandb_project: str = "ldm-scaling",
            progress: bool = True) -> dict:
    """Run the whole analysis of RUN_DIR into RUN_DIR/analysis; return a summary."""
    run = Path(run_dir)
    source = results_path(run)
    table = load_results(run)
    out = run / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    pts, ref = training_points(table)
    fits = fit_training(pts, n_boot, seed, progress)
    results = {m: r for m in ("fid", "alignment")
               if (r := analyze_metric(table, m, n_boot, seed, progress)) is not None}
    fid = results["fid"]
    guidance = optimal_guidance(table)

    figs: dict[str, dict[str, str]] = {}
    floor = fid.curves["floor"].mean() if fid.curves["floor"].notna().any() else float("nan")
    figs["training"] = plot_training(pts, fits, ref, out, floor)
    for m, r in results.items():
        figs[f"{m}_steps"] = plot_steps(r, out)
        figs[f"{m}_cost"] = plot_cost(r, out)
    figs["guidance"] = plot_guidance(guidance, out)
    figs["samplers"] = plot_samplers(fid, out)

    found = {m: inference_findings(r) for m, r in results.items()}
    train_text = training_findings(fits)
    pairs = pd.concat([r.pairs for r in results.values()], ignore_index=True)
    pairs = pairs.reindex(columns=PAIR_COLUMNS)
    paths = {
        "fits_json": write_json(out / "fits.json", {"reference": ref, "fits": fits,
                                                    "findings": train_text}),
        "fits_csv": write_csv(out / "fits.csv", fits_table(fits)),
        "training_points": write_csv(out / "training_points.csv", pts),
        "frontier": write_csv(out / "frontier.csv", pd.concat(
            [r.frontier for r in results.values()], ignore_index=True)),
        "best_size": write_csv(out / "best_size.csv", pd.concat(
            [r.best_size for r in results.values()], ignore_index=True)),
        "crossovers": write_csv(out / "crossovers.csv", crossover_table(
            fid.pairs[fid.pairs["budget"] == FINAL] if len(fid.pairs) else fid.pairs)),
        "pairs": write_csv(out / "pairs.csv", pairs),
        "curves_csv": write_csv(out / "curves.csv", pd.concat(
            [r.curves for r in results.values()], ignore_index=True)),
        "guidance": write_csv(out / "optimal_guidance.csv", guidance),
    }
    paths["curves_json"] = write_json(out / "curves.json", {
        m: {"curves": r.curves, "frontier": r.frontier, "best_size": r.best_size,
            "pairs": r.pairs, "findings": found[m]} for m, r in results.items()})
    sections = [
        {"title": "Quality vs training compute", "figures": {"training": figs["training"]["png"]},
         "findings": {"fits (value [95% interval])": train_text}},
        *[{"title": f"Inference budget: {METRIC_LABEL[m]}", "figures": {
            "cost": figs[f"{m}_cost"]["png"], "steps": figs[f"{m}_steps"]["png"]},
           "findings": {"crossovers (final checkpoints)": found[m]["crossovers"],
                        "best size per budget": found[m]["best_size"],
                        "pairwise gaps at the ends of each shared cost range": found[m]["gaps"]},
           "text": "Crossovers at every training budget (budget: train_images shared by the "
                   "sizes, or each size's final checkpoint):",
           "table": _budget_table(r.pairs)}
          for m, r in results.items()],
        {"title": "Optimal guidance", "figures": {"guidance": figs["guidance"]["png"]},
         "table": guidance},
        {"title": "Samplers", "figures": {"samplers": figs["samplers"]["png"]}},
    ]
    paths["report"] = write_report(out / "report.html", sections,
                                   _intro(table, source, ref, fid.noisy, n_boot))
    crossovers = crossover_table(fid.pairs[fid.pairs["budget"] == FINAL]
                                 if len(fid.pairs) else fid.pairs)
    best = [{"sampler": s, "size": size_label(r["params"]), **r}
            for s, g in fid.best_size[fid.best_size["budget"] == FINAL].groupby("sampler",
                                                                               sort=False)
            for r in winner_ranges(g)]
    summary = {"out_dir": str(out), "report": paths["report"], "paths": paths,
               "figures": figs, "reference": ref, "best_size_per_budget": best,
               "crossovers": crossovers.to_dict(orient="records"),
               "findings": [s for f in found["fid"].values() for s in f][:12]}
    summary["wandb_dir"] = log_analysis(
        run, wandb_project, wandb_mode,
        tables={"crossovers": pairs, "frontier": pd.read_csv(paths["frontier"]),
                "fits": fits_table(fits), "training_points": pts,
                "findings": frame_of({"training": train_text, **{
                    f"{m}/{k}": v for m, f in found.items() for k, v in f.items()}})},
        figures={k: v["png"] for k, v in figs.items()},
        summary=_wandb_summary(fits, crossovers),
        config={"run_dir": str(run), "bootstrap": n_boot, "seed": seed, **ref})
    return summary


def _budget_table(pairs: pd.DataFrame) -> pd.DataFrame:
    cols = ["sampler", "budget", "smaller_params", "larger_params", "crossover_cost", "low",
            "high", "p_cross", "n_crossings"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    out = pairs[pairs["crossover_cost"].notna()][cols].copy()
    for c in ("smaller_params", "larger_params"):
        out[c] = out[c].map(size_label)
    return out.rename(columns={"smaller_params": "smaller", "larger_params": "larger"})


def _wandb_summary(fits: dict, crossovers: pd.DataFrame) -> dict:
    flat: dict[str, float | str] = {}
    for name, fit in [("envelope", fits["envelope"]), ("optimal_size", fits["optimal_size"]),
                      ("chinchilla", fits["chinchilla"])]:
        for kind in ("params", "derived"):
            for q, v in fit.get(kind, {}).items():
                flat[f"{name}/{q}"] = v["value"]
    for row in crossovers.itertuples():
        flat[f"crossover/{row.sampler}/{row.smaller_width}-{row.larger_width}"] = float(
            row.crossover_cost)
    return flat
