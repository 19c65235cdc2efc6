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


def _checkpoint(path, sha: str):
    path.mkdir(exist_ok=True)
    (path / "state.json").write_text(json.dumps({"train_images": 64, "files": {"ema.safetensors": {
        "bytes": 10, "sha256": sha}}}))
    return str(path)


def test_a_cell_s_trials_of_a_retrained_checkpoint_are_not_reported_as_the_new_one_s(tmp_path, capsys):
    # A size folder deleted and retrained keeps its cells' studies in the run folder's optuna.db: the studies
    # record the checkpoint they evaluated, and the retrained checkpoint's cells are searched again.
    from study.config import load_config
    from sweeps.guidance import checkpoint_fingerprint

    cfg = load_config("tiny", ["eval.n_trials=2"])
    run = _run_folder(tmp_path / "run", "aaaa")
    storage = open_storage(default_storage(run))
    ckpt = _checkpoint(tmp_path / "milestone-64", "1" * 64)
    chain = Chain(8, 0, 64, ckpt, "ddim", (4,), "leading",
                  milestone={"train_flops": 1.0, "train_flops_paper": 1.0, "config_hash": "x"})
    rung = {"params": 1, "gflops": 1.0, "normalized_cost": 1.0}

    def search(fid):
        for cell in chain.cells():
            search_cell(cell, lambda g: {"fid": fid + g, "num_samples": 8}, storage, cfg.eval, seed_points=[7.5],
                        checkpoint=checkpoint_fingerprint(ckpt))

    def offsets():  # each row's FID less its guidance: which search() evaluated it
        return [round(r["fid"] - r["guidance"], 6) for r in chain_rows(cfg, chain, rung, storage)]

    search(10.0)
    assert chain_done(cfg, chain, storage) and offsets() == [10.0, 10.0]
    search(99.0)  # the same checkpoint: the study is complete, nothing is evaluated again
    assert offsets() == [10.0, 10.0]

    _checkpoint(tmp_path / "milestone-64", "2" * 64)  # retrained: other weights under the same path
    assert not chain_done(cfg, chain, storage) and chain_rows(cfg, chain, rung, storage) == []
    search(20.0)
    assert "held 2 trial(s) of another checkpoint" in capsys.readouterr().out
    assert chain_done(cfg, chain, storage) and offsets() == [20.0, 20.0]
