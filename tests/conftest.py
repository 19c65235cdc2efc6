"""Shared test set-up: hermetic, offline, CPU."""

import os
import sys

# Nothing is downloaded in tests: hubs are off and W&B never reaches a server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ.pop("WANDB_API_KEY", None)
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train's own settings, read by its controller (also in the study subprocesses, which inherit them): runs of
# seconds poll fast, and no spot-preemption watcher runs on a laptop.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Under `make test`'s two pytest-xdist processes on 2 cores, one intra-op thread each (set before torch is
# imported; the study subprocesses inherit it): two processes of two spinning OpenMP threads each oversubscribe.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from process_helpers import SESSION_VAR, leftovers  # noqa: E402
from train_helpers import SMOKE_TEST_OVERRIDES  # noqa: E402  (the smoke config shrunk for the tests)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the session, so prepared artefacts are built once across tests."""
    return tmp_path_factory.mktemp("cache")



@pytest.fixture(scope="session")
def smoke_overrides(shared_cache) -> list[str]:
    """Overrides that shrink the smoke config for unit tests, sharing the session's cache."""
    return [f"cache_dir={shared_cache}", *SMOKE_TEST_OVERRIDES]


@pytest.fixture(scope="session")
def smoke_prepared(shared_cache):
    """The smoke config's prepared data (latent path: the small VAE), built once per session."""
    from study.config import load_config
    from study.prepare import prepare

    cfg = load_config("smoke", [f"cache_dir={shared_cache}", *SMOKE_TEST_OVERRIDES])
    return cfg, prepare(cfg, progress=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads stall on a shared 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_local():
    """A fresh local Ray for one test module's training runs (never another Ray found on the machine)."""
    import ray

    if ray.is_initialized():  # a Ray an earlier test's code started in this process
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """The smoke study first: it is the longest file, and under `make test`'s two processes (pytest-xdist,
    one file per process) starting it last would leave one process idle while it runs alone."""
    items.sort(key=lambda item: 0 if item.fspath.basename == "test_smoke_study.py" else 1)


def pytest_configure(config):
    """Give this session a marker that every process the suite starts inherits (tests/process_helpers.py)."""
    # Set by the controller before pytest-xdist starts its workers, which inherit it. Not by PYTEST_XDIST_WORKER:
    # a pytest run inside a test (tests/test_leftovers.py) inherits that too, and is a session of its own.
    if not hasattr(config, "workerinput"):
        os.environ[SESSION_VAR] = uuid.uuid4().hex


def pytest_addoption(parser):
    """--leftover-grace: how long the session's end waits for processes it started to exit on their own."""
    parser.addoption("--leftover-grace", type=float, default=30.0, metavar="SECONDS",
                     help="seconds the processes a session started get to end before it fails naming them")


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own sessionfinish has stopped the workers
def pytest_sessionfinish(session, exitstatus):
    """Fail the session if it leaves a process it started running (a server, a raylet), naming each."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checks, once every worker has exited and all they left is an orphan
    found = leftovers(os.environ[SESSION_VAR], grace_s=session.config.getoption("leftover_grace"))
    if not found:
        return
    lines = [f"the test session left {len(found)} process(es) it started running:",
             *(f"  pid {pid}: {cmd}" for pid, cmd in found)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print("\n".join(lines), file=sys.stderr)
    else:
        reporter.line("")  # after the progress line
        reporter.write_sep("=", "processes left running", red=True)
        for line in lines:
            reporter.write_line(line)
        reporter.stats["left running"] = found  # the summary line says it too: "5 passed, 1 left running"
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
