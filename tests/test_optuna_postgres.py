"""The cluster's Optuna storage for real: a PostgreSQL server (the `pgserver` wheel) on loopback, several
evaluation worker processes writing one database at once, and the server restarted mid-search. The
search must finish with every cell at its trial count, no point evaluated twice and no result lost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

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


@pytest.fixture()
def postgres(tmp_path):
    """PostgreSQL listening on 127.0.0.1 only; yields (url, restart). restart(down) stops the server, keeps it
    down for `down` seconds and starts it again."""
    from pgserver._commands import pg_ctl

    srv = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    port, sock = _free_port(), tempfile.mkdtemp(prefix="pg")
    os.chmod(sock, 0o777)  # as root pgserver runs the server as its own system user
    opts = ["-o", f"-h 127.0.0.1 -p {port} -k {sock}"]
    log = Path(sock) / "server.log"  # the server's output goes to a file, not to pg_ctl's pipe

    def restart(down: float = 0.0):
        if not down:
            pg_ctl(["-w", "-m", "fast", *opts, "restart"], pgdata=srv.pgdata, user=srv.system_user)
            return
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=srv.pgdata, user=srv.system_user)
        time.sleep(down)
        pg_ctl(["-w", "-l", str(log), *opts, "start"], pgdata=srv.pgdata, user=srv.system_user)

    restart()  # from pgserver's socket-only default to TCP on loopback
    yield f"postgresql+psycopg2://{srv.postgres_user}@127.0.0.1:{port}/postgres", restart
    srv.cleanup()


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
    url, restart = postgres
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
