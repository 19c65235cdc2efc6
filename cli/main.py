"""`study`: the thin command-line front. Each command parses, then calls one library function."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ldm-scaling: scaling-law studies of latent diffusion models.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configurations.")
app.add_typer(config_app, name="config")

CONFIG_ARG = typer.Argument(..., help="A YAML config (path or preset name: tiny, smoke, paper).")
OVERRIDES = typer.Argument(None, help="Dotlist overrides, e.g. train.batch_size=64.")


from study.errors import UserError  # noqa: E402  (one class for every failure the user can fix)
from sweeps.gpu_hours import ASSUMED_MFU  # noqa: E402  (a constant; the module imports nothing heavy)


def _load(config: str | None, overrides: list[str] | None):
    from study.config import load_config
    from study.errors import note_run_dir
    from study.paths import run_dir

    cfg = load_config(config, overrides or [])
    note_run_dir(run_dir(cfg))  # a failure from here on is logged in the run folder (if it exists)
    return cfg


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@config_app.command("show")
def config_show(config: str = CONFIG_ARG, overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Print the resolved config (preset + overrides, validated)."""
    from study.config import to_yaml

    typer.echo(to_yaml(_load(config, overrides)), nl=False)


@app.command()
def ladder(config: str = CONFIG_ARG, overrides: Optional[List[str]] = OVERRIDES,
           format: str = typer.Option("table", "--format", help="table or json"),
           memory: bool = typer.Option(False, "--memory", help="The GPU memory plan of each size on each GPU kind of "
                                       "the cluster file (resources.cluster_yaml) instead."),
           gpu_hours: bool = typer.Option(False, "--gpu-hours", help="The GPU-hours of each experiment and size on "
                                          "the GPU kind of its memory plan, at --mfu, instead."),
           mfu: float = typer.Option(ASSUMED_MFU, "--mfu", help="With --gpu-hours: the assumed fraction of each GPU's dense "
                                     "bf16 peak reached (no GPU has measured one yet).")) -> None:
    """Parameters, forward GFLOPs and normalized cost of each size, measured on the model itself."""
    from study.ladder import format_table, study_ladder

    if format not in ("table", "json"):
        raise UserError(f"--format {format!r}: expected 'table' or 'json'")
    if gpu_hours:
        if not 0 < mfu <= 1:
            raise UserError(f"--mfu {mfu}: expected a fraction of the GPU's peak in (0, 1]")
        from sweeps.gpu_hours import format_cost, study_cost

        cost = study_cost(_load(config, overrides), mfu)
        typer.echo(json.dumps([r.as_row() for r in cost], indent=1) if format == "json" else format_cost(cost, mfu))
        return
    if memory:
        from study.memory import format_plan, memory_plan

        plan = memory_plan(_load(config, overrides))
        typer.echo(json.dumps([r.as_row() for r in plan], indent=1) if format == "json" else format_plan(plan))
        return
    rows = study_ladder(_load(config, overrides))
    if format == "json":
        _echo_json([r.as_row() for r in rows])
    else:
        typer.echo(format_table(rows))


@app.command()
def prepare(config: str = CONFIG_ARG, overrides: Optional[List[str]] = OVERRIDES,
            evaluator: bool = typer.Option(True, "--evaluator/--no-evaluator",
                                           help="Also build the evaluation features and FID reference.")) -> None:
    """Encode the data and build the evaluator and reference statistics (cached, resumable)."""
    from study.prepare import prepare as run_prepare
    from study.paths import require_paths

    cfg = _load(config, overrides)
    require_paths(cfg, evaluation=evaluator)
    prep = run_prepare(cfg, evaluator=evaluator)
    _echo_json({"prepared": str(prep.dir), "evaluator": str(prep.data_dir), **prep.meta})


def _split_special(overrides: list[str] | None, keys: tuple[str, ...]) -> tuple[dict, list[str]]:
    special, rest = {}, []
    for o in overrides or []:
        k, _, v = o.partition("=")
        if k in keys:
            try:
                special[k] = int(v)
            except ValueError:
                raise UserError(f"{k}={v!r}: expected an integer") from None
        else:
            rest.append(o)
    return special, rest


@app.command()
def train(config: str = CONFIG_ARG, overrides: Optional[List[str]] = OVERRIDES,
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")) -> None:
    """Train one size: `study train CONFIG width=W [seed=S] [overrides]`; rerun to resume."""
    from study.config import to_yaml

    special, rest = _split_special(overrides, ("width", "seed"))
    cfg = _load(config, rest)
    if "width" not in special:
        raise UserError(f"study train needs width=W, one of the config's widths {list(cfg.model.widths)}")
    _check_width(f"width={special['width']}", special["width"], cfg.model.ladder)
    if dry_run:
        typer.echo(to_yaml(cfg), nl=False)
        return
    from study.paths import require_paths, run_dir
    from study.prepare import prepare as run_prepare
    from trainers import train_size

    from study.lock import folder_lock

    require_paths(cfg, evaluation=False)  # training needs no evaluator (no Inception file)
    with folder_lock(run_dir(cfg)):  # not beside a `study run` of the same folder
        prep = run_prepare(cfg, evaluator=False)
        summary = train_size(cfg, special["width"], special.get("seed", cfg.sweep.seeds[0]), run_dir(cfg), prep.dir)
    _echo_json(summary)


@app.command()
def sample(checkpoint: Path = typer.Argument(..., help="A milestone checkpoint folder."),
           prompt: List[str] = typer.Option(..., "--prompt", help="Prompt (repeat for several)."),
           out: Path = typer.Option(Path("grid.png"), "--out"),
           sampler: str = typer.Option("ddim", "--sampler"), steps: int = typer.Option(32, "--steps"),
           guidance: float = typer.Option(3.0, "--guidance"), n: int = typer.Option(8, "--n", help="Images per prompt."),
           seed: int = typer.Option(0, "--seed"), weights: str = typer.Option("ema", "--weights")) -> None:
    """Sample an image grid from a checkpoint: one row per prompt."""
    from study.errors import note_run_dir
    from study.imagegrid import sample_grid
    from study.schedulers import SAMPLERS

    size_dir = checkpoint.parent.parent  # RUN/train/wW-sS/checkpoints/milestone-N -> the size's folder
    note_run_dir(size_dir if (size_dir / "config.json").is_file() else None)
    for flag, value, ok, expected in (
            ("--n", n, n >= 1, "a positive number of images per prompt"),
            ("--steps", steps, steps >= 1, "a positive number of sampling steps"),
            ("--guidance", guidance, guidance > 0 and guidance != float("inf"), "a finite guidance scale > 0"),
            ("--sampler", sampler, sampler in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
            ("--weights", weights, weights in ("ema", "raw"), "'ema' or 'raw'"),
            ("--prompt", prompt, all(p.strip() for p in prompt), "non-empty prompts")):
        if not ok:
            raise UserError(f"{flag} {value!r}: expected {expected}")
    path = sample_grid(checkpoint, list(prompt), out, sampler=sampler, steps=steps, guidance=guidance,
                       per_prompt=n, seed=seed, weights=weights)
    typer.echo(str(path))


@app.command()
def sweep(config: str = CONFIG_ARG, overrides: Optional[List[str]] = OVERRIDES) -> None:
    """The training grid (Ray Tune) and the guidance search per cell (Optuna) into RUN_DIR/results."""
    from sweeps.sweep import run_sweep

    cfg = _load(config, overrides)
    _echo_json(run_sweep(cfg))


@app.command()
def analyze(run_dir: Path = typer.Argument(..., help="A run folder with results.parquet or results.csv."),
            bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap resamples for intervals."),
            seed: int = typer.Option(0, "--seed"),
            wandb_mode: str = typer.Option("offline", "--wandb", help="offline, online or disabled.")) -> None:
    """Fit scaling laws, find inference-budget crossovers, plot, export and write the report."""
    from analysis.api import analyze_run
    from study.errors import note_run_dir

    note_run_dir(run_dir)
    summary = analyze_run(run_dir, bootstrap=bootstrap, seed=seed,
                          wandb_mode=None if wandb_mode == "disabled" else wandb_mode)
    _echo_json(summary)


@app.command()
def fit(csv: Path = typer.Argument(..., help="Any CSV with the needed columns."),
        law: str = typer.Option(..., "--law", help="power, chinchilla or optimal_size."),
        x: List[str] = typer.Option(..., "--x", help="VAR=COLUMN, e.g. N=params (repeat for D=...)."),
        y: str = typer.Option(..., "--y", help="The column to fit."),
        bootstrap: int = typer.Option(200, "--bootstrap"), seed: int = typer.Option(0, "--seed"),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the fit as JSON here.")) -> None:
    """Fit a named law to any CSV; parameters with bootstrap intervals as JSON."""
    from analysis.api import fit_csv

    xs = {}
    for item in x:
        var, sep, col = item.partition("=")
        if not sep or not var or not col:
            raise UserError(f"--x {item!r}: expected VAR=COLUMN, e.g. --x N=params")
        xs[var] = col
    _echo_json(fit_csv(csv, law, xs, y, bootstrap=bootstrap, seed=seed, out=str(out) if out else None))


@app.command()
def dashboard(run_dir: Path = typer.Argument(..., help="A run folder analysed with W&B on."),
              push: bool = typer.Option(False, "--push", help="Save it to W&B (needs WANDB_API_KEY and network)."),
              entity: Optional[str] = typer.Option(None, "--entity", help="W&B entity (default: the key's).")) -> None:
    """The W&B workspace of a study's analysis: its spec in RUN_DIR/analysis/, or saved to W&B with --push."""
    from analysis.dashboard import push as push_workspace, write_spec

    try:
        if push:
            if not os.environ.get("WANDB_API_KEY"):
                raise UserError("--push needs WANDB_API_KEY in the environment (and the network); without them "
                                "`study dashboard RUN_DIR` writes the workspace spec to push later")
            typer.echo(f"workspace: {push_workspace(run_dir, entity)}")
            return
        spec = write_spec(run_dir, entity)
    except ValueError as err:
        raise UserError(str(err)) from None
    typer.echo(f"workspace spec: {spec}\npush it to W&B (key and network needed): study dashboard {run_dir} --push")


@app.command()
def ema(run_dir: Path = typer.Argument(..., help="A run folder (study run / study train)."),
        width: int = typer.Option(..., "--width", help="The trained width."),
        sigma_rel: float = typer.Option(..., "--sigma-rel", help="EMA length relative to training (EDM2: 0.05-0.15)."),
        seed: int = typer.Option(0, "--seed"),
        images: Optional[int] = typer.Option(None, "--images", help="The milestone (default: the last)."),
        experiment: str = typer.Option("base", "--experiment", help="Whose training run: base, superres, ...")) -> None:
    """Reconstruct a run's weights under any EMA length after training (post-hoc EMA, EDM2) as a checkpoint folder
    that `study sample` and the evaluation read."""
    from study.phema import reconstruct_checkpoint

    size_dir = run_dir / ("train" if experiment == "base" else f"{experiment}/train") / f"w{width}-s{seed}"
    try:
        out = reconstruct_checkpoint(size_dir, sigma_rel, images)
    except ValueError as err:
        raise UserError(str(err)) from None
    typer.echo(f"checkpoint (EMA sigma_rel {sigma_rel}): {out}")


def _check_width(what: str, width: int, ladder_name: str) -> None:
    """A base width the ladder can build (GroupNorm needs the width divisible by its groups), before any model."""
    from study.ladder import LADDERS

    preset = LADDERS[ladder_name]
    if not preset.fits(width):
        raise UserError(f"{what}: expected a positive base width divisible by the {ladder_name} ladder's "
                        f"{preset.norm_num_groups} norm groups, e.g. one of {list(preset.widths)}")


def _run_config(run_dir: Path):
    """The config a run folder was made with; from here on the error log goes to that folder."""
    from study.errors import note_run_dir
    from study.runfolder import recorded_config

    note_run_dir(run_dir)
    return recorded_config(run_dir)


def _positive(flag: str, value: float, what: str) -> None:
    if not (0 < value < float("inf")):  # also refuses nan, which every comparison fails
        raise UserError(f"{flag} {value!r}: expected {what}")


@app.command()
def predict(run_dir: Path = typer.Argument(..., help="A run folder with results and config.json."),
            width: int = typer.Option(..., "--width", help="The base width c to predict (trained or not)."),
            sampler: Optional[str] = typer.Option(None, "--sampler", help="Default: DDIM, else the first."),
            bootstrap: int = typer.Option(200, "--bootstrap"), seed: int = typer.Option(0, "--seed")) -> None:
    """Predict a width's FID-vs-sampling-cost curve and its crossovers from the joint law, before training it."""
    from analysis.predict import predict_run
    from analysis.table import size_label
    from study.runfolder import run_sizes

    _check_width(f"--width {width}", width, _run_config(run_dir).model.ladder)
    rung = run_sizes(run_dir, [width])[1].set_index("width").loc[width]
    summary = predict_run(run_dir, rung["params"], rung["normalized_cost"], f"w{width}-{size_label(rung['params'])}",
                          sampler, bootstrap, seed)
    def num(x) -> str:  # missing values arrive as None (JSON has no NaN)
        return "-" if x is None else f"{x:.3g}"

    for row in summary["crossovers"]:
        iv = f" [{num(row['low'])}, {num(row['high'])}]" if row["low"] is not None else ""
        typer.echo(f"{row['smaller']:>7} vs {row['larger']:<7} crossover at cost {num(row['crossover_cost'])}{iv}: "
                   f"{row['verdict']} (share of resamples crossing {num(row['p_cross'])})")
    for r in summary["from_loss"]:  # budgets scored by their held-out loss alone (analysis.loss)
        typer.echo(f"width {r['width']} seed {r['seed']} at {r['train_images']:.3g} images (held-out loss "
                   f"{r['heldout_loss']:.4g}, no FID): predicted FID {num(r['fid'])} "
                   f"[{num(r['low'])}, {num(r['high'])}] at {r['curve']}, {r['steps']} steps")
    typer.echo(f"figure: {summary['figure']}\ncurve: {summary['csv']}")


@app.command()
def recommend(run_dir: Path = typer.Argument(..., help="A run folder with results and config.json."),
              fid: float = typer.Option(..., "--fid", help="The quality target: the FID to reach."),
              images: float = typer.Option(..., "--images", help="How many images will be generated."),
              sampler: Optional[str] = typer.Option(None, "--sampler", help="Default: DDIM, else the first."),
              bootstrap: int = typer.Option(100, "--bootstrap"), seed: int = typer.Option(0, "--seed")) -> None:
    """The size, training budget and steps that reach --fid at the least training + inference compute."""
    from analysis.recommend import recommend_run
    from analysis.table import load_results, size_label
    from study.runfolder import run_sizes

    _positive("--fid", fid, "a finite FID > 0 to reach")
    _positive("--images", images, "a finite number of images > 0")
    if bootstrap < 0:
        raise UserError(f"--bootstrap {bootstrap}: expected a number of resamples >= 0")
    _run_config(run_dir)
    sizes = run_sizes(run_dir)[1][["width", "params", "gflops"]]
    res = recommend_run(load_results(run_dir), sizes, fid, images, sampler, bootstrap, seed)
    if res["choice"] is None:
        raise UserError(res["message"])
    c = res["choice"]
    typer.echo(f"{res['curve']}: width {c['width']} ({size_label(c['params'])}) trained on {c['train_images']:.3g} "
               f"images, sampled with {c['steps']} steps: predicted FID {c['predicted_fid']:.3g} (reached in "
               f"{res['p_reach']:.0%} of the law's bootstrap draws); training {c['train_flops']:.3g} + inference "
               f"{c['inference_flops']:.3g} = {c['total_flops']:.3g} FLOPs"
               + (" (extrapolated beyond the evaluated budgets or steps)" if c["extrapolated"] else ""))
    for r in res["table"].head(5).itertuples():
        typer.echo(f"  width {r.width:>4}: {r.train_images:.3g} images, {r.steps} steps, FID {r.predicted_fid:.3g}, "
                   f"{r.total_flops:.3g} FLOPs")


@app.command()
def plan(run_dir: Path = typer.Argument(..., help="A run folder with results and config.json."),
         target: str = typer.Option(..., "--target",
                                    help="alpha, beta, delta, fid:WIDTH@STEPS, gap:W1-W2@STEPS or crossover:W1-W2."),
         sampler: Optional[str] = typer.Option(None, "--sampler", help="Default: DDIM, else the first."),
         experiment: str = typer.Option("base", "--experiment",
                                        help="Whose FID rows to plan from: base, superres, distillation, ..."),
         top: int = typer.Option(8, "--top", help="How many candidates to print.")) -> None:
    """Rank the next runs (a new width, another seed, the next budget, more samples) by how much each shrinks
    the target's interval per FLOP."""
    from analysis.planner import plan_run, target_widths
    from analysis.table import load_results
    from study.runfolder import run_sizes

    if top < 1:
        raise UserError(f"--top {top}: expected a positive number of candidates")
    try:
        named = set(target_widths(target))  # its own option checked before any fit
    except ValueError as err:
        raise UserError(f"--target {err}") from None
    ladder_name = _run_config(run_dir).model.ladder
    for w in sorted(named):
        _check_width(f"--target {target} names width {w}", w, ladder_name)
    # The widths a target names (fid:40@4, crossover:24-40) count as the ladder too, as `study predict --width`.
    cfg, sizes = run_sizes(run_dir, named)
    table = load_results(run_dir, experiment=experiment)  # names the experiments it holds when it lacks this one
    # A derived experiment evaluates its own sample count (superres.num_eval, ...): weigh its cells by it.
    samples = cfg.eval.num_samples if experiment == "base" else int(table["num_samples"].min())
    res = plan_run(table, target, sizes, samples, sampler)
    rk = res["ranking"]
    typer.echo(f"{res['curve']}, target {target}: 95% interval now {rk['interval_now'].iloc[0]:.3g} "
               "(delta method on the joint law)")
    if res["from_loss"]:
        typer.echo(f"  {res['from_loss']} of the law's cells are budgets scored by their held-out loss alone, at the "
                   "FID their loss predicts (its interval counted as its noise)")
    for r in rk.head(top).itertuples():
        typer.echo(f"  {r.kind:<12} width {r.width:>4} ({r.note}): interval -> {r.interval_after:.3g}, "
                   f"{r.flops:.3g} FLOPs, shrinkage per PFLOP {r.shrinkage_per_pflop:.3g}")


@app.command()
def run(config: Optional[str] = typer.Argument(None, help="Config (default: configs/tiny.yaml)."),
        overrides: Optional[List[str]] = OVERRIDES,
        fresh: bool = typer.Option(False, "--fresh", help="Archive the run folder and start over."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config, check its inputs and exit.")
        ) -> None:
    """The whole study: prepare, train grid, guidance search, analysis, report. Rerun to resume."""
    from study.config import to_yaml
    from cli.runner import run_study

    cfg = _load(config or "tiny", overrides)
    if dry_run:  # the resolved config, then every input of every enabled stage checked (one line each if missing)
        from study.paths import require_paths

        typer.echo(to_yaml(cfg), nl=False)
        require_paths(cfg)
        typer.echo("every input of every enabled stage is in place", err=True)
        return
    result = run_study(cfg, fresh=fresh)
    if result["failed"]:  # everything else finished and was reported; the exit code says a size is missing
        raise typer.Exit(1)


INTERRUPTED = "interrupted: what finished is saved; rerun the same command to resume"


def main() -> None:
    """Entry point: a failure the user can fix (bad file or value, missing or corrupt artefact, full disk,
    missing storage) is one line and exit code 2, its traceback kept in a log file; a bug keeps its
    traceback. LDM_SCALING_DEBUG=1 shows every traceback."""
    from study.errors import note_run_dir, report_user_error

    try:  # typer 0.2x carries its own copy of click; older ones use click itself
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    note_run_dir(None)  # each command learns its own run folder (tests call main() many times in one process)
    # Ray Tune catches the first Ctrl-C to wind its trials down, and the study would then go on to evaluate and
    # report; without its handler Ctrl-C stops the study at once, like any tool (finished milestones are kept).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        code = app(standalone_mode=False)  # usage errors come here, to be one line like every other
    except click.NoArgsIsHelpError as err:
        err.show()
        sys.exit(err.exit_code)
    except click.UsageError as err:  # a bad option value, a missing or unknown option
        command = err.ctx.command_path if err.ctx else "study"
        typer.secho(f"error: {err.format_message()} (see `{command} --help`)", fg=typer.colors.RED, err=True)
        sys.exit(err.exit_code)
    except typer.Abort:  # Ctrl-C at a prompt
        typer.secho("\n" + INTERRUPTED, fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # on a line of its own: a progress bar may have the cursor
        typer.secho("\n" + INTERRUPTED, fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except Exception as err:
        line = None if os.environ.get("LDM_SCALING_DEBUG") else report_user_error(err)
        if line is None:
            raise
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    if code == 130:  # typer turns Ctrl-C into exit code 130 without a word (a progress bar may have the cursor)
        typer.secho("\n" + INTERRUPTED, fg=typer.colors.YELLOW, err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
