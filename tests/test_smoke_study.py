"""The real entry point end to end: `study run configs/smoke.yaml`, killed half-way, rerun, checked."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from process_helpers import running

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _study(args, **kw):
    # Not this process's W&B service (WANDB_SERVICE, set by the analysis tests' W&B runs): the study starts its own.
    # (Ray Train's fast-polling settings come from tests/conftest.py's environment.)
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline", "RAY_ADDRESS": ""}
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def _milestone_times(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns
            for p in run_dir.glob("train/*/checkpoints/milestone-*/*") if p.is_file()}


def _crash(proc: subprocess.Popen) -> None:
    """SIGKILL the study and every process of its session (its local Ray cluster too), as a machine crash would.

    No clean-up handler runs. Only this run's processes are touched: `ray stop` would also stop any other
    Ray on the machine.
    """
    import psutil

    def session():
        procs = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == proc.pid:
                    procs.append(p)
            except (ProcessLookupError, PermissionError):
                pass
        return procs

    proc.kill()  # the study first, so it starts nothing new
    proc.wait()
    deadline = time.time() + 30
    while (alive := [p for p in session() if running(p)]) and time.time() < deadline:
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    assert not alive, f"processes of the killed run still alive: {alive}"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Kill a smoke study once its first size is trained, then rerun the same command to the end."""
    root = tmp_path_factory.mktemp("smoke")
    args = ["run", "smoke", f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}"]
    run_dir = root / "runs" / "smoke"
    proc = _study(args)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if list(run_dir.glob("train/*/DONE")):
                break
            time.sleep(1)
        assert proc.poll() is None, "the study ended before it could be interrupted:\n" + proc.stdout.read()[-3000:]
        _crash(proc)
        done_before = {p.parent.name for p in run_dir.glob("train/*/DONE")}
        times_before = _milestone_times(run_dir)
        proc = _study(args)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # a check failed or the rerun timed out: the study and its local Ray go too
            _crash(proc)
    assert proc.returncode == 0, out[-4000:]
    return run_dir, out, done_before, times_before


def test_results_table(smoke_run):
    run_dir, *_ = smoke_run
    from study.config import load_config
    from study.results import CELL, COLUMNS

    cfg = load_config("smoke")
    df = pd.read_parquet(run_dir / "results.parquet")
    assert set(COLUMNS) <= set(df.columns)
    assert len(pd.read_csv(run_dir / "results.csv")) == len(df)
    # No duplicate rows after the kill and the rerun: one per (cell, Optuna trial).
    assert not df.duplicated(["optuna_study", "optuna_trial"]).any()
    # Every experiment of the paper ran through the one table.
    assert set(df["experiment"]) == {"base", "distillation", "superres", "dreambooth", "ema"}
    all_df, df = df, df[df["experiment"] == "base"]
    # The loss-only budgets (train.loss_milestones): one row each, with its held-out loss, no FID, sampler or steps.
    loss = df[df["fid"].isna()]
    assert len(loss) == len(cfg.model.widths) * len(cfg.train.loss_milestones)
    assert set(loss["train_images"]) == {round(f * cfg.train.total_images) for f in cfg.train.loss_milestones}
    assert (loss["sampler"] == "").all() and (loss["steps"] == 0).all() and not loss["best"].any()
    assert loss["heldout_loss"].gt(0).all() and loss["heldout_loss_se"].gt(0).all()
    df = df[df["fid"].notna()]
    # Every base cell has its trials and exactly one best row, the lowest FID.
    cells = df.groupby(CELL)
    assert (cells.size() == cfg.eval.n_trials).all()
    assert (cells["best"].sum() == 1).all()
    best = df[df["best"]].set_index(CELL)["fid"]
    assert (best == cells["fid"].min()).all()
    # The full grid at every budget (smoke's grid_budgets=all): sizes x budgets x samplers x steps.
    n_cells = len(cfg.model.widths) * len(cfg.train.milestones) * len(cfg.eval.samplers) * len(cfg.eval.steps)
    assert cells.ngroups == n_cells
    row = df.iloc[0]
    assert row["sampling_cost"] == pytest.approx(row["normalized_cost"] * row["steps"])
    assert row["train_flops"] > row["train_flops_paper"] > 0
    assert (df["guidance"].between(cfg.eval.guidance_min, cfg.eval.guidance_max)).all()
    assert df["fid"].gt(0).all() and df["fid_std"].gt(0).all() and df["alignment"].between(0, 1).all()
    assert df["num_samples"].eq(cfg.eval.num_samples).all()
    # A guided step is two UNet calls, an unguided one one.
    assert (df["unet_calls"] == df["steps"] * (1 + (df["guidance"] > 1))).all()
    # Every base checkpoint carries its held-out loss (the same on each of its rows), with its standard error.
    per_ckpt = df.groupby("checkpoint")[["heldout_loss", "heldout_loss_se"]].nunique()
    assert (per_ckpt == 1).all().all() and df["heldout_loss"].gt(0).all() and df["heldout_loss_se"].gt(0).all()
    assert {f"heldout_loss_t{k}" for k in range(cfg.eval.heldout_buckets)} <= set(df.columns)
    # The base grids: each size at its final budget from the same prompts and noise, with what they show.
    assert all((run_dir / "grids" / "base" / f"w{w}-s0.json").is_file() for w in cfg.model.widths)
    dist = all_df[all_df["experiment"] == "distillation"]
    assert dist["heldout_loss"].isna().all()  # a distilled student does not minimise the denoising loss
    assert dist.groupby(CELL).ngroups == len(cfg.model.widths) * len(cfg.distill.steps)
    assert (dist["sampler"] == "lcm").all() and (dist["unet_calls"] == dist["steps"]).all()
    assert all((run_dir / "distillation" / f"grid-w{w}-s0.png").is_file() for w in cfg.model.widths)
    sr = all_df[all_df["experiment"] == "superres"]
    assert (sr["task"] == "superres4x").all() and (sr["guidance"] == 1.0).all() and sr["fid"].gt(0).all()
    assert sr.groupby(CELL).ngroups == len(cfg.model.widths) * len(cfg.superres.samplers) * len(cfg.superres.steps)
    # Post-hoc EMA: each size's final weights as trained and at each length, one fixed guidance, with their loss.
    ema = all_df[all_df["experiment"] == "ema"]
    assert sorted(ema["variant"].unique()) == ["fixed", "sigma-0.050", "sigma-0.150"]
    assert len(ema) == len(cfg.model.widths) * 3 and ema["heldout_loss"].gt(0).all()
    assert (ema["guidance"] == cfg.eval.default_guidance).all()
    db = all_df[all_df["experiment"] == "dreambooth"]
    assert (db["task"] == "dreambooth").all() and db["objective"].notna().all()
    assert (db.groupby(CELL)["best"].sum() == 1).all()

def test_rerun_after_kill_retrains_nothing_finished(smoke_run):
    run_dir, out, done_before, times_before = smoke_run
    assert done_before, "the kill came before any size finished"
    after = _milestone_times(run_dir)
    for key, t in times_before.items():
        if key.split("/")[1] in done_before:
            assert after[key] == t, f"{key} was rewritten by the rerun"


def test_analysis_outputs(smoke_run):
    run_dir, out, *_ = smoke_run
    a = run_dir / "analysis"
    assert (a / "report.html").stat().st_size > 10_000
    assert "data:image/png;base64," in (a / "report.html").read_text()
    cross = pd.read_csv(a / "crossovers.csv")
    assert {"crossover_cost", "low", "high", "p_cross", "verdict"} <= set(cross.columns)
    assert set(cross["verdict"]) <= {"crossing", "no evidence of crossing", "tied within noise"}
    fits = json.loads((a / "fits.json").read_text())
    assert fits["reference"]["sampler"] and set(fits["fits"]) >= {"per_size", "envelope", "chinchilla"}
    for fit in [*fits["fits"]["per_size"].values(), fits["fits"]["envelope"], fits["fits"]["chinchilla"]]:
        assert fit["reason"] if fit["skipped"] else all(
            p["low"] is None or p["low"] <= p["value"] <= p["high"] for p in fit["params"].values())
    assert list(a.glob("*.png")) and list(a.glob("*.svg"))
    assert any(p.stat().st_size > 0 for p in run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert (a / "wandb_workspace.json").is_file()  # the study's W&B workspace, ready for `study dashboard --push`
    stages = json.loads((run_dir / "stages.json").read_text())
    assert {"train", "evaluate", "analyze", "total"} <= set(stages)
    # The derived experiments ran as one wave (one training grid, one evaluation grid), each one's share kept.
    derived = {"distillation", "superres", "dreambooth"}
    assert {"distillation+dreambooth+ema+superres_train", "distillation+dreambooth+ema+superres_evaluate"} <= set(stages)
    assert set(stages["trial_s"]) == derived and set(stages["eval_s"]) == derived | {"ema"}
    assert all(v > 0 for v in [*stages["trial_s"].values(), *stages["eval_s"].values()])
    assert "report:" in out and "wall time:" in out
    # The findings lead: a Markdown copy beside the report, and the same lines on the terminal.
    assert (a / "findings.md").is_file() and "Findings (paper's claim" in out


def test_rerun_of_a_finished_study_is_quick_and_identical(smoke_run, tmp_path):
    run_dir, *_ = smoke_run
    before = pd.read_parquet(run_dir / "results.parquet")
    root = run_dir.parent.parent
    proc = _study(["run", "smoke", f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    after = pd.read_parquet(run_dir / "results.parquet")
    pd.testing.assert_frame_equal(before, after)


def test_changed_study_definition_is_refused(smoke_run):
    run_dir, *_ = smoke_run
    root = run_dir.parent.parent
    proc = _study(["run", "smoke", f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}", "train.lr=0.01"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "different train.lr" in out and "--fresh" in out and "Traceback" not in out


def test_sample_writes_an_image_grid(smoke_run, tmp_path):
    from PIL import Image

    run_dir, *_ = smoke_run
    milestone = sorted(run_dir.glob("train/w8-s0/checkpoints/milestone-*"))[-1]
    out = tmp_path / "grid.png"
    proc = _study(["sample", str(milestone), "--prompt", "a handwritten digit seven", "--prompt", "digit 3",
                   "--n", "4", "--steps", "4", "--out", str(out)])
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text[-2000:]
    with Image.open(out) as im:
        # Two prompts (rows) of four 16x16 samples, scaled up for reading.
        assert im.width == 2 * im.height and im.height >= 32
