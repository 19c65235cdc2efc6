"""The user's error path, one writer per folder, secrets and names, tested with real faults: files that are
not YAML, a full file system, a real second process, a killed lock holder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli as _cli
from study.config import ConfigError, load_config, to_dict
from study.errors import UserError, reading, user_message
from study.lock import FolderLockedError, folder_lock, holder, lock_path
from study.redact import MASK, redact, redact_text

URL = "postgresql://optuna:s3cr3t-PW@db.example:5432/optuna"


# --- one error path --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expect", [
    ("a: [1, 2\nb: : c\n", "is not valid YAML (line 2"),
    ("- a\n- b\n", "holds a list, not a mapping of keys"),
    ("just a sentence\n", "holds a str, not a mapping"),
])
def test_bad_config_file_is_one_line_and_logged(monkeypatch, capsys, tmp_path, text, expect):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, err = _cli(monkeypatch, capsys, tmp_path, "config", "show", str(bad))
    log = tmp_path / "xdg" / "ldm-scaling" / "logs" / "errors.log"
    assert code == 2 and len(err) == 1, err
    assert expect in err[0] and str(bad) in err[0] and f"traceback in {log}" in err[0]
    assert "Traceback (most recent call last)" in log.read_text()


@pytest.mark.parametrize("override, key", [
    ("train.lr=inf", "train.lr"), ("train.lr=-1e-4", "train.lr"), ("autoencoder.lr=0", "autoencoder.lr"),
    ("eval.guidance_max=nan", "eval.guidance_max"), ("eval.max_steps={ddim: -1}", "eval.max_steps.ddim"),
    ("eval.max_steps={ddim: 0}", "eval.max_steps.ddim"), ("eval.max_steps={nope: 4}", "eval.max_steps.nope"),
    ("name=..", "name"), ("name=.", "name"), ("name=/abs/path", "name"), ("name=a/../b", "name"),
    ("eval.workers=2", "eval.workers"),  # the dead key is gone
    ("train.loss_milestones=[1.0]", "train.loss_milestones"), ("train.loss_milestones=[0.5, 0.25]",
                                                                "train.loss_milestones"),
    ("eval.heldout_samples=0", "train.loss_milestones"),  # tiny's loss-only budgets need the held-out loss
])
def test_impossible_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("tiny", [override])


def test_plain_names_are_accepted():
    assert load_config("tiny", ["name=my-study_2.b"]).name == "my-study_2.b"


@pytest.mark.parametrize("argv, expect", [
    (["--n", "0"], "--n 0: expected a positive number"),
    (["--steps", "0"], "--steps 0"), (["--guidance", "inf"], "--guidance inf"),
    (["--sampler", "euler"], "--sampler 'euler'"), (["--weights", "best"], "--weights 'best'"),
])
def test_study_sample_refuses_bad_options(monkeypatch, capsys, tmp_path, argv, expect):
    code, err = _cli(monkeypatch, capsys, tmp_path, "sample", str(tmp_path), "--prompt", "a seven", *argv)
    assert code == 2 and len(err) == 1 and expect in err[0], err


def test_a_bug_keeps_its_traceback():
    try:
        {}["missing"]
    except KeyError as err:
        assert user_message(err) is None
    try:
        import numpy as np

        np.zeros(3).reshape(2)  # a ValueError raised inside a library, not one we wrote for the user
    except ValueError as err:
        assert user_message(err) is None


def test_bad_inception_file_names_the_file_and_the_key(tmp_path):
    from study.metrics.extractors import InceptionExtractor

    bad = tmp_path / "inception-2015-12-05.pt"
    bad.write_bytes(b"<html>a login page saved instead of the weights</html>")
    with pytest.raises(UserError, match="eval.inception_path") as err:
        InceptionExtractor.from_file(bad)
    assert str(bad) in str(err.value) and user_message(err.value) == str(err.value)
    with pytest.raises(FileNotFoundError) as err:  # the evaluation stage without the file: one line too
        InceptionExtractor.from_file(tmp_path / "missing.pt")
    assert "set eval.inception_path" in user_message(err.value) and "inception-2015-12-05.pt" in str(err.value)


def test_reading_wraps_any_failure_but_a_full_disk(tmp_path):
    with pytest.raises(UserError, match=r"the image .*x.png cannot be read \(OSError: broken\): replace it"):
        with reading(tmp_path / "x.png", "the image", "replace it"):
            raise OSError("broken")
    with pytest.raises(OSError) as err:
        with reading(tmp_path / "x.png", "the image", "replace it"):
            raise OSError(28, "No space left on device")
    assert "no space left on the disk" in user_message(err.value)


@pytest.fixture()
def full_fs(tmp_path):
    """A 512 KiB tmpfs, filled to the last block: a real full disk (needs root and mount)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        try:
            with open(mnt / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError as err:
            assert err.errno == 28
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_one_line(monkeypatch, capsys, tmp_path, full_fs):
    # The first thing `study sweep` writes is the run folder's config: on a full disk, Errno 28.
    code, err = _cli(monkeypatch, capsys, tmp_path, "sweep", "tiny", f"runs_dir={full_fs}", "name=x")
    assert code == 2 and len(err) == 1, err
    assert "no space left on the disk" in err[0] and str(full_fs) in err[0]


def test_tune_tracebacks_go_to_the_run_log_not_the_console(capfd, tmp_path, full_fs, monkeypatch):
    # Tune logs every failed trial's traceback (and a failed state save's) through Ray's own console handler;
    # during a grid they go to errors.log. With the run folder on a full disk, to the cache folder's.
    import logging

    import ray  # noqa: F401  (sets up the "ray" logger's console handler)

    from study.errors import note_run_dir
    from sweeps.train_progress import tracebacks_to_log

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # Ray's console handler keeps the stderr it found when ray was first imported in this process (under xdist,
    # possibly another test's capture): it writes to this test's stderr, which capfd reads.
    # Only Ray's own handler: under xdist an earlier test on this worker can leave pytest's log-capture handler
    # (a StreamHandler too, whose stream pytest reads back with getvalue()) on the "ray" logger.
    for h in logging.getLogger("ray").handlers:
        if isinstance(h, logging.StreamHandler) and type(h).__module__.startswith("ray."):
            monkeypatch.setattr(h, "stream", sys.stderr)
    tune_log = logging.getLogger("ray.tune.execution.tune_controller")
    for run_dir, log in ((tmp_path, tmp_path / "errors.log"), (full_fs, tmp_path / "xdg" / "ldm-scaling" / "logs"
                                                                / "errors.log")):
        note_run_dir(run_dir)
        try:
            raise OSError(28, "No space left on device")
        except OSError as err:
            with tracebacks_to_log():
                tune_log.error("Trial task failed for trial _trial_00001", exc_info=err)
                tune_log.warning("a warning without a traceback still shows")
        console = capfd.readouterr().err
        assert "Traceback" not in console and "Trial task failed" not in console, console
        assert "a warning without a traceback still shows" in console
        text = log.read_text()
        assert "Trial task failed for trial _trial_00001" in text and "Traceback" in text, text
    note_run_dir(None)
    # Outside a grid, Ray's logging is as it was.
    try:
        raise OSError(28, "No space left on device")
    except OSError as err:
        tune_log.error("Trial task failed for trial _trial_00002", exc_info=err)
    assert "Trial task failed for trial _trial_00002" in capfd.readouterr().err


def test_optuna_database_full_is_one_line(tmp_path, full_fs):
    import optuna

    (full_fs / "filler").write_bytes(b"\0" * 300_000)  # room for a small database, not for many trials
    storage = optuna.storages.RDBStorage(f"sqlite:///{full_fs / 'optuna.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    with pytest.raises(Exception) as err:
        for i in range(100_000):
            study.enqueue_trial({"x": float(i)}, user_attrs={"pad": "x" * 2000})
    msg = user_message(err.value)
    assert msg is not None and "no space left on the disk" in msg, repr(err.value)


def test_deleted_optuna_database_is_one_line(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'gone' / 'optuna.db'}"
    with pytest.raises(Exception) as err:
        optuna.create_study(storage=url, study_name="s")
    assert "the Optuna database is missing or unreadable" in user_message(err.value)


# --- secrets ---------------------------------------------------------------------------------------

def test_redact_masks_urls_and_secret_keys_only():
    cfg = {"sweep": {"optuna_storage": URL, "seeds": [0]}, "tracking": {"api_key": "k", "project": "p"},
           "x": {"db_password": "pw", "token": None, "tokenizer": "clip", "max_tokens": 3},
           "paths": ["s3://AKIA:secretkey@bucket/x", "/plain/path"],
           "q": "postgresql://h/db?sslmode=require&password=pw2"}
    out = redact(cfg)
    assert out["sweep"]["optuna_storage"] == f"postgresql://optuna:{MASK}@db.example:5432/optuna"
    assert out["tracking"] == {"api_key": MASK, "project": "p"}
    assert out["x"] == {"db_password": MASK, "token": None, "tokenizer": "clip", "max_tokens": 3}
    assert out["paths"] == [f"s3://AKIA:{MASK}@bucket/x", "/plain/path"]
    assert out["q"] == f"postgresql://h/db?sslmode=require&password={MASK}"
    assert cfg["sweep"]["optuna_storage"] == URL  # the live config is untouched
    assert "s3cr3t" not in json.dumps(out)
    assert redact_text("postgresql://optuna@ray-head:5432/optuna") == "postgresql://optuna@ray-head:5432/optuna"


def test_no_secret_in_the_run_folder_or_the_size_config(tmp_path):
    from study.runfolder import check_run_folder
    from trainers.rundir import check_config, write_config

    cfg = load_config("tiny", [f"runs_dir={tmp_path}", f"sweep.optuna_storage={URL}"])
    out = check_run_folder(cfg)
    size_dir = out / "train" / "w8-s0"
    write_config(size_dir, to_dict(cfg))
    check_config(size_dir, to_dict(cfg))  # the redacted copy still matches the live config
    check_run_folder(cfg)  # and so does the run folder's
    for f in (out / "config.json", out / "config.yaml", size_dir / "config.json"):
        text = f.read_text()
        assert "s3cr3t-PW" not in text and f"optuna:{MASK}@db.example" in text, f
    assert cfg.sweep.optuna_storage == URL  # what the guidance search connects with


# --- one writer per folder -------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from study.lock import folder_lock
    with folder_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _holder_process(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder_then_takes_over_when_it_dies(tmp_path, capsys):
    folder = tmp_path / "runs" / "study"
    proc = _holder_process(folder)
    try:
        t = time.monotonic()
        with pytest.raises(FolderLockedError) as err:
            with folder_lock(folder):
                pass
        assert time.monotonic() - t < 5  # refused at once, not after a wait
        assert f"pid {proc.pid} on host {socket.gethostname()}" in str(err.value) and str(folder) in str(err.value)
        assert holder(folder)["pid"] == proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # dies holding the lock: no clean release
        proc.wait()
    with folder_lock(folder) as path:
        assert path == lock_path(folder) and holder(folder)["pid"] == os.getpid()
        assert f"took over the lock of run folder {folder} from pid {proc.pid}" in capsys.readouterr().err
        with folder_lock(folder):  # re-entrant in one process (the CLI and the runner both take it)
            pass
        assert holder(folder)["pid"] == os.getpid()
    assert holder(folder) == {}  # released cleanly: nothing to take over next time
    with folder_lock(folder):
        assert "took over" not in capsys.readouterr().err


def test_the_lock_survives_moving_the_folder_aside(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    proc = _holder_process(folder)
    try:
        folder.rename(tmp_path / "study.archived")  # `--fresh` moves the folder while its lock is held
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid}"):
            with folder_lock(folder):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


# --- paths and pickles -----------------------------------------------------------------------------

def test_fresh_only_moves_a_plain_named_folder(tmp_path):
    from cli.runner import archive

    (tmp_path / "runs" / "mine").mkdir(parents=True)
    moved = archive(tmp_path / "runs" / "mine")
    assert moved.parent == tmp_path / "runs" and moved.name.startswith("mine.archived-")
    for bad in (tmp_path / "runs" / "..", Path("/")):  # (pathlib already drops a trailing ".")
        with pytest.raises(UserError, match="refuses to move"):
            archive(bad)
    assert (tmp_path / "runs").is_dir()


def test_a_tune_experiment_is_restored_only_if_nobody_else_could_write_it(tmp_path):
    from study.trust import check_restorable

    exp = tmp_path / "ray" / "train-grid-abc"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"pickle")
    os.chmod(exp / "tuner.pkl", 0o644)
    check_restorable(exp)
    os.chmod(exp / "tuner.pkl", 0o666)
    with pytest.raises(UserError, match="tuner.pkl is writable by other users"):
        check_restorable(exp)
    os.chmod(exp / "tuner.pkl", 0o644)
    if os.getuid() == 0:  # root can hand the file to another user: a real foreign owner
        os.chown(exp / "tuner.pkl", 12345, 12345)
        with pytest.raises(UserError, match="owned by uid 12345"):
            check_restorable(exp)
    check_restorable("s3://bucket/ray/train-grid-abc")  # remote storage: its own access control


def test_the_wandb_config_carries_no_secret(tmp_path, monkeypatch):
    from trainers.tracking import Tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config("tiny", [f"sweep.optuna_storage={URL}", "tracking.wandb_mode=offline"])
    tracker = Tracker(tmp_path, cfg, to_dict(cfg), 8, 0, total_images=64, resumed_images=0, progress=False)
    tracker.log({"train_images": 32, "loss": 1.0, "images_per_s": 1.0})
    tracker.close()
    written = [p for p in (tmp_path / "wandb").rglob("*") if p.is_file()]
    assert any(b"optuna:***@db.example" in p.read_bytes() for p in written)  # the config was recorded, masked
    for p in written:  # the config, the debug logs and the offline run record W&B would upload
        assert b"s3cr3t-PW" not in p.read_bytes(), p


# --- a local Ray that is slow to start ---------------------------------------------------------------

TIMED_OUT = "The current node timed out during startup. This could happen because some of the raylet failed"


def test_a_local_ray_that_times_out_starting_is_started_again_and_its_leftovers_stopped():
    """Ray's raylet exits when its dashboard agent is slow to start (a loaded machine); the study tries again, and
    stops what the failed try left running (here a real child process standing in for its GCS server)."""
    from study.raycluster import _start_local

    tries, left = [], []

    def init():
        tries.append(1)
        if len(tries) == 1:
            left.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
            raise Exception(TIMED_OUT)

    _start_local(init, pause_s=0)
    assert len(tries) == 2
    assert left[0].poll() is not None  # the failed try's process was stopped before the second


def test_a_local_ray_that_never_starts_is_one_line_and_other_failures_are_not_retried():
    from study.raycluster import START_TRIES, _start_local

    tries = []

    def never():
        tries.append(1)
        raise Exception(TIMED_OUT)

    with pytest.raises(UserError, match=f"did not start in {START_TRIES} tries.*rerun the same command"):
        _start_local(never, pause_s=0)
    assert len(tries) == START_TRIES

    def broken():
        tries.append(1)
        raise ValueError("num_cpus must be positive")

    tries.clear()
    with pytest.raises(ValueError, match="num_cpus"):
        _start_local(broken, pause_s=0)
    assert len(tries) == 1


def test_a_user_error_raised_in_a_ray_task_is_still_one_line():
    from ray.exceptions import RayTaskError

    from study.weights import CorruptCheckpointError

    cause = CorruptCheckpointError("checkpoint /x: ema.safetensors is missing: use another milestone")
    wrapped = RayTaskError("evaluate_chain", "Traceback ...", cause).as_instanceof_cause()
    assert user_message(wrapped) == str(cause)
    assert user_message(RayTaskError("f", "Traceback ...", KeyError("bug"))) is None


def test_a_prepare_cache_being_written_makes_a_second_study_wait_then_go_on(tmp_path, capsys):
    import threading

    from study.prepare import _cache_lock

    folder = tmp_path / "cache" / "prepared-x"
    proc = _holder_process(folder)
    entered = threading.Event()

    def second():
        with _cache_lock(folder, progress=False):
            entered.set()

    t = threading.Thread(target=second, daemon=True)
    t.start()
    time.sleep(1.0)
    assert not entered.is_set()  # waits while the first study writes the cache
    os.kill(proc.pid, signal.SIGKILL)  # the writer goes (here: dies); the waiting study takes the cache
    proc.wait()
    t.join(10)
    assert entered.is_set()
    err = capsys.readouterr().err
    assert f"prepare cache {folder} is in use by pid {proc.pid}" in err and "waiting for it" in err


def test_a_size_folder_with_no_checkpoint_starts_under_a_changed_config_one_with_a_checkpoint_refuses(tmp_path,
                                                                                                      capsys):
    from study.config import load_config, to_dict
    from trainers.rundir import check_config, write_config

    def cfg(lr):
        return to_dict(load_config("tiny", [f"train.lr={lr}"]))

    size = tmp_path / "w8-s0"
    write_config(size, cfg(1.0))  # a run that failed before its first checkpoint
    check_config(size, cfg(2.0))
    assert not (size / "config.json").exists() and "held no checkpoint of its old config" in capsys.readouterr().err
    write_config(size, cfg(2.0))
    (size / "checkpoints" / "milestone-0000000064").mkdir(parents=True)
    (size / "checkpoints" / "milestone-0000000064" / "state.json").write_text("{}")
    with pytest.raises(UserError, match="holds a run trained with train.lr=2.0, this config has train.lr=3.0"):
        check_config(size, cfg(3.0))
