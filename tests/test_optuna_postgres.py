"""The cluster's Optuna storage for real: a PostgreSQL server (the `pgserver` wheel) on loopback, several
evaluation worker processes writing one database at once, and the server restarted mid-search. The
search must finish with every cell at its trial count, no point evaluated twice and no result lost. Each server
is stopped at its test's end however the test left it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, NamedTuple

import psutil
import pytest

from process_helpers import command, running, stop_processes, wait_gone

pgserver = pytest.importorskip("pgserver", reason="the test extra installs pgserver (PostgreSQL as a wheel)")
pytest.importorskip("psycopg2", reason="the test extra installs psycopg2-binary")

pytestmark = pytest.mark.slow  # starting PostgreSQL and four Python workers takes ~30 s on 2 cores

N_TRIALS, SEEDS = 6, [7.5, 2.0]
WORKER = textwrap.dedent("""
    import json, sys, time
    from types import SimpleNamespace
    from sweeps.guidance import Cell, open_storage, search_cell

    url, widths = sys.argv[1], json.loads(sys.argv[2])
    cfg = SimpleNamespace(guidance_min=1.0, guidance_max=8.0, optuna_sampler="tpe", seed=0, search="optuna",
                          n_trials=%d, grid=[])

    def evaluate(g):  # deterministic, like a cell's FID with fixed noise and prompts
        time.sleep(0.3)
        return {"fid": (g - 3.7) ** 2 + 1.0}

    for w in widths:
        cell = Cell(w, 0, 64, "ddim", 8, "leading")
        for attempt in range(30):  # what Ray's task retries (eval.max_retries) do: a new process, a new engine
            try:
                search_cell(cell, evaluate, open_storage(url), cfg, seed_points=%r)
                break
            except Exception as err:
                print("retry", w, type(err).__name__, str(err).splitlines()[0][:100], flush=True)
                time.sleep(0.5)
        else:
            sys.exit(f"cell w{w} never finished")
    print("done", flush=True)
""") % (N_TRIALS, SEEDS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_processes(pgdata: Path) -> list[psutil.Process]:
    """Every running process of the server on `pgdata`, on whichever port: PostgreSQL's processes all work in
    their data folder, the children of a crashed postmaster (orphans then) too."""
    found = []
    for p in psutil.process_iter(["cwd"]):
        try:
            if p.info["cwd"] == str(pgdata) and running(p):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def _stop_server(pgdata: Path) -> list[psutil.Process]:
    """Stop the server on `pgdata` whatever state it is in (running on any port, stopped, crashed) and wait until
    its processes are gone; returns any that are not."""
    procs = _server_processes(pgdata)
    postmaster = [p for p in procs if p.pid == _postmaster_pid(pgdata)]
    for p in postmaster:
        p.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown, as `pg_ctl -m fast stop`
    if postmaster:
        procs = wait_gone(procs, 30)  # a postmaster takes its children down with it
    return stop_processes(procs)  # a crashed server's orphans, or a postmaster that would not stop


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid the server wrote on the first line of postmaster.pid (stale after a crash), or None."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


class Server(NamedTuple):
    url: str
    restart: Callable[[float], None]  # restart(down): stop, stay down `down` seconds, start again
    pgdata: Path


@contextmanager
def running_postgres():
    """A PostgreSQL server listening on 127.0.0.1 only, as a Server. On exit it is stopped however a test left it,
    its folder is removed, and an AssertionError names any process of it that would not end."""
    from pgserver._commands import pg_ctl

    # Not under pytest's temporary folder: pytest takes others' permissions off it (0700) whenever a session
    # starts, and the server's system user (pgserver runs it as its own user under root) would lose its data
    # mid-test. Short, too: a socket's path is limited to ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix="pg")).resolve()
    os.chmod(root, 0o777)
    pgdata, srv, port = root / "pgdata", None, _free_port()
    opts = ["-o", f"-h 127.0.0.1 -p {port} -k {root}"]
    log = root / "server.log"  # the server's output goes to a file, not to pg_ctl's pipe

    def restart(down: float = 0.0):
        if not down:
            pg_ctl(["-w", "-m", "fast", *opts, "restart"], pgdata=srv.pgdata, user=srv.system_user)
            return
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=srv.pgdata, user=srv.system_user)
        time.sleep(down)
        pg_ctl(["-w", "-l", str(log), *opts, "start"], pgdata=srv.pgdata, user=srv.system_user)

    try:
        srv = pgserver.get_server(pgdata, cleanup_mode="stop")
        restart()  # from pgserver's socket-only default to TCP on loopback
        yield Server(f"postgresql+psycopg2://{srv.postgres_user}@127.0.0.1:{port}/postgres", restart, pgdata)
    finally:
        try:
            # pgserver stops only the postmaster it started, never the one restart() made on another port, and
            # raises if that one ends between its check and its signal.
            with suppress(psutil.NoSuchProcess):
                srv and srv.cleanup()
        finally:
            alive = _stop_server(pgdata)
            if not alive:
                shutil.rmtree(root, ignore_errors=True)
        assert not alive, f"PostgreSQL on {pgdata} outlived its stop: {[(p.pid, command(p)) for p in alive]}"


@pytest.fixture()
def postgres():
    """A PostgreSQL server for one test, stopped at its end (running_postgres)."""
    with running_postgres() as server:
        yield server


@pytest.mark.parametrize("state", ["restarted", "stopped", "crashed"])
def test_the_server_is_stopped_however_a_test_leaves_it(state):
    from pgserver._commands import pg_ctl

    with running_postgres() as (_, restart, pgdata):
        postmaster = psutil.Process(_postmaster_pid(pgdata))
        if state == "restarted":  # once more: again a postmaster pgserver never knew
            restart()
        elif state == "stopped":
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=pgserver.get_server(pgdata).system_user)
        else:  # the postmaster killed, one of its children hung: an orphan that ignores SIGTERM while stopped
            child = postmaster.children()[0]
            child.suspend()
            postmaster.kill()
        started = _server_processes(pgdata) + [postmaster]
    assert not _server_processes(pgdata) and not any(running(p) for p in started)


def _complete(url: str) -> dict:
    import optuna
    from optuna.trial import TrialState

    from sweeps.guidance import open_storage  # as the workers open it (a fresh database's schema race included)

    out, storage = {}, open_storage(url)
    for s in optuna.get_all_study_summaries(storage=storage):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        out[s.study_name] = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return out


def test_workers_share_one_postgres_study_across_a_server_restart(postgres):
    url, restart, _ = postgres
    repo = Path(__file__).resolve().parent.parent
    widths = [[8, 16], [24, 32], [40, 48], [56, 64]]  # four workers, two cells each, one database
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, json.dumps(w)], cwd=repo, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for w in widths]
    total = N_TRIALS * sum(len(w) for w in widths)
    deadline = time.monotonic() + 300
    while sum(len(t) for t in _complete(url).values()) < total // 3:  # a third of the search done
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "workers stalled or died"
        time.sleep(0.5)
    before = {name: {t.number for t in trials} for name, trials in _complete(url).items()}
    # Every worker's connections drop mid-search, and the server stays down for longer than a trial takes
    # (0.3 s), so every worker's next storage call fails (a restart alone can fall between two calls and be
    # absorbed by the connection pool's reconnect: the test would then prove nothing).
    restart(down=3.0)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert any("retry" in log for log in logs), "the restart interrupted no worker: the test proved nothing"

    done = _complete(url)
    assert len(done) == 8
    for name, trials in done.items():
        assert len(trials) == N_TRIALS, (name, len(trials))  # nothing lost, nothing run past the target
        gs = [round(t.params["guidance"], 6) for t in trials]
        for g in SEEDS:
            assert gs.count(g) == 1, (name, gs)  # each seeded point evaluated exactly once
        for t in trials:  # every result stored with its trial, and it is the one the point gives
            assert json.loads(t.user_attrs["result"])["fid"] == pytest.approx((t.params["guidance"] - 3.7) ** 2 + 1)
        assert before.get(name, set()) <= {t.number for t in trials}  # trials done before the restart kept


def test_both_postgresql_url_forms_reach_one_database(postgres):
    import optuna

    from sweeps.guidance import check_storage, open_storage

    explicit = postgres.url
    bare = explicit.replace("postgresql+psycopg2://", "postgresql://")  # the form paper.yaml ships
    check_storage(bare)
    check_storage(explicit)
    optuna.create_study(study_name="forms", storage=open_storage(bare)).enqueue_trial({"g": 1.5})
    seen = optuna.load_study(study_name="forms", storage=open_storage(explicit)).get_trials(deepcopy=False)
    assert [t.system_attrs["fixed_params"] for t in seen] == [{"g": 1.5}]  # written through one form, read through the other


@pytest.mark.parametrize("scheme, expect", [
    ("postgresql", "cannot reach the Optuna storage"),                      # psycopg2, no server on the port
    ("postgresql+psycopg2", "cannot reach the Optuna storage"),
    ("postgresql+psycopg", "the database driver 'psycopg' is not installed"),  # psycopg 3 is not installed
])
def test_an_unusable_storage_is_one_line_before_any_training(monkeypatch, capsys, tmp_path, scheme, expect):
    from cli import main as cli

    if scheme == "postgresql+psycopg":
        try:
            import psycopg  # noqa: F401
            pytest.skip("psycopg 3 is installed here: nothing is missing")
        except ImportError:
            pass
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LDM_SCALING_DEBUG", raising=False)
    url = f"{scheme}://user:PW@127.0.0.1:{_free_port()}/db"  # a closed port on loopback
    monkeypatch.setattr(sys, "argv", ["study", "sweep", "tiny", f"runs_dir={tmp_path}", "name=x",
                                      f"cache_dir={tmp_path / 'cache'}", f"sweep.optuna_storage={url}"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and expect in err[0], err
    assert "PW" not in err[0]  # the password stays out of the line
    assert not (tmp_path / "x" / "train").exists() and not (tmp_path / "cache").exists()  # nothing prepared
