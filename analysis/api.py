"""Entry points the command line calls: `study fit` and `study analyze`.

Bad input raises ValueError with one line naming the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path

from analysis.bootstrap import bootstrap_fit
from analysis.export import jsonable, write_json
from analysis.laws import get_law
from analysis.pipeline import analyze
from analysis.table import read_table, require_columns, validate

# Quantities worth an interval besides the parameters (Chinchilla eq. 4 exponents).
DERIVED = {
    "chinchilla": {"n_opt_exponent": lambda p: p["beta"] / (p["alpha"] + p["beta"]),
                   "d_opt_exponent": lambda p: p["alpha"] / (p["alpha"] + p["beta"])},
}


def _variables(law_name: str, wanted: tuple[str, ...], x: dict[str, str]) -> dict[str, str]:
    if set(x) == set(wanted):
        return {v: x[v] for v in wanted}
    if len(wanted) == 1 and len(x) == 1:  # one-variable law: the name given does not matter
        return {wanted[0]: next(iter(x.values()))}
    need = " ".join(f"--x {v}=COLUMN" for v in wanted)
    raise ValueError(f"law {law_name!r} takes variable(s) {', '.join(wanted)} but got "
                     f"{', '.join(x) or 'none'}: pass {need}")


def fit_csv(csv_path, law: str, x: dict[str, str], y: str, bootstrap: int = 200,
            seed: int = 0, out: str | None = None) -> dict:
    """Fit a named law to columns of a CSV (or parquet); return the JSON dict, write it if out."""
    spec = get_law(law)
    xs = _variables(law, spec.variables, dict(x))
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}: pass --bootstrap K")
    frame = read_table(csv_path)
    cols = list(dict.fromkeys([*xs.values(), y]))
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"unknown column(s) {', '.join(missing)} in {Path(csv_path).name}: "
                         f"use one of {', '.join(map(str, frame.columns))}")
    require_columns(frame, cols, Path(csv_path).name)
    # A text or an infinite value is a corrupt row, as `study analyze` judges one: named, refused in bulk.
    data = validate(frame[cols], Path(csv_path).name, numeric=tuple(cols), required=())
    # Logs of the variables and of y are taken: missing and non-positive rows cannot enter.
    usable = data.notna().all(axis=1) & (data > 0).all(axis=1)
    n = int(usable.sum())
    if n < len(spec.params):
        raise ValueError(f"too few points: {n} usable row(s) (positive, non-missing {', '.join(cols)})"
                         f", the {law} law needs at least {len(spec.params)}: add rows or "
                         "check the columns")
    d = data[usable]
    result = bootstrap_fit(spec, [d[c].to_numpy(float) for c in xs.values()],
                           d[y].to_numpy(float), n_boot=int(bootstrap), seed=seed,
                           derived=DERIVED.get(law))
    result = jsonable({**result, "variables": xs, "y": y, "source": str(csv_path),
                       "dropped_rows": int(len(frame) - n)})
    if out:
        write_json(out, result)
    return result


def analyze_run(run_dir, bootstrap: int = 200, seed: int = 0,
                wandb_mode: str | None = "offline", wandb_project: str = "ldm-scaling",
                progress: bool = True, wandb_group: str | None = None) -> dict:
    """Analyse RUN_DIR/results.parquet (or .csv) into RUN_DIR/analysis; return a summary.

    The W&B run joins the group of the study's training runs: wandb_group, by default the run
    folder's name (RUNS_DIR/NAME, NAME being the study's name).
    """
    if not Path(run_dir).is_dir():
        raise ValueError(f"{run_dir} is not a folder: pass the run folder holding results.parquet")
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}: pass --bootstrap K")
    return jsonable(analyze(run_dir, int(bootstrap), seed, wandb_mode, wandb_project, progress,
                            wandb_group))


VERDICT_MARK = {"reproduced": "+", "contradicted": "x"}


def summary_lines(summary: dict, width: int = 110) -> list[str]:
    """The findings of an analysis summary in a few terminal lines, and where the report is."""
    lines = ["Findings (paper's claim -> this run):"]
    for c in summary.get("claims", []):
        mark = VERDICT_MARK.get(c["verdict"], "?")
        found = c["found"] if len(c["found"]) <= width else c["found"][:width - 3].rsplit(" ", 1)[0] + "..."
        lines.append(f"  [{mark}] {c['title']}: {c['verdict']}")
        lines.append(f"      {found}")
        if c.get("resolve"):
            lines.append(f"      to resolve: {c['resolve']}")
        if c.get("advice"):
            lines.append(f"      next run: {c['advice']}")
    if len(lines) == 1:
        lines.append("  no claim of the paper could be checked on this results table")
    lines.append(f"report: {summary.get('report')}")
    if summary.get("findings_md"):
        lines.append(f"findings (Markdown): {summary['findings_md']}")
    if summary.get("wandb_dir"):
        lines.append(f"W&B run: {summary['wandb_dir']} (offline runs upload with `wandb sync`)")
    return lines

