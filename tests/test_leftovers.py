"""The check for processes a test session leaves running (tests/process_helpers.py, run by tests/conftest.py at
the session's end): it names each survivor the session started by pid and command, and no other process."""

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

from process_helpers import SESSION_VAR, leftovers, stop_processes

TESTS = Path(__file__).resolve().parent
# Starts a detached process and exits at once: the process is reparented, as pg_ctl's server is. (It keeps none
# of the pipes of whoever reads its pid: they would stay open as long as it runs.)
PLANT = ("import subprocess as s, sys; print(s.Popen(sys.argv[1:], start_new_session=True, stdin=s.DEVNULL, "
         "stdout=s.DEVNULL, stderr=s.DEVNULL).pid)")


def _orphan(*args: str, env: dict | None = None) -> psutil.Process:
    out = subprocess.run([sys.executable, "-c", PLANT, *args], env=env, capture_output=True, text=True, check=True,
                         timeout=60)
    return psutil.Process(int(out.stdout))


def test_a_survivor_is_named_by_pid_and_command_and_no_other_process_is():
    # A marker of this test's own, so that what the other pytest-xdist worker runs meanwhile is not in the way.
    marked = {**os.environ, SESSION_VAR: uuid.uuid4().hex}
    survivor = _orphan("sleep", "301", env=marked)
    unmarked = _orphan("sleep", "302", env={k: v for k, v in os.environ.items() if k != SESSION_VAR})
    other = _orphan("sleep", "303", env={**os.environ, SESSION_VAR: "another-session"})  # another agent's suite
    child = subprocess.Popen(["sleep", "304"], env=marked)  # still this process's: its starter may yet stop it
    try:
        assert leftovers(marked[SESSION_VAR], grace_s=0) == [(survivor.pid, "sleep 301")]
    finally:
        assert not stop_processes([survivor, unmarked, other, psutil.Process(child.pid)])
        child.wait()
    assert leftovers(marked[SESSION_VAR], grace_s=0) == []


def test_a_process_that_ends_within_the_grace_is_not_a_survivor():
    marked = {**os.environ, SESSION_VAR: uuid.uuid4().hex}
    ending = _orphan("sleep", "1", env=marked)  # as a Ray worker ends a moment after its raylet
    try:
        assert leftovers(marked[SESSION_VAR], grace_s=30) == []
    finally:
        stop_processes([ending])


PLANTED = textwrap.dedent("""
    import os, subprocess, sys

    def test_leaves_a_process_behind():
        plant = %r
        pid = subprocess.run([sys.executable, "-c", plant, "sleep", "305"], capture_output=True, text=True,
                             timeout=60).stdout
        with open(os.environ["PLANTED_PID_FILE"], "w") as fh:
            fh.write(pid)
""") % PLANT


@pytest.mark.parametrize("mode", [["-p", "no:xdist"], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_session_that_leaves_a_process_fails_naming_it(tmp_path, mode):
    for name in ("conftest.py", "process_helpers.py", "train_helpers.py"):  # conftest.py and what it imports
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "test_planted.py").write_text(PLANTED)
    env = {**os.environ, "PLANTED_PID_FILE": str(tmp_path / "pid")}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--leftover-grace=1",
                          *mode, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "pid").exists(), res.stdout + res.stderr  # the planted test ran
    planted = psutil.Process(int((tmp_path / "pid").read_text()))
    try:
        assert "1 passed" in res.stdout and res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout + res.stderr
        assert f"pid {planted.pid}: sleep 305" in res.stdout, res.stdout
    finally:
        assert not stop_processes([planted])
