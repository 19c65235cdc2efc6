"""The report's sections beyond the paper's method (issue 29): isoFLOP profiles (Chinchilla's approach 2) beside the
joint law (approach 3), the held-out loss against training compute, and the map from loss to FID.

Every number carries its 95 % interval and says what the interval covers; a number the points do not determine, or
of a law that fails its goodness-of-fit test, is blanked with why (analysis.readable's rule, as in the Numbers
table), and a law is drawn only where it fits its points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis.figures import legend_by_size, new_figure, save, size_colors
from analysis.frontier import pareto_mask
from analysis.gof import fits as law_fits, gof_summary, point_noise
from analysis.isoflop import isoflop, parabola
from analysis.loss import loss_points, loss_to_fid
from analysis.plot_training import draw_training
from analysis.readable import number_row, undetermined
from analysis.report import interval_text, number_text
from analysis.table import size_label
from analysis.training import fit_training

NUMBER_COLUMNS = ["fit", "quantity", "what", "unit", "value", "low", "high", "determined", "note"]


def loss_training_points(base: pd.DataFrame) -> pd.DataFrame:
    """The held-out loss per (size, budget) shaped as analysis.training's points (the value in `fid`, the column
    its laws and figure read), with the compute-optimal envelope marked."""
    lp = loss_points(base)
    if lp.empty:
        return lp
    lp = lp.rename(columns={"loss": "fid"}).assign(seed_sd=np.nan)
    return lp.assign(envelope=pareto_mask(lp["train_flops"].values, lp["fid"].values, lower_is_better=True))


def _rows(name: str, fit: dict, quantities: list[tuple[str, str, str]]) -> list[dict]:
    """Numbers-table rows of a fit's quantities (value with interval, or blank with why)."""
    if fit.get("skipped", True):
        return []
    flags = undetermined(fit)
    have = {**fit.get("params", {}), **fit.get("derived", {})}
    return [number_row(name, what, unit, q, fit, flags) for q, what, unit in quantities if q in have]


def view(rows: list[dict]) -> pd.DataFrame:
    """What a reader wants of number rows: what, value [95% interval] (or why not)."""
    return pd.DataFrame({"what": [r["what"] for r in rows], "value [95% interval]": [number_text(r) for r in rows]})


def agreement(a: dict, b: dict) -> str:
    """Whether two numbers agree within their 95 % intervals (the intervals overlap), or why it cannot be said."""
    for r in (a, b):
        if not r["determined"]:
            return f"cannot say: {r['fit']} {r['quantity']} is not given ({r['note']})"
        if not np.isfinite([r["low"], r["high"]]).all():
            return f"cannot say: {r['fit']} {r['quantity']} has no interval"
    overlap = max(a["low"], b["low"]) <= min(a["high"], b["high"])
    return "agree (the 95% intervals overlap)" if overlap else "disagree (the 95% intervals do not overlap)"


# ----- isoFLOP profiles beside the joint law -----

ISO_QUANTITIES = [("a", "isoFLOP: N_opt grows as C^a", ""),
                  ("n_opt_at_max_compute", "isoFLOP: compute-optimal size at the largest training compute", "params")]
JOINT_QUANTITIES = [("n_opt_exponent", "joint law: N_opt grows as C^(beta/(alpha+beta))", ""),
                    ("n_opt_at_max_compute", "joint law: compute-optimal size at the largest training compute",
                     "params")]


def isoflop_part(label: str, pts: pd.DataFrame, joint: dict, n_boot: int, seed: int) -> dict:
    """One signal's isoFLOP profiles, its optimal-size law and its comparison with the joint law's."""
    iso = isoflop(pts.assign(std=point_noise(pts)), "fid", n_boot=n_boot, seed=seed)
    out = {"label": label, "iso": iso, "rows": [], "lines": []}
    if iso.get("skipped"):
        out["lines"].append(f"{label}: no isoFLOP profile ({iso['reason']}).")
        return out
    law = iso["law"]
    named = lambda qs: [(q, f"{label}, {what}", unit) for q, what, unit in qs]  # noqa: E731 (FID or loss)
    iso_rows = _rows(f"isoflop/{label}", law, named(ISO_QUANTITIES))
    joint_rows = _rows(f"joint/{label}", joint, named(JOINT_QUANTITIES))
    out["rows"] = iso_rows + joint_rows
    if law.get("skipped"):
        out["lines"].append(f"{label}: the optimal-size law is not fitted ({law['reason']}).")
    else:
        out["lines"].append(f"{label}: N_opt = k C^a over {law['levels_used']} compute levels; "
                            f"{gof_summary(law)}.")
    if iso_rows and joint_rows:
        for (iq, jq, what) in (("a", "n_opt_exponent", "exponent of N_opt in C"),
                               ("n_opt_at_max_compute", "n_opt_at_max_compute", "N_opt at the largest compute")):
            ir = next((r for r in iso_rows if r["quantity"] == iq), None)
            jr = next((r for r in joint_rows if r["quantity"] == jq), None)
            if ir and jr:
                out["lines"].append(f"{label}, {what}: isoFLOP {number_text(ir)} vs joint law {number_text(jr)}: "
                                    f"{agreement(ir, jr)}.")
    elif joint.get("skipped", True):
        out["lines"].append(f"{label}: no joint law to compare with ({joint.get('reason', 'not fitted')}).")
    return out


def _level_table(iso: dict) -> pd.DataFrame:
    lv = iso["levels"]
    def size(v): return size_label(v) if np.isfinite(v) else "n/a"
    return pd.DataFrame({
        "compute (FLOPs)": lv["compute"], "sizes at this compute": lv["n_sizes"],
        "N_opt [95% interval]": [f"{size(r.n_opt)} [{size(r.low)}, {size(r.high)}]" for r in lv.itertuples()],
        "minimum inside the trained sizes": lv["inside_sizes"],
        "share of resamples with a minimum": lv["share_with_minimum"]})


def _iso_figure(parts: list[dict], joints: dict[str, dict], out: Path) -> str | None:
    shown = [p for p in parts if not p["iso"].get("skipped")]
    if not shown:
        return None
    fig, axes = new_figure(len(shown) + 1)
    law_ax = axes[-1]
    for ax, part, marker in zip(axes, shown, ("o", "s")):
        iso, prof = part["iso"], part["iso"]["profiles"]
        colors = size_colors(iso["levels"]["compute"])
        for c, g in prof.groupby("compute"):
            col = colors[float(c)]
            ax.plot(g["params"], g["value"], marker, color=col, label=f"{c:.2g} FLOPs")
            fit = g[g["in_fit"]]
            if len(fit) >= 3:  # the parabola over the sizes it was fitted to
                a, b, cc = parabola(fit["params"].to_numpy(float), fit["value"].to_numpy(float), len(fit))
                u = np.linspace(np.log(fit["params"].min()), np.log(fit["params"].max()), 50)
                ax.plot(np.exp(u), a * u ** 2 + b * u + cc, "-", color=col, linewidth=1)
        for r in iso["levels"].itertuples():
            if r.inside_sizes and np.isfinite(r.low):
                y = float(prof[prof["compute"] == r.compute]["value"].min())
                ax.errorbar([r.n_opt], [y], xerr=[[r.n_opt - r.low], [r.high - r.n_opt]], fmt="k|", capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel(part["label"])
        ax.set_title(f"isoFLOP profiles: {part['label']}\nbars: N_opt with its 95% interval", fontsize=9)
        ax.legend(fontsize=7, title="compute", title_fontsize=7)
        lv = iso["levels"][iso["levels"]["inside_sizes"]]
        law_ax.errorbar(lv["compute"], lv["n_opt"], yerr=[lv["n_opt"] - lv["low"], lv["high"] - lv["n_opt"]],
                        fmt=marker, capsize=3, label=f"isoFLOP minima ({part['label']})")
        law = iso["law"]
        x = np.geomspace(iso["levels"]["compute"].min(), law.get("max_compute", iso["levels"]["compute"].max()), 50)
        if not law.get("skipped") and law_fits(law) and not undetermined(law):
            law_ax.plot(x, law["k"]["value"] * x ** law["a"]["value"], "-",
                        label=f"isoFLOP law ({part['label']}): C^{law['a']['value']:.2f}")
        joint = joints[part["label"]]
        if not joint.get("skipped", True) and law_fits(joint):
            p = {k: v["value"] for k, v in joint["params"].items()}
            s = p["alpha"] + p["beta"]
            g_ = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / s)
            law_ax.plot(x, g_ * (x / joint["flops_per_param_image"]) ** (p["beta"] / s), "--",
                        label=f"joint law ({part['label']}): C^{p['beta'] / s:.2f}")
    law_ax.set_xscale("log")
    law_ax.set_yscale("log")
    law_ax.set_xlabel("training compute C (FLOPs)")
    law_ax.set_ylabel("compute-optimal size N_opt")
    law_ax.set_title("N_opt against compute: approach 2 (isoFLOP) and 3 (joint law)\n"
                     "lines drawn where the law fits its points", fontsize=9)
    law_ax.legend(fontsize=7)
    return save(fig, out, "isoflop")["png"]


def isoflop_section(parts: list[dict], joints: dict[str, dict], out: Path) -> dict:
    """The isoFLOP section: profiles and minima per compute level, the optimal-size law beside the joint law's."""
    png = _iso_figure(parts, joints, out)
    rows = [r for p in parts for r in p["rows"]]
    details = [{"summary": f"{p['label']}: compute-optimal size at each compute level (95% interval: every "
                           "point's noise, bootstrap, widened by the parabola's own error)",
                "table": _level_table(p["iso"])} for p in parts if not p["iso"].get("skipped")]
    return {"id": "isoflop", "title": "Compute-optimal size: isoFLOP profiles beside the joint law",
            "intro": "At each compute level, every size's value read off its own training curve, a parabola in log "
                     "size through the lowest size and its neighbours, and its minimum N_opt; then N_opt = k C^a "
                     "across levels (Chinchilla's approach 2), beside the joint law E + A/N^alpha + B/D^beta's "
                     "compute-optimal size (approach 3). Intervals: 95% percentile bootstrap over every point's "
                     "noise (evaluation noise and seed spread; training-seed variance only where the table has "
                     "2+ seeds).",
            "figures": [{"png": png, "caption": "Left: isoFLOP profiles, parabolas over the sizes they were fitted "
                                                "to, minima with their intervals. Right: the minima against compute "
                                                "with both laws, each drawn only where it fits its points."}]
            if png else [],
            "side": view(rows) if rows else None,
            "lines": [s for p in parts for s in p["lines"]], "details": details}


# ----- the held-out loss against training compute -----

LOSS_QUANTITIES = [("alpha", "joint law of the loss: exponent in model size", ""),
                   ("beta", "joint law of the loss: exponent in training images", ""),
                   ("E", "joint law of the loss: irreducible loss", "loss")]


def loss_law_section(lp: pd.DataFrame, lfits: dict, out: Path) -> tuple[dict, list[dict]]:
    """Loss against training compute per size (E + A C^-alpha) and jointly; the section and its number rows."""
    fig, (ax,) = new_figure(1, panel_size=(7.0, 4.8))
    laws = draw_training(ax, lp, lfits)
    joint = lfits["chinchilla"]
    if not joint.get("skipped", True) and law_fits(joint):
        p = {k: v["value"] for k, v in joint["params"].items()}
        colors = size_colors(lp["params"])
        for params, g in lp.groupby("params"):
            c = np.geomspace(g["train_flops"].min(), g["train_flops"].max() * 3, 60)
            d = c / (joint["flops_per_param_image"] * params)
            ax.plot(c, p["E"] + p["A"] / params ** p["alpha"] + p["B"] / d ** p["beta"], ":",
                    color=colors[float(params)], linewidth=1.5)
        ax.add_line(Line2D([], [], linestyle=":", color="0.3", label="joint law E + A/N^alpha + B/D^beta"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("held-out denoising loss")
    ax.set_title("Held-out loss vs training compute\nsolid: E + A C^-alpha per size; dotted: the joint law; "
                 "drawn where the law fits its points", fontsize=9)
    legend_by_size(ax)
    png = save(fig, out, "loss_vs_training_compute")["png"]
    rows = _rows("joint/loss", joint, LOSS_QUANTITIES)
    for w, fit in lfits["per_size"].items():
        label = fit.get("label", w)
        rows += _rows(f"loss_power/width={w}", fit,
                      [("alpha", f"{label}: exponent of loss - E in training compute", ""),
                       ("fid_at_10x_compute", f"{label}: loss at 10x its largest training compute", "loss")])
    lines = [f"joint law of the loss: {gof_summary(joint)}" if not joint.get("skipped", True)
             else f"joint law of the loss: not fitted ({joint.get('reason')})"]
    lines += [f"not fitted: {f['reason']}" for f in lfits["per_size"].values() if f.get("skipped")]
    if laws["not_fit"]:
        lines.append("laws that do not fit their points (not drawn): " + ", ".join(laws["not_fit"]))
    return ({"id": "loss_laws", "title": "Held-out loss vs training compute",
             "intro": "The held-out denoising loss (fixed held-out samples, noise and timesteps for every "
                      "checkpoint) per size and budget, with a power law in compute per size and the joint law in "
                      "size and images. Intervals: 95% residual bootstrap of each fit; the points' noise is the "
                      "loss's standard error over the held-out samples (and the seed spread with 2+ seeds).",
             "figures": [{"png": png, "caption": "Held-out loss against training compute per size; the laws as "
                                                 "lines where they fit their points."}],
             "side": view(rows), "lines": lines,
             "details": [{"summary": "the loss points (mean over seeds, std = its noise)", "table": lp.drop(
                 columns=["envelope", "seed_sd"], errors="ignore").rename(columns={"fid": "loss"})}]}, rows)


# ----- loss to FID -----

def _map_view(maps: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "sampler": maps["curve"], "steps": maps["steps"], "checkpoints": maps["n"],
        "FID ~ loss^k: k [95%]": [interval_text(r.slope, r.slope_low, r.slope_high) if r.fits != "no"
                                  else "the law does not fit these points" for r in maps.itertuples()],
        "fits its points": [f"{r.fits} (p = {r.gof_p:.2g})" if np.isfinite(r.gof_p) else r.fits
                            for r in maps.itertuples()],
        "held-out error of FID [95%]": [interval_text(r.loo_rel_error, r.loo_rel_error_low, r.loo_rel_error_high)
                                        for r in maps.itertuples()],
        "held-out FIDs inside their 95% prediction interval [95%]": [
            interval_text(r.loo_coverage, r.loo_coverage_low, r.loo_coverage_high) for r in maps.itertuples()]})


def _map_figure(table: pd.DataFrame, maps: pd.DataFrame, out: Path) -> str:
    from analysis.table import cells

    c = cells(table, "fid").dropna(subset=["heldout_loss"])
    curves_ = list(dict.fromkeys(maps["curve"]))
    fig, axes = new_figure(len(curves_))
    for ax, cv in zip(axes, curves_):
        for m in maps[maps["curve"] == cv].itertuples():
            g = c[(c["curve"] == cv) & (c["steps"] == m.steps)]
            pts = ax.plot(g["heldout_loss"], g["value"], "o", markersize=4, label=f"{m.steps} steps")
            if m.fits != "no":  # a line only where it fits its points
                x = np.geomspace(g["heldout_loss"].min(), g["heldout_loss"].max(), 20)
                ax.plot(x, np.exp(m.intercept) * x ** m.slope, "-", color=pts[0].get_color(), linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("held-out loss")
        ax.set_ylabel("FID at the best guidance")
        ax.set_title(f"{cv}: FID against held-out loss, every size and budget", fontsize=9)
        ax.legend(fontsize=7)
    return save(fig, out, "loss_to_fid")["png"]


def loss_to_fid_section(table: pd.DataFrame, maps: pd.DataFrame, out: Path) -> dict:
    """The loss-to-FID map per sampler and step count, judged on checkpoints it did not see."""
    if maps.empty:
        return {"id": "loss_to_fid", "title": "From held-out loss to FID",
                "lines": ["no (sampler, steps) has 4+ checkpoints with both a held-out loss and an FID: "
                          "the map needs them (evaluate more budgets, or set eval.heldout_samples > 0)"]}
    best = maps.sort_values("loo_rel_error").iloc[0]
    return {"id": "loss_to_fid", "title": "From held-out loss to FID",
            "intro": "FID = c loss^k per sampler and step count, fitted across every size and budget; each "
                     "checkpoint's FID predicted by the map fitted without it (leave one checkpoint out). Error: "
                     "mean relative error of those predictions, 95% bootstrap interval over the checkpoints; "
                     "coverage: the share of held-out FIDs inside their 95% prediction interval, with its Wilson "
                     "interval. A budget scored by its loss alone gets its FID this way (`study predict`).",
            "figures": [{"png": _map_figure(table, maps, out),
                         "caption": "FID against held-out loss; lines where the map fits its points."}],
            "side": _map_view(maps),
            "lines": [f"best-predicted cell: {best.curve}, {best.steps} steps: held-out error "
                      f"{interval_text(best.loo_rel_error, best.loo_rel_error_low, best.loo_rel_error_high)}, "
                      f"coverage {interval_text(best.loo_coverage, best.loo_coverage_low, best.loo_coverage_high)}"],
            "details": [{"summary": "every map's numbers", "table": maps}]}


def loss_sections(base: pd.DataFrame, pts: pd.DataFrame, fits: dict, n_boot: int, seed: int,
                  out: Path) -> tuple[list[dict], pd.DataFrame, dict[str, pd.DataFrame]]:
    """The three sections (isoFLOP, loss laws, loss to FID), their number rows and their tables for the CSVs."""
    out = Path(out)
    lp = loss_training_points(base)
    sections, rows, tables = [], [], {}
    joints = {"FID": fits["chinchilla"]}
    parts = [isoflop_part("FID", pts, fits["chinchilla"], n_boot, seed)]
    if not lp.empty:
        lfits = fit_training(lp, n_boot, seed)
        joints["held-out loss"] = lfits["chinchilla"]
        parts.append(isoflop_part("held-out loss", lp, lfits["chinchilla"], n_boot, seed))
    sections.append(isoflop_section(parts, joints, out))
    rows += [r for p in parts for r in p["rows"]]
    for p in parts:
        if not p["iso"].get("skipped"):
            tables[f"isoflop_{'fid' if p['label'] == 'FID' else 'loss'}"] = p["iso"]["levels"]
    if lp.empty:
        sections.append({"id": "loss_laws", "title": "Held-out loss vs training compute",
                         "lines": ["the table has no held-out loss (eval.heldout_samples was 0 when it was "
                                   "evaluated): set it > 0 and rerun the evaluation"]})
    else:
        sec, lrows = loss_law_section(lp, lfits, out)
        sections.append(sec)
        rows += lrows
        tables["loss_points"] = lp.rename(columns={"fid": "loss"})  # (the training fits read the value as `fid`)
    maps = loss_to_fid(base, seed=seed)
    sections.append(loss_to_fid_section(base, maps, out))
    if len(maps):
        tables["loss_to_fid"] = maps
    return sections, pd.DataFrame(rows, columns=NUMBER_COLUMNS), tables
