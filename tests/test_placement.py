"""Placement by memory plan on a loopback multi-node Ray cluster: each trial asks for the GPU kind its plan chose
(cluster.yaml's gpu_<model>_<GB>gb resources), so a size that only fits 80 GB GPUs waits for such a node while a
small one runs on the node that is there."""

from __future__ import annotations

import json
import pytest
from process_helpers import loopback_cluster
from ray.tune import Callback

pytestmark = pytest.mark.slow


@pytest.fixture
def a100_cluster():
    """A head that takes no work and one node of fake 40 GB GPUs, labelled as cluster.yaml labels them."""
    with loopback_cluster({"num_cpus": 2, "num_gpus": 1, "resources": {"gpu_a100_40gb": 1}}) as (c, (node,)):
        yield c, node


_STATE: dict = {}  # the running test's cluster and findings: Tune pickles its callbacks, which must not hold them


class AddH100WhenTheSmallTrialIsDone(Callback):
    """Runs in the driver's Tune loop: once c=64 finished, note the large trial's state, then add its node."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        seen = _STATE["seen"]
        if trial.config["width"] == 64 and "h100" not in seen:
            seen["large"] = [t.status for t in trials if t.config["width"] == 512][0]
            seen["large_ran"] = (_STATE["out"] / "w512.json").exists()
            seen["h100"] = _STATE["cluster"].add_node(num_cpus=2, num_gpus=1, resources={"gpu_h100_80gb": 1}).node_id


def test_a_large_trial_waits_for_its_gpu_kind_and_a_small_one_does_not(a100_cluster, tmp_path):
    from ray import tune

    from study.config import load_config
    from sweeps.train_grid import _job, placed_resources

    c, a100 = a100_cluster
    # One worker per run (its trial holds the GPU): 2B parameters need 80 GB GPUs, c=64 fits the 40 GB ones.
    cfg = load_config("paper", ["train.num_workers=1", "train.use_gpu=true", "train.cpus_per_worker=1",
                                "model.widths=[64,512]", f"resources.ray_address={c.address}"])
    sizes = {"base": [(64, 0), (512, 0)]}
    resources = placed_resources(cfg, {"base": _job(cfg, None, None)}, sizes, cfg.train, True, "base")
    seen = _STATE["seen"] = {}
    _STATE.update(cluster=c, out=tmp_path)

    def record(config: dict, out: str) -> None:  # a trial that only records where it ran (pickled by value)
        import ray

        with open(f"{out}/w{config['width']}.json", "w") as f:
            json.dump({"node": ray.get_runtime_context().get_node_id()}, f)

    tuner = tune.Tuner(tune.with_resources(tune.with_parameters(record, out=str(tmp_path)), resources),
                       param_space={"width": tune.grid_search([512, 64]), "seed": 0},
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                                 callbacks=[AddH100WhenTheSmallTrialIsDone()]))
    grid = tuner.fit()
    assert not grid.errors
    placed = {w: json.loads((tmp_path / f"w{w}.json").read_text())["node"] for w in (64, 512)}
    assert placed[64] == a100.node_id
    assert seen["large"] == "PENDING" and not seen["large_ran"]  # it waited for its kind of GPU
    assert placed[512] == seen["h100"]
