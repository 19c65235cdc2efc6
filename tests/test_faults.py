"""Real faults during a real `study run` (the smoke config's base experiment): Ctrl-C during training, the
Optuna database deleted during evaluation. Each stops the study at once with one line, publishes nothing as
finished, and a rerun of the same command ends with the table of the other (the same rows, every FID equal)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from process_helpers import running
from test_smoke_study import _crash, _milestone_times, _study

from train_helpers import SMOKE_TEST_OVERRIDES

pytestmark = pytest.mark.slow

BASE_ONLY = ["distill.enabled=false", "superres.enabled=false", "dreambooth.enabled=false", "ema.enabled=false"]


def _args(root: Path, name: str) -> list[str]:
    return ["run", "smoke", f"name={name}", f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}",
            *SMOKE_TEST_OVERRIDES, *BASE_ONLY]


def _wait_for(proc, what: str, ready, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            return
        time.sleep(0.2)
    out = proc.stdout.read()[-3000:] if proc.poll() is not None else ""
    _crash(proc)
    pytest.fail(f"the study ended or timed out before {what}:\n{out}")


def _session_gone(proc, timeout: float = 60) -> bool:
    """Every process of the study's session (its local Ray too) has exited."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == proc.pid and running(p):
                    alive.append(p)
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                pass
        if not alive:
            return True
        time.sleep(0.5)
    return False


def _finish(root: Path, name: str) -> pd.DataFrame:
    proc = _study(_args(root, name))
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "study finished" in out, out[-4000:]
    return pd.read_parquet(root / "runs" / name / "results.parquet")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def interrupted(root):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once the first milestone is saved."""
    run = root / "runs" / "sigint"
    proc = _study(_args(root, "sigint"))
    _wait_for(proc, "a milestone was saved", lambda: any(run.glob("train/*/checkpoints/milestone-*")))
    t = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _crash(proc)
    stopped_s = time.monotonic() - t
    gone = _session_gone(proc)
    return {"code": proc.returncode, "out": out, "stopped_s": stopped_s, "gone": gone,
            "results": (run / "results.parquet").exists(), "table": _finish(root, "sigint")}


@pytest.fixture(scope="module")
def database_deleted(root):
    """`rm RUN/optuna.db` once the evaluation has written its first rows."""
    run = root / "runs" / "dbgone"
    proc = _study(_args(root, "dbgone"))

    def rows() -> int:
        try:
            return len(pd.read_parquet(run / "results.parquet"))
        except (OSError, ValueError):
            return 0

    _wait_for(proc, "the evaluation wrote rows", lambda: rows() >= 4)
    (run / "optuna.db").unlink()
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            _crash(proc)
    return {"code": proc.returncode, "out": out, "analysis": (run / "analysis").exists(),
            "table": _finish(root, "dbgone")}


def test_ctrl_c_stops_the_study_at_once_and_a_rerun_resumes(interrupted):
    out = interrupted["out"]
    assert interrupted["code"] == 130, out[-3000:]
    # Seconds, not the minutes of winding down, evaluating and reporting it took when Tune caught the signal.
    assert interrupted["stopped_s"] < 60, interrupted["stopped_s"]
    lines = [line.strip() for line in out.splitlines()]  # (the progress bar's last refresh may come after it)
    assert "interrupted: what finished is saved; rerun the same command to resume" in lines, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "study finished" not in out and not interrupted["results"]  # nothing evaluated after the signal
    assert interrupted["gone"], "processes of the interrupted study are still running"


def test_a_deleted_optuna_database_stops_the_study_with_one_line(database_deleted):
    out = database_deleted["out"]
    assert database_deleted["code"] == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "optuna.db was deleted or replaced" in errors[0] and "rerun" in errors[0], out[-3000:]
    assert "study finished" not in out and not database_deleted["analysis"]  # no partial table reported as done


def test_both_reruns_end_with_the_same_full_table(interrupted, database_deleted):
    from study.config import load_config
    from study.results import CELL

    cfg = load_config("smoke", SMOKE_TEST_OVERRIDES)
    n_cells = len(cfg.model.widths) * len(cfg.train.milestones) * len(cfg.eval.samplers) * len(cfg.eval.steps)
    tables = []
    n_loss = len(cfg.model.widths) * len(cfg.train.loss_milestones)  # one row per loss-only budget
    for df in (interrupted["table"], database_deleted["table"]):
        assert len(df) == n_cells * cfg.eval.n_trials + n_loss
        assert not df.duplicated(["optuna_study", "optuna_trial"]).any()
        tables.append(df[[*CELL, "guidance", "fid", "heldout_loss"]].sort_values([*CELL, "guidance"])
                      .reset_index(drop=True))
    pd.testing.assert_frame_equal(tables[0], tables[1])


@pytest.fixture(scope="module")
def disk_full(root):
    """The run folder on a real 40 MB tmpfs: it fills during training (two trials side by side). Then the disk is
    grown (remount keeps the files) and the same command is rerun."""
    import subprocess

    mnt = root / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root / "xdg")  # where the error log goes when the run folder is full
    try:
        args = ["run", "smoke", "name=full", f"runs_dir={mnt}", f"cache_dir={root / 'cache'}",
                *SMOKE_TEST_OVERRIDES, *BASE_ONLY]
        t = time.monotonic()
        proc = _study(args)
        try:
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                _crash(proc)
        failed = {"code": proc.returncode, "out": out, "seconds": time.monotonic() - t, "gone": _session_gone(proc),
                  "milestones": _milestone_times(mnt / "full")}
        subprocess.run(["mount", "-o", "remount,size=600m", str(mnt)], check=True)  # the base-only smoke: ~410 MB
        proc = _study(args)
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0 and "study finished" in out, out[-4000:]
        leftovers = [str(p) for p in (mnt / "full").rglob(".tmp-*")]
        yield {**failed, "leftovers": leftovers, "table": pd.read_parquet(mnt / "full" / "results.parquet"),
               "milestones_after": _milestone_times(mnt / "full")}
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_a_full_disk_stops_the_study_with_one_line_and_a_rerun_resumes(disk_full):
    from study.config import load_config

    out = disk_full["out"]
    assert disk_full["code"] == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the disk holding" in errors[0], out[-3000:]
    assert "small" in errors[0] and "traceback in" in errors[0], errors
    # Nothing a user would take for a crash: no trial's traceback (Tune logs each failed trial's), no Ray
    # "Unhandled error", no abort. Only the one line, and the progress bars before it.
    others = [line for line in out.splitlines() if line.strip() and not line.startswith("error:")
              and not any(bar in line for bar in ("it/s]", "img/s]", "s/it]", "img]", "%|"))]
    assert not any(w in out for w in ("Traceback", "Aborted", "Unhandled error", "Trial task failed")), out[-3000:]
    assert disk_full["gone"], "processes of the stopped study are still running"
    # ...and the tracebacks are kept for a bug report, in the log the one line names.
    log_path = errors[0].rsplit("traceback in ", 1)[1].rstrip(")")
    assert "Traceback" in _read(Path(log_path)), log_path
    assert not disk_full["leftovers"]  # the rerun cleaned what the failed writes left
    # No work lost: every milestone saved before the disk filled (on 40 MB, often none) is still the same file
    # after the rerun...
    before, after = disk_full["milestones"], disk_full["milestones_after"]
    assert all(after.get(k) == v for k, v in before.items()), (before, after)
    # ...and the rerun ends with the whole table, each cell once.
    cfg = load_config("smoke", SMOKE_TEST_OVERRIDES)
    n_cells = len(cfg.model.widths) * len(cfg.train.milestones) * len(cfg.eval.samplers) * len(cfg.eval.steps)
    table = disk_full["table"]
    n_loss = len(cfg.model.widths) * len(cfg.train.loss_milestones)  # one row per loss-only budget
    assert len(table) == n_cells * cfg.eval.n_trials + n_loss
    assert not table.duplicated(["optuna_study", "optuna_trial"]).any()
    print(f"full disk: the study stopped {disk_full['seconds']:.0f} s after it started; other console lines: "
          f"{others[:5]}")
