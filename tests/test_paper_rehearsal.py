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

Time on the dev VM (2 cores, 24 GiB, no GPU) shared with other agents' jobs (load average 5-9): 954 s for the
module, of which the killed study and its rerun 862 s (docs/cluster.md, "The CPU rehearsal"); not yet measured on an
idle machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

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
    "eval.steps=[4]", "eval.n_trials=2", "distill.total_images=32", "distill.batch_size=16", "distill.steps=[1,4]",
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
    """The rehearsal killed once mid-training and rerun to the end; beside it, the same base run trained without
    a kill (the reference the killed one must equal)."""
    root = tmp_path_factory.mktemp("rehearsal")
    staged = stage(root / "stage")
    with running_postgres() as pg, loopback_cluster(NODE, NODE) as (cluster, nodes):
        env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, **staged, "WANDB_MODE": "offline",
               "LDM_OPTUNA_STORAGE": pg.url, "RAY_ADDRESS": cluster.address}
        runs = Path(staged["LDM_SHARED"]) / "runs"
        args = ["run", "paper", "name=killed", *REHEARSAL]
        t0 = time.monotonic()
        proc = _study(args, env)
        try:
            deadline = time.monotonic() + 900
            while proc.poll() is None and time.monotonic() < deadline:
                if any((runs / "killed").glob("train/*/checkpoints/milestone-*")):  # mid-training: 1 of 2
                    break
                time.sleep(0.2)
            assert proc.poll() is None, f"the study ended before the kill:\n{proc.stdout.read()[-5000:]}"
        finally:
            _crash(proc)  # SIGKILL of the whole process group, as a crash of the head would
        killed_at = {p.parent.name for p in (runs / "killed").glob("train/*/checkpoints/*/state.json")}  # complete
        out = _finish(args, env)
        study_s = time.monotonic() - t0
        with mock.patch.dict(os.environ, env):  # paper.yaml reads its paths (the stand-ins') from the environment
            from study.config import load_config

            cfg = load_config("paper", REHEARSAL)
            reference = _uninterrupted(runs / "whole")
        print(f"rehearsal: the killed study and its rerun took {study_s:.0f} s")
        yield {"runs": runs, "out": out, "killed_at": killed_at, "nodes": {n.node_id for n in nodes},
               "table": pd.read_parquet(runs / "killed" / "results.parquet"), "reference": reference,
               "study_s": study_s, "cfg": cfg}


def _uninterrupted(run_dir: Path) -> dict:
    """The base run of the rehearsal trained without a kill on the same cluster (the study's own trainer), and
    the FID of its final EMA weights at one cell (DDIM, 4 steps, the default guidance), evaluated here with the
    study's evaluator, one thread as the study's evaluation tasks run."""
    import torch

    from study.config import load_config
    from study.prepare import prepare
    from study.tasks import make_evaluator
    from study.weights import load_unet
    from trainers import train_size

    cfg = load_config("paper", ["name=whole", *REHEARSAL])
    prep = prepare(cfg, progress=False)  # the killed study's prepared data, from the cache
    summary = train_size(cfg, 32, 0, run_dir, prep.dir, progress=False)
    final = Path(summary["run_dir"]) / summary["milestones"][-1]["path"]
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.eval.cpus_per_eval))
    try:
        res = make_evaluator("text2image", cfg, prep.dir).evaluate(load_unet(final, "ema"), "ddim", 4,
                                                                   cfg.eval.default_guidance)
    finally:
        torch.set_num_threads(threads)
    return {"final": final, "fid": res["fid"]}


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {name: load_file(folder / name) for name in ("ema.safetensors", "raw.safetensors")}


def test_every_experiment_of_the_paper_ran_every_cell_once(rehearsal):
    from study.results import CELL, KEY

    cfg = rehearsal["cfg"]
    df = rehearsal["table"]
    assert not df.duplicated(KEY).any() and not df.duplicated([*CELL, "guidance"]).any()
    cells = df.groupby(["experiment", *CELL[1:]]).size()
    per = {e: cells[e] for e in ("base", "distillation", "superres", "dreambooth", "ema")}
    assert set(df["experiment"]) == set(per)
    # base: every milestone x sampler x steps, each with its Optuna trials
    assert len(per["base"]) == len(cfg.train.milestones) * len(cfg.eval.samplers) * len(cfg.eval.steps)
    assert (per["base"] == cfg.eval.n_trials).all()
    assert len(per["distillation"]) == len(cfg.distill.steps)
    assert len(per["superres"]) == len(cfg.superres.samplers) * len(cfg.superres.steps)
    assert len(per["dreambooth"]) == len(cfg.dreambooth.samplers) * len(cfg.dreambooth.steps)
    # post-hoc EMA: the final weights at every sigma_rel of paper.yaml, beside the training's fixed EMA
    lengths = {"fixed", *(f"sigma-{s:.3f}" for s in cfg.ema.sigma_rels)}
    assert set(df.loc[df["experiment"] == "ema", "variant"]) == lengths
    assert df["fid"].notna().all() and (df["fid"] > 0).all()
    # The cluster's one PostgreSQL holds every study: this one's cells are under its run id (a second study
    # must not find them complete).
    uuid = json.loads((rehearsal["runs"] / "killed" / "run.json").read_text())["run_uuid"]
    assert df["optuna_study"].str.startswith(f"{uuid}/").all()
    assert "study finished" in rehearsal["out"]


def test_the_killed_run_resumed_to_the_uninterrupted_weights_and_fid(rehearsal):
    """Killed after its first milestone, the base run resumed from it; its final weights are the uninterrupted
    run's bit for bit, so every later stage (derived runs, evaluations: fixed noise, prompts and Optuna seeds)
    computes what the uninterrupted study would; the FID of one cell, evaluated apart from the uninterrupted
    weights, equals the table's."""
    import torch

    killed = rehearsal["runs"] / "killed" / "train" / "w32-s0"
    assert rehearsal["killed_at"] == {"milestone-0000000064"}  # the kill came between the two milestones
    ref = rehearsal["reference"]
    mine = _tensors(killed / "checkpoints" / ref["final"].name)
    for name, tensors in _tensors(ref["final"]).items():
        assert tensors.keys() == mine[name].keys()
        assert all(torch.equal(tensors[k], mine[name][k]) for k in tensors), name
    df = rehearsal["table"]
    row = df[(df["experiment"] == "base") & (df["train_images"] == 128) & (df["sampler"] == "ddim")
             & (df["steps"] == 4) & (df["guidance"] == 7.5)]
    assert len(row) == 1 and row["fid"].iloc[0] == pytest.approx(ref["fid"], rel=1e-9, abs=0)


def test_each_run_trained_with_its_memory_plan_on_both_nodes(rehearsal):
    cfg = rehearsal["cfg"]
    run = rehearsal["runs"] / "killed"
    folders = {"base": run / "train" / "w32-s0", "distillation": run / "distillation" / "train" / "w32-s0",
               "superres": run / "superres" / "train" / "w32-s0", "dreambooth": run / "dreambooth" / "train" / "w32-s0"}
    for experiment, folder in folders.items():
        plan = json.loads((folder / "memory_plan.json").read_text())
        state = json.loads(sorted((folder / "checkpoints").glob("milestone-*/state.json"))[-1].read_text())
        # what the trainer ran (DeepSpeed's split, the module's checkpointing flag) is what the plan chose
        assert (state["micro_batch"], state["grad_accum"], state["checkpointing"]) == (
            plan["micro_batch"], plan["grad_accum"], plan["checkpointing"]), experiment
        assert (state["zero_stage"], state["precision"], state["world_size"]) == (2, "bf16", 2), experiment
        # the global batch stayed the config's
        batch = json.loads((folder / "config.json").read_text())["train"]["batch_size"]
        assert state["micro_batch"] * state["grad_accum"] * state["world_size"] == batch, experiment
        ranks = [json.loads(line) for line in (folder / "nodes.jsonl").read_text().splitlines()]
        assert {r["node_id"] for r in ranks} == rehearsal["nodes"], experiment  # one rank on each node
    base = json.loads((folders["base"] / "memory_plan.json").read_text())
    # GPUs of 220 MB: the base run accumulates over micro-batches below its 32 images per rank, checkpointed
    assert base["kind"] == "gpu_a100_40gb" and base["checkpointing"] and base["grad_accum"] == 2
    assert base["micro_batch"] == cfg.train.batch_size // cfg.train.num_workers // 2
