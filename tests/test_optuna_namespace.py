"""Studies that share one Optuna storage (the cluster's PostgreSQL in configs/paper.yaml) keep their cells apart:
a second study of the same cells evaluates its own checkpoints instead of reporting the first one's FIDs."""

from __future__ import annotations

import json
from dataclasses import replace

from sweeps.eval_grid import Chain, chain_done, chain_rows
from sweeps.guidance import default_storage, open_storage, search_cell, study_namespace


def _run_folder(path, uuid: str):
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"run_uuid": uuid}))
    return path


def test_two_studies_in_one_storage_keep_their_cells_apart(tmp_path):
    from study.config import load_config

    cfg = load_config("tiny", ["eval.n_trials=2"])
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # as a cluster's one database: outside every run folder
    first, second = _run_folder(tmp_path / "first", "aaaa"), _run_folder(tmp_path / "second", "bbbb")
    chain = Chain(8, 0, 64, "ckpt", "ddim", (4,), "leading",
                  milestone={"train_flops": 1.0, "train_flops_paper": 1.0, "config_hash": "x"})
    mine = {run: replace(chain, namespace=study_namespace(run, shared)) for run in (first, second)}
    storage = open_storage(shared)
    for cell in mine[first].cells():
        search_cell(cell, lambda g: {"fid": 10.0 + g, "num_samples": 8}, storage, cfg.eval, seed_points=[7.5])
    assert chain_done(cfg, mine[first], storage)
    # The second study's cells are its own: nothing done yet, no rows of the first study's checkpoints.
    assert not chain_done(cfg, mine[second], storage)
    rung = {"params": 1, "gflops": 1.0, "normalized_cost": 1.0}
    assert chain_rows(cfg, mine[second], rung, storage) == []
    rows = chain_rows(cfg, mine[first], rung, storage)
    assert len(rows) == 2 and all(r["optuna_study"].startswith("aaaa/") for r in rows)
    # A run folder's own database (the default) keeps the names it always had: old run folders resume.
    assert study_namespace(first, default_storage(first)) == ""
    assert mine[first].cells()[0].study_name == "aaaa/w8-s0-i64-ddim-4-leading"
