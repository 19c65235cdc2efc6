"""docs/cluster.md's on-premises recipe, run as written: `ray start` on a head and a worker node (each its own
temp dir, loopback addresses, token authentication), `study prepare`'s pipeline driven from a third process,
then exactly the processes the test started are stopped (never `ray stop`, which ends every Ray on the
machine)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest
from process_helpers import stop_processes

from study.shards.format import ShardIndex, shard_paths

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")

_PREPARE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_shards_prepare import _cfg, _run
_run(_cfg(sys.argv[1], "data.prepare_writers=2", "data.shard_size=2"), Path(sys.argv[2]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _started_under(root: str) -> list[psutil.Process]:
    """The processes `ray start` left for the nodes under `root` (each names its temp dir on its command
    line), with every descendant (the Ray workers): this test's and no one else's."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter():
        try:
            if any(root in arg for arg in p.cmdline()):
                for q in [p, *p.children(recursive=True)]:
                    found[q.pid] = q
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return list(found.values())


def test_ray_start_cluster_on_loopback_runs_prepare_on_both_nodes(tmp_path):
    from test_shards_prepare import write_wds

    # Short paths: Ray's sockets live under the temp dir, and a Unix socket path is at most 107 bytes.
    root = tempfile.mkdtemp(prefix="ldm-onprem-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                        f"--temp-dir={root}/head", *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=3", f"--temp-dir={root}/node",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        data = write_wds(tmp_path / "wds", n_tars=4, per_tar=6)
        folder = tmp_path / "p" / "shards"
        proc = subprocess.run([sys.executable, "-c", _PREPARE, str(data), str(folder), os.path.dirname(__file__)],
                              env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        idx = ShardIndex.load(folder, verify_hashes=True)
        assert idx.n("train") + idx.n("heldout") == 24
        import json

        nodes = {json.loads(shard_paths(folder, s["name"])["done"].read_text())["node"]
                 for split in ("train", "heldout") for s in idx.shards(split)}
        assert len(nodes) == 1  # the worker node wrote every shard (the head has no CPU to offer)
        # Without the token the cluster refuses a driver: authentication is on.
        bare = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r)" % address],
                               env=bare, capture_output=True, text=True, timeout=120)
        assert probe.returncode != 0
    finally:
        ours = _started_under(root)
        left = stop_processes(ours)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, [p.pid for p in left]
