"""`study analyze`: every fit, curve, figure and finding of one run folder's results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.advice import add_planner_advice
from analysis.claims import check_claims
from analysis.verdicts import Evidence
from analysis.export import crossover_table, fits_table, write_csv, write_json
from analysis.findings import frame_of, inference_findings, training_findings
from analysis.frontier import winner_ranges
from analysis.inference import FINAL, analyze_metric, optimal_guidance
from analysis.loss_report import loss_sections
from analysis.extras import backtest_section, experiment_analyses, experiment_sections
from analysis.page import sections
from analysis.plot_best import plot_best_size, segment_table
from analysis.plot_guidance import plot_guidance
from analysis.plot_inference import plot_cost, plot_overlay, plot_samplers, plot_steps
from analysis.plot_training import plot_training
from analysis.readable import flag_fits, prediction_table
from analysis.report import write_markdown, write_report
from analysis.table import BASE, load_results, read_table, results_path, size_label
from analysis.training import fit_training, training_points
from analysis.wandb_log import StudyLog, log_analysis


def _about(table: pd.DataFrame, source: Path, ref: dict, noisy: bool, n_boot: int,
           method: str | None) -> list[str]:
    sizes = ", ".join(f"{w} ({p / 1e6:.3g}M params)" for w, p in
                      table.groupby("width")["params"].first().items())
    seeds = table["seed"].nunique()
    return [
        f"source: {source.name}, {len(table)} rows; widths {sizes}",
        f"samplers: {', '.join(pd.unique(table['curve']))}; training budgets (images): "
        f"{', '.join(str(int(d)) for d in sorted(table['train_images'].unique()))}",
        "each cell (size, seed, budget, sampler, steps) is read at its FID-best guidance; "
        "curves average seeds; the headline uses each size's final checkpoint",
        f"intervals: 95% percentile bootstrap, {n_boot} resamples; fits resample points"
        + (f"; curves: {method}" if method else "; curves resample seeds and evaluation noise")
        + ("" if noisy else " (this table has no std and one seed: curve intervals are not available)"),
        (f"training seeds: {seeds}; intervals include the seed-to-seed variance" if seeds > 1 else
         "training seeds: 1; the intervals cover evaluation noise only, not training-seed variance "
         "(train more seeds with sweep.seeds to include it)"),
        "sampling cost is the paper's: normalized cost x steps, a guided step counted as one step",
        f"training-compute reference: {ref['note']}",
    ]


def _subtitle(table: pd.DataFrame, claims: list[dict], noisy: bool) -> str:
    counts = {v: sum(c["verdict"] == v for c in claims) for v in dict.fromkeys(c["verdict"] for c in claims)}
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    sizes = table.groupby("width")["params"].first().sort_values()
    return (f"{len(claims)} claims of Mei et al. 2024 checked on {len(sizes)} sizes "
            f"({size_label(sizes.iloc[0])} to {size_label(sizes.iloc[-1])}), {table['seed'].nunique()} seed(s): "
            f"{tally}. Intervals are 95%" + ("." if noisy else " where the table has noise estimates."))


def _split(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    if "experiment" not in table:
        return table, {}
    exp = table["experiment"].fillna(BASE).astype(str)
    others = {e: table[exp == e] for e in pd.unique(exp) if e != BASE}
    return table[exp == BASE], others


def analyze(run_dir: str | Path, n_boot: int = 200, seed: int = 0,
            wandb_mode: str | None = "offline", wandb_project: str = "ldm-scaling",
            progress: bool = True, wandb_group: str | None = None) -> dict:
    """Run the whole analysis of RUN_DIR into RUN_DIR/analysis; return a summary."""
    run = Path(run_dir)
    source = results_path(run)
    table = load_results(run, experiment=None)  # every experiment: split into base and the rest below
    base, exp_tables = _split(table)
    if base.empty:
        raise ValueError(f"{source.name} has no rows of the base experiment (experiment = '{BASE}'): "
                         "the derived experiments are read against it; run the base sweep first")
    out = run / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    pts, ref = training_points(base)
    fits = fit_training(pts, n_boot, seed, progress)
    results = {m: r for m in ("fid", "alignment")
               if (r := analyze_metric(base, m, n_boot, seed, progress)) is not None}
    fid = results["fid"]
    # Cost curves of each derived experiment's checkpoints as trained (an experiment of weight variants, e.g.
    # post-hoc EMA lengths at one cell, has its own analysis instead).
    experiments = {e: {"fid": r} for e, rows in exp_tables.items()
                   if np.isfinite(pd.to_numeric(rows["fid"], errors="coerce")).any()
                   and (rows["variant"].fillna("") == "").all()
                   and (r := analyze_metric(rows, "fid", n_boot, seed, progress)) is not None}
    guidance = optimal_guidance(base)

    figs: dict[str, dict[str, str]] = {}
    floor = fid.curves["floor"].mean() if fid.curves["floor"].notna().any() else float("nan")
    figs["training"] = plot_training(pts, fits, ref, out, floor)
    for m, r in results.items():
        figs[f"{m}_steps"] = plot_steps(r, out)
        figs[f"{m}_cost"] = plot_cost(r, out)
    figs["best_size"] = plot_best_size(fid, out)
    figs["guidance"] = plot_guidance(guidance, out)
    figs["samplers"] = plot_samplers(fid, out)
    for e, res in experiments.items():
        figs[f"{e}_cost"] = plot_cost(res["fid"], out, name=f"{e}_fid_vs_sampling_cost")
        if e == "distillation":  # the paper's comparison: distilled and undistilled at equal sampling cost
            figs[f"{e}_vs_base"] = plot_overlay(fid, res["fid"], out, "distilled_vs_undistilled", "distilled")

    found = {m: inference_findings(r) for m, r in results.items()}
    train_text = training_findings(fits)
    derived = experiment_analyses(table, out, n_boot, seed)  # each derived experiment's figures and tables
    claims = check_claims(Evidence(table=table, base=base, pts=pts, ref=ref, fits=fits,
                                   results=results, experiments=experiments, analyses=derived))
    claims = add_planner_advice(claims, table, str(run_dir), seed)  # what the planner would run next
    numbers = prediction_table(fits)
    # Beyond the paper's method: isoFLOP profiles beside the joint law, the held-out loss and its map to FID.
    beyond, beyond_numbers, beyond_tables = loss_sections(base, pts, fits, n_boot, seed, out)
    # The isoFLOP (approach 2) numbers join the Numbers table, beside the joint law's (approach 3) already there.
    iso_rows = beyond_numbers[beyond_numbers["fit"].str.startswith("isoflop/")]
    if len(iso_rows):
        numbers = pd.DataFrame(numbers.to_dict(orient="records") + iso_rows.to_dict(orient="records"),
                               columns=numbers.columns)
    bands = segment_table(fid)
    pairs = pd.concat([r.pairs for r in [*results.values(), *(e["fid"] for e in experiments.values())]],
                      ignore_index=True)
    final_pairs = fid.pairs[fid.pairs["budget"] == FINAL] if len(fid.pairs) else fid.pairs
    crossovers = crossover_table(final_pairs)
    flagged = flag_fits(fits)
    paths = {
        "fits_json": write_json(out / "fits.json", {"reference": ref, "fits": flagged,
                                                    "findings": train_text}),
        "fits_csv": write_csv(out / "fits.csv", fits_table(fits)),
        "numbers": write_csv(out / "numbers.csv", numbers),
        "claims": write_csv(out / "claims.csv", pd.DataFrame(claims)),
        "training_points": write_csv(out / "training_points.csv", pts),
        "frontier": write_csv(out / "frontier.csv", pd.concat(
            [r.frontier for r in results.values()], ignore_index=True)),
        "best_size": write_csv(out / "best_size.csv", pd.concat(
            [r.best_size for r in results.values()], ignore_index=True)),
        "best_size_bands": write_csv(out / "best_size_bands.csv", bands),
        "crossovers": write_csv(out / "crossovers.csv", crossovers),
        "pairs": write_csv(out / "pairs.csv", pairs),
        "curves_csv": write_csv(out / "curves.csv", pd.concat(
            [r.curves for r in results.values()], ignore_index=True)),
        "guidance": write_csv(out / "optimal_guidance.csv", guidance),
    }
    paths.update({k: write_csv(out / f"{k}.csv", t) for k, t in beyond_tables.items()})
    paths["curves_json"] = write_json(out / "curves.json", {
        m: {"curves": r.curves, "frontier": r.frontier, "best_size": r.best_size,
            "pairs": r.pairs, "findings": found[m]} for m, r in results.items()})
    method = getattr(fid, "method", None)  # how crossings, ties and intervals were computed
    page = {"title": f"ldm-scaling: {run.name}", "subtitle": _subtitle(base, claims, fid.noisy),
            "claims": claims, "numbers": numbers,
            "sections": _after(sections(figs, results, found, fits, pts, guidance, bands, experiments, exp_tables,
                                        paths), "training", beyond)
            + experiment_sections(derived, claims)
            + [s for s in [backtest_section(base, n_boot, seed, out)] if s],
            "about": _about(base, source, ref, fid.noisy, n_boot, method),
            "files": {k: v for k, v in paths.items()}}
    paths["report"] = write_report(out / "report.html", page)
    paths["findings_md"] = write_markdown(out / "findings.md", page)
    best = [{"sampler": s, "size": r.get("label", size_label(r["params"])), **r}  # "A ~ B" when tied
            for s, g in fid.best_size[fid.best_size["budget"] == FINAL].groupby("sampler", sort=False)
            for r in winner_ranges(g)]
    summary = {"out_dir": str(out), "report": paths["report"], "findings_md": paths["findings_md"],
               "paths": paths, "figures": figs, "reference": ref, "best_size_per_budget": best,
               "best_size_bands": bands.to_dict(orient="records"), "claims": claims,
               "numbers": numbers.to_dict(orient="records"),
               "crossovers": crossovers.to_dict(orient="records"),
               "findings": [s for f in found["fid"].values() for s in f][:12]}
    summary["wandb_dir"] = log_analysis(
        run, wandb_project, wandb_mode, group=wandb_group or run.name,
        tables={"claims": pd.DataFrame(claims), "numbers": numbers, "crossovers": pairs,
                "best_size": bands, "frontier": pd.read_csv(paths["frontier"]), "fits": fits_table(fits),
                "training_points": pts, **beyond_tables, "findings": frame_of({"training": train_text, **{
                    f"{m}/{k}": v for m, f in found.items() for k, v in f.items()}}),
                **{f"{name}/{k}": t for name, res in derived.items() for k, t in res.get("tables", {}).items()
                   if isinstance(t, pd.DataFrame)}},
        curves=_wandb_curves(results, experiments, pts),
        training=pts.assign(size=pts["params"].map(size_label)),
        figures={k: v["png"] for k, v in figs.items()},
        summary=_wandb_summary(flagged, crossovers, claims),
        config={"run_dir": str(run), "bootstrap": n_boot, "seed": seed, **ref},
        study=StudyLog(results=read_table(source), keys_file=str(out / "wandb_keys.json"),
                       artifact=_artifact_files(source, paths),
                       grids=_grids(run, derived), best_size=fid.best_size[fid.best_size["budget"] == FINAL]))
    return summary


def _after(secs: list[dict], anchor: str, more: list[dict]) -> list[dict]:
    """The sections with `more` inserted after the one whose id is `anchor` (at the end without it)."""
    at = next((i + 1 for i, s in enumerate(secs) if s["id"] == anchor), len(secs))
    return secs[:at] + more + secs[at:]


def _artifact_files(source: Path, paths: dict) -> dict[str, str]:
    """The study-results artifact: the table and what the analysis derived from it."""
    keys = ("fits_json", "fits_csv", "curves_csv", "crossovers", "claims", "findings_md", "report")
    return {source.name: str(source), **{Path(paths[k]).name: str(paths[k]) for k in keys if k in paths}}


def _grids(run: Path, derived: dict[str, dict]) -> list[dict]:
    """Every sample grid the study wrote: each size's (RUN_DIR/grids/base, with what it shows beside it) and
    the derived experiments' (their analyses' grid figures, with their captions)."""
    import json

    out = []
    for meta_file in sorted((run / "grids" / "base").glob("w*-s*.json")):
        m = json.loads(meta_file.read_text())
        out.append({"key": f"grids/base/w{m['width']}-s{m['seed']}", "png": str(meta_file.with_suffix(".png")),
                    "caption": f"{size_label(m['params'])} (width {m['width']}, seed {m['seed']}) after "
                               f"{m['train_images']} images: {m['sampler']}, {m['steps']} steps, guidance "
                               f"{m['guidance']:g}; the same prompts and noise for every size"})
    for name, res in derived.items():
        captions = res.get("captions", {})
        for key, png in res.get("figures", {}).items():
            if "grid" in key:
                out.append({"key": f"grids/{name}/{key}", "png": png, "caption": captions.get(key, key)})
    return out


def _wandb_curves(results: dict, experiments: dict, pts: pd.DataFrame) -> pd.DataFrame:
    """Every curve point in one long table (experiment, metric, sampler, size, ...), for W&B charts."""
    parts = [r.curves.assign(experiment=BASE) for r in results.values()]
    parts += [e["fid"].curves.assign(experiment=name) for name, e in experiments.items()]
    cur = pd.concat(parts, ignore_index=True)
    cur = cur[cur["budget"] == FINAL].assign(size=lambda d: d["params"].map(size_label))
    return cur[["experiment", "metric", "sampler", "size", "params", "steps", "sampling_cost", "value", "std"]]


def _wandb_summary(fits: dict, crossovers: pd.DataFrame, claims: list[dict]) -> dict:
    from analysis.gof import DOES_NOT_FIT, fits as law_fits
    from analysis.readable import NOT_DETERMINED

    flat: dict[str, float | str] = {}
    named = [("envelope", fits["envelope"]), ("optimal_size", fits["optimal_size"]),
             ("chinchilla", fits["chinchilla"])] + [(f"power/width={w}", f) for w, f in fits["per_size"].items()]
    for name, fit in named:
        flags = fit.get("undetermined", {})
        for kind in ("params", "derived"):
            for q, v in fit.get(kind, {}).items():
                flat[f"{name}/{q}"] = (DOES_NOT_FIT if not law_fits(fit) else NOT_DETERMINED if q in flags
                                       else v["value"])
        if fit.get("gof"):  # the goodness of fit of each law (analysis.gof)
            flat[f"{name}/gof_statistic"] = fit["gof"]["gof_statistic"]
            flat[f"{name}/gof_p"] = fit["gof"]["gof_p"]
            flat[f"{name}/fits"] = fit["gof"]["fits"]
    for row in crossovers.itertuples():
        flat[f"crossover/{row.sampler}/{row.smaller_width}-{row.larger_width}"] = float(row.crossover_cost)
        # How sure: the share of resamples that cross, and the plain verdict (crossovers.py).
        flat[f"crossover/{row.sampler}/{row.smaller_width}-{row.larger_width}/p_cross"] = float(row.p_cross)
        if "verdict" in crossovers:
            flat[f"crossover/{row.sampler}/{row.smaller_width}-{row.larger_width}/verdict"] = row.verdict
    for c in claims:
        flat[f"claim/{c['key']}"] = c["verdict"]
    return flat
