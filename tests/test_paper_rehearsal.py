"""The rehearsal of configs/paper.yaml on CPU: every stage of every experiment the paper ran (prepare, the base
grid, the guidance search, distillation, 4x super-resolution on DIV2K, DreamBooth on google/dreambooth's layout,
analysis and report) through the real `study run`, on SD-shaped stand-in weights (tests/standins.py: the real
diffusers/transformers classes with shrunk configs), on a two-node loopback Ray cluster, with Optuna on
PostgreSQL, the FID reference streamed from the COCO stand-in images, two Ray Train workers per run on ZeRO-2 in
bf16 with activation checkpointing and the memory plan applied; killed once mid-training (SIGKILL of the `study
run` process group) and rerun with the same command, it ends with the table an uninterrupted run ends with.

What differs from paper.yaml is REHEARSAL, and only sizes: widths, budgets (images, milestones, steps, Optuna
trials), resolution, sample counts and node sizes (workers, CPUs, no GPU, the GPU kinds' memory shrunk by
resources.gpu_memory_scale so that the plan must accumulate and checkpoint). Two settings have no CPU form and
take the nearest one, each said where it is set below: train.use_gpu=false (no GPU here) and train.precision=bf16
(paper.yaml's `auto` is bf16 on GPU and fp32 on CPU; DeepSpeed runs bf16 with ZeRO-2 on CPU, so the rehearsal
asks for it by name).

Time on the dev VM (2 cores, 24 GiB, no GPU, shared with other work): see docs/cluster.md, "The CPU rehearsal".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from process_helpers import loopback_cluster
from standins import stage
from test_optuna_postgres import running_postgres
from test_smoke_study import _crash

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCALE = 5.5e-3  # 40 GB -> 220 MB: the base run (0.16 GB of states and EMA) must accumulate and checkpoint
# configs/paper.yaml shrunk to CPU size: nothing but sizes (docs/cluster.md, "The CPU rehearsal").
REHEARSAL = [
    # widths and resolution: one width of the paper ladder (SD1.5's blocks) on 32 px images, 16x16 latents
    "model.widths=[32]", "data.resolution=32", "superres.hr_size=32",
    # budgets: training images and their milestones, sampling steps, Optuna trials per cell
    "train.total_images=128", "train.batch_size=64", "train.milestones=[0.5,1.0]", "train.warmup_images=64",
    "eval.steps=[4]", "eval.n_trials=2", "distill.total_images=32", "distill.batch_size=16", "distill.steps=[1,2]",
    "superres.train_images=32", "superres.batch_size=16", "superres.warmup_images=16", "superres.steps=[4]",
    "dreambooth.train_images=8", "dreambooth.batch_size=4", "dreambooth.steps=[4]", "dreambooth.class_steps=4",
    # sample counts
    "data.shard_size=32", "data.eval_fraction=0.25", "eval.num_samples=8", "eval.batch_size=8",
    "eval.heldout_samples=8", "eval.sample_grid=2", "distill.grid_prompts=2", "superres.num_eval=4",
    "dreambooth.num_class_images=4", "dreambooth.max_prompts=2", "dreambooth.samples_per_prompt=2",
    "dreambooth.class_eval_samples=4", "dreambooth.grid_per_prompt=2",
    # node sizes: two CPU workers per run, CPU tasks, and GPU kinds of megabytes (the plan must accumulate)
    "train.num_workers=2", "dreambooth.num_workers=2", "train.cpus_per_worker=1", "eval.cpus_per_eval=1",
    "eval.gpus_per_eval=0", "data.prepare_actors=1", "data.prepare_gpus_per_actor=0", "data.prepare_writers=2",
    "eval.reference_shards=2", "eval.reference_workers=2", f"resources.gpu_memory_scale={SCALE}",
    "train.use_gpu=false",  # no GPU on this machine
    "train.precision=bf16",  # what paper.yaml's `auto` means on GPU (on CPU `auto` is fp32)
    "train.memory_plan=true",  # the plan on CPU too, against cluster.yaml's GPU kinds (shrunk above)
]
# Each node carries one unit of every GPU kind of cluster.yaml: a run's two workers (one unit each) land on both.
NODE = {"num_cpus": 2, "resources": {"gpu_a100_40gb": 1, "gpu_l40s_48gb": 1, "gpu_h100_80gb": 1}}


def _study(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(args: list[str], env: dict) -> str:
    proc = _study(args, env)
    try:
        out, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            _crash(proc)
    assert proc.returncode == 0 and "study finished" in out, out[-5000:]
    return out


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The rehearsal killed once mid-training and rerun, and the same study run once without a kill."""
    root = tmp_path_factory.mktemp("rehearsal")
    env = stage(root / "stage")
    with running_postgres() as pg, loopback_cluster(NODE, NODE) as (cluster, nodes):
        env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, **env, "WANDB_MODE": "offline",
               "LDM_OPTUNA_STORAGE": pg.url, "RAY_ADDRESS": cluster.address}
        runs = Path(env["LDM_SHARED"]) / "runs"
        killed = ["run", "paper", "name=killed", *REHEARSAL]
        t0 = time.monotonic()
        proc = _study(killed, env)
        try:
            deadline = time.monotonic() + 900
            while proc.poll() is None and time.monotonic() < deadline:
                if any((runs / "killed").glob("train/*/checkpoints/milestone-*")):  # mid-training: 1 of 2
                    break
                time.sleep(0.2)
            assert proc.poll() is None, f"the study ended before the kill:\n{proc.stdout.read()[-5000:]}"
        finally:
            _crash(proc)  # SIGKILL of the whole process group, as a crash of the head would
        killed_at = {p.name for p in (runs / "killed").glob("train/*/checkpoints/*")}
        out = _finish(killed, env)
        t1 = time.monotonic()
        _finish(["run", "paper", "name=whole", *REHEARSAL], env)
        t2 = time.monotonic()
        print(f"rehearsal: killed + rerun {t1 - t0:.0f} s, uninterrupted {t2 - t1:.0f} s")
        yield {"runs": runs, "out": out, "killed_at": killed_at, "nodes": {n.node_id for n in nodes},
               "tables": {n: pd.read_parquet(runs / n / "results.parquet") for n in ("killed", "whole")}}


def test_every_experiment_of_the_paper_ran(rehearsal):
    df = rehearsal["tables"]["killed"]
    assert set(df["experiment"]) == {"base", "distillation", "superres", "dreambooth"}
    assert rehearsal["killed_at"] and not any(n.startswith("milestone-0000064") for n in rehearsal["killed_at"])


def test_the_rerun_after_the_kill_ends_with_the_uninterrupted_table(rehearsal):
    from study.results import CELL

    tables = []
    for name, df in rehearsal["tables"].items():
        assert not df.duplicated(["optuna_study", "optuna_trial"]).any(), name
        assert not df.duplicated([*CELL, "guidance"]).any(), name
        tables.append(df[[*CELL, "guidance", "fid"]].sort_values([*CELL, "guidance"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_each_run_trained_with_its_memory_plan_on_both_nodes(rehearsal):
    from study.config import load_config

    cfg = load_config("paper", REHEARSAL)
    run = rehearsal["runs"] / "killed"
    folders = {"base": run / "train" / "w32-s0", "distillation": run / "distillation" / "train" / "w32-s0",
               "superres": run / "superres" / "train" / "w32-s0", "dreambooth": run / "dreambooth" / "train" / "w32-s0"}
    for experiment, folder in folders.items():
        plan = json.loads((folder / "memory_plan.json").read_text())
        state = json.loads(sorted((folder / "checkpoints").glob("milestone-*/state.json"))[-1].read_text())
        assert (state["micro_batch"], state["grad_accum"], state["checkpointing"]) == (
            plan["micro_batch"], plan["grad_accum"], plan["checkpointing"]), experiment
        assert state["micro_batch"] * state["grad_accum"] * state["world_size"] == json.loads(
            (folder / "config.json").read_text())["train"]["batch_size"], experiment
        ranks = [json.loads(line) for line in (folder / "nodes.jsonl").read_text().splitlines()]
        assert {r["node_id"] for r in ranks} == rehearsal["nodes"], experiment
    base = json.loads((folders["base"] / "memory_plan.json").read_text())
    assert base["checkpointing"] and base["grad_accum"] > 1 and base["micro_batch"] < cfg.train.batch_size // 2
