"""The processes a test session started: found by a marker in their environment, stopped, and checked for at the
session's end (tests/conftest.py).

tests/conftest.py puts SESSION_VAR=<a fresh id> into the environment of the pytest process before any test runs
(under pytest-xdist, the controller's, which its workers inherit), so every process the suite starts carries it,
whoever starts it (pg_ctl, Ray, a study subprocess) and however it is detached: /proc/<pid>/environ keeps a
process's starting environment for its whole life, also after it is reparented to pid 1. Processes of other
sessions, other agents or other users of the machine carry another id or none, and are never touched.
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil

SESSION_VAR = "LDM_TEST_SESSION"


def running(p: psutil.Process) -> bool:
    """Alive and not a zombie (an exited process whose status waits for whatever reaps it holds nothing)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_processes(session: str) -> list[psutil.Process]:
    """The running processes whose environment carries this session's marker."""
    found = []
    for p in psutil.process_iter():
        try:
            if running(p) and p.environ().get(SESSION_VAR) == session:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone meanwhile, or another user's: not ours
            pass
    return found


def command(p: psutil.Process) -> str:
    """A process's command line as one string ('' once it is gone)."""
    try:
        return " ".join(p.cmdline()) or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def leftovers(session: str, grace_s: float = 30.0, pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of the session's processes that nothing in it will stop any more.

    Those are the marked processes outside the process tree of `pid` (the pytest process asking; default this
    one): a server its starter daemonized (PostgreSQL under pg_ctl), and, once pytest-xdist's workers have exited,
    everything they left. Processes inside the tree may still be stopped by their owner's exit handlers (Ray's,
    W&B's). A process gets `grace_s` seconds to exit on its own: a Ray worker notices its raylet's end only later.
    """
    pid = os.getpid() if pid is None else pid
    deadline = time.monotonic() + grace_s
    while True:
        try:
            ours = {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            ours = set()
        found = [p for p in session_processes(session) if p.pid not in ours]
        if not found or time.monotonic() >= deadline:
            return sorted((p.pid, cmd) for p in found if (cmd := command(p)))
        time.sleep(0.5)


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to `timeout_s` for the processes to end; returns those still running."""
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in procs if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def stop_processes(procs: list[psutil.Process], timeout_s: float = 20.0) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL for any still running after `timeout_s`; returns those that outlive both."""
    for sig in ("terminate", "kill"):
        for p in procs:
            try:
                getattr(p, sig)()
                p.resume()  # a stopped process (SIGSTOP, a debugger) acts on SIGTERM only once continued
            except psutil.NoSuchProcess:
                pass
        if not (procs := wait_gone(procs, timeout_s)):
            break
    return procs


@contextlib.contextmanager
def loopback_cluster(*nodes: dict):
    """A Ray cluster on this machine: a head that takes no work (as cluster.yaml's) and one node per dict of
    add_node arguments; this process joined to it. Stopped however far the set-up got: a raylet or GCS left
    running outlives the session."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        added = [c.add_node(**kw) for kw in nodes]
        ray.init(address=c.address)
        yield c, added
    finally:
        ray.shutdown()
        c.shutdown()
