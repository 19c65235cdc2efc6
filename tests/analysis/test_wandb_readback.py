"""The analysis' offline W&B run read back from its .wandb file: the whole results table, the study-results
artifact, the sample grids and the paper's charts are there; the workspace spec of `study dashboard` validates
against wandb-workspaces' own models and names only keys the runs logged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wandb_records import artifacts, history_keys, records  # noqa: E402

from conftest import with_experiments  # noqa: E402

# What a training run logs at every log point (trainers/loop.py): the dashboard's training panels may use these.
TRAINING_KEYS = {"train_images", "train_steps", "train_flops", "train_flops_paper", "loss", "lr", "images_per_s",
                 "elapsed_s"}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    from analysis.api import analyze_run

    run = tmp_path_factory.mktemp("wandb_run")
    table = with_experiments()
    table.to_parquet(run / "results.parquet", index=False)
    grids = run / "grids" / "base"
    grids.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 64, 3), np.uint8)).save(grids / "w8-s0.png")
    (grids / "w8-s0.json").write_text(json.dumps({"experiment": "base", "width": 8, "seed": 0, "params": 5.2e5,
                                                  "train_images": 8192, "sampler": "ddim", "steps": 16,
                                                  "guidance": 3.0, "samples": 8}))
    summary = analyze_run(run, bootstrap=20, seed=0, wandb_mode="offline", progress=False)
    (wandb_file,) = Path(summary["wandb_dir"]).glob("*.wandb")
    recs = records(wandb_file)
    return run, table, history_keys(recs), artifacts(recs)


def test_the_whole_results_table_is_logged(logged):
    run, table, history, _ = logged
    meta = history["tables/results"]
    assert (meta["_type"], meta["nrows"], meta["ncols"]) == ("table-file", len(table), len(table.columns))


def test_the_results_are_one_versioned_artifact(logged):
    run, _, _, arts = logged
    (res,) = [a for a in arts.values() if a["type"] == "study-results"]
    assert set(res["files"]) == {"results.parquet", "fits.json", "fits.csv", "curves.csv", "crossovers.csv",
                                 "claims.csv", "findings.md", "report.html"}


def test_grids_and_the_paper_s_charts_are_logged(logged):
    run, _, history, _ = logged
    grid = history["grids/base/w8-s0"]
    assert grid["_type"] == "image-file" and "0.52M (width 8, seed 0)" in grid["caption"]
    assert "ddim, 16 steps, guidance 3" in grid["caption"]
    for key in ("charts/base/fid_vs_training_compute", "charts/base/fid_vs_guidance/ddim",
                "charts/base/fid_vs_sampling_cost/ddim", "charts/base/best_size_per_budget",
                "charts/superres/fid_vs_sampling_cost/ddim", "charts/dreambooth/subject_fidelity_vs_sampling_cost/ddim",
                "tables/distillation/gain", "tables/superres/superres_cells"):
        assert key in history or f"{key}_table" in history, key


def test_the_workspace_spec_validates_and_names_only_logged_keys(logged):
    from wandb_workspaces.workspaces.internal import View

    from analysis.dashboard import build_workspace, write_spec

    run, _, history, _ = logged
    View.model_validate_json(write_spec(run).read_text())  # the library's own model of a saved workspace
    named = set()
    for section in build_workspace(run).sections:
        for panel in section.panels:
            if hasattr(panel, "query"):
                named.add(panel.query["summaryTable"]["tableKey"])
            named.update(getattr(panel, "media_keys", []))
            if getattr(panel, "table_name", None):
                named.add(panel.table_name)
            named.update(y for y in getattr(panel, "y", []) if y not in TRAINING_KEYS)
    assert named and named <= set(history), sorted(named - set(history))
    assert {"tables/results", "charts/base/fid_vs_guidance/ddim_table", "grids/base/w8-s0"} <= named


def test_dashboard_without_an_analysis_says_what_to_run(tmp_path):
    from analysis.dashboard import write_spec

    with pytest.raises(ValueError, match="run `study analyze"):
        write_spec(tmp_path)
