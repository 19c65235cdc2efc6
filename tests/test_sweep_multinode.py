"""The sweep on a multi-node Ray cluster started on this machine: trials land on different nodes."""

import json

import pytest
from process_helpers import loopback_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    """A head that takes no work (as cluster.yaml's) and two 1-CPU worker nodes, on loopback."""
    with loopback_cluster({"num_cpus": 1}, {"num_cpus": 1}) as (c, nodes):
        yield c, nodes


def test_train_and_eval_grid_spread_over_nodes(cluster, smoke_prepared, smoke_overrides, tmp_path):
    import ray

    from study.config import load_config
    from sweeps.eval_grid import run_eval_grid
    from sweeps.experiments import StageContext
    from sweeps.experiments.base import BaseExperiment
    from sweeps.guidance import default_storage
    from sweeps.sweep import trained_sizes
    from sweeps.train_grid import run_train_grid
    from trainers import run_dir_for

    c, nodes = cluster
    _, prep = smoke_prepared
    cfg = load_config("smoke", [*smoke_overrides, f"runs_dir={tmp_path}",
                                "train.total_images=256", "train.milestones=[1.0]", f"resources.ray_address={c.address}",
                                "eval.samplers=[ddim]", "eval.steps=[2]", "eval.n_trials=1"])
    run_dir = tmp_path / cfg.name
    out = run_train_grid(cfg, run_dir, prep.dir, progress=False)
    assert out["errors"] == [] and out["trials"] == 2

    worker_nodes = {n.node_id for n in nodes}
    placed = {}
    for w in cfg.model.widths:
        rows = [json.loads(line) for line in (run_dir_for(run_dir, w, 0) / "nodes.jsonl").read_text().splitlines()]
        placed[w] = rows[-1]["node_id"]
        assert placed[w] in worker_nodes  # never on the head, which takes no trials
    # Each node has room for one trial at a time (1 CPU): the two trials ran on different nodes.
    assert len(set(placed.values())) == 2, placed

    sizes = trained_sizes(cfg, run_dir)
    rungs = {w: {"params": 1, "gflops": 1.0, "normalized_cost": 1.0} for w in cfg.model.widths}
    chains = BaseExperiment().chains(StageContext(cfg, run_dir, prep.dir, rungs, default_storage(run_dir)), sizes)
    res = run_eval_grid(cfg, run_dir, prep.dir, chains, rungs, default_storage(run_dir),
                        progress=False)
    assert res["failed"] == []
    import pandas as pd

    table = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(table["width"].unique()) == sorted(cfg.model.widths) and table["best"].sum() == 2
    assert len(ray.nodes()) == 3
