"""The evaluation grid: every (size, budget, sampler, steps) cell searched for its best guidance,
as Ray tasks with their own resources, so a cluster evaluates many cells at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from study import __version__
from study.config import StudyConfig, config_hash, from_dict, to_dict
from study.identity import TRAINING_SECTIONS
from sweeps.guidance import Cell, completed_results, open_storage, search_cell
from sweeps.results import upsert_results


@dataclass(frozen=True)
class Chain:
    """The cells of one checkpoint and sampler, searched in order of steps so each is seeded by its
    neighbour's optimum (the optimal guidance moves smoothly with the step count)."""

    width: int
    seed: int
    train_images: int
    checkpoint: str  # path of the milestone checkpoint
    sampler: str
    steps: tuple[int, ...]
    spacing: str
    milestone: dict = field(default_factory=dict, compare=False, hash=False)

    def cells(self) -> list[Cell]:
        return [Cell(self.width, self.seed, self.train_images, self.sampler, s, self.spacing) for s in self.steps]


def plan_chains(cfg: StudyConfig, sizes: dict[tuple[int, int], list[dict]]) -> list[Chain]:
    """Chains for every milestone of every trained size: the full grid where eval.grid_budgets says,
    the quality-vs-compute cell (curve_sampler, curve_steps) at the other budgets."""
    from study.schedulers import default_timestep_spacing

    e = cfg.eval
    curve_steps = e.curve_steps or max(e.steps)
    chains = []
    for (width, seed), milestones in sorted(sizes.items()):
        for i, m in enumerate(milestones):
            full = e.grid_budgets == "all" or i == len(milestones) - 1
            for sampler in (e.samplers if full else [e.curve_sampler]):
                cap = e.max_steps.get(sampler, max(e.steps))
                steps = sorted(s for s in e.steps if s <= cap) if full else [curve_steps]
                if not steps:
                    continue
                spacing = e.timestep_spacing or default_timestep_spacing(sampler)
                chains.append(Chain(width, seed, int(m["train_images"]), str(m["path"]), sampler, tuple(steps),
                                    spacing, milestone=m))
    return chains


def _row(cfg: StudyConfig, chain: Chain, rung: dict, cell: Cell, number: int, g: float, res: dict) -> dict:
    m = chain.milestone
    return {
        "run_id": cfg.name, "trial_id": f"w{chain.width}-s{chain.seed}", "width": chain.width,
        "params": int(rung["params"]), "gflops": float(rung["gflops"]),
        "normalized_cost": float(rung["normalized_cost"]), "train_images": chain.train_images,
        "train_flops": float(m["train_flops"]), "train_flops_paper": float(m["train_flops_paper"]),
        "sampler": chain.sampler, "steps": cell.steps, "timestep_spacing": chain.spacing, "guidance": g,
        "sampling_cost": float(rung["normalized_cost"]) * cell.steps, "fid": res["fid"], "kid": res.get("kid"),
        "alignment": res.get("alignment"), "num_samples": int(res["num_samples"]), "seed": chain.seed,
        "checkpoint": chain.checkpoint, "config_hash": config_hash(cfg, *TRAINING_SECTIONS),
        "version": __version__, "fid_std": res.get("fid_std"), "kid_std": res.get("kid_std"),
        "fid_floor": res.get("fid_floor"), "alignment_metric": res.get("alignment_metric"),
        "search": cfg.eval.search, "optuna_study": cell.study_name, "optuna_trial": number,
        "sampler_settings": res.get("sampler_settings"), "eval_seconds": res.get("eval_seconds"),
    }


def chain_rows(cfg: StudyConfig, chain: Chain, rung: dict, storage) -> list[dict]:
    """The results rows of a chain, rebuilt from its Optuna studies (so a resume never duplicates)."""
    return [_row(cfg, chain, rung, cell, n, g, res) for cell in chain.cells()
            for n, g, res in completed_results(cell, storage)]


def run_chain(cfg_dict: dict, prepared_dir: str, chain: Chain, rung: dict, storage_url: str) -> list[dict]:
    """Search every cell of a chain (one process, one loaded model) and return its rows."""
    import torch

    from study.evaluator import load_evaluator
    from study.schedulers import make_sampler, sampler_settings, training_scheduler
    from study.weights import load_unet

    cfg = from_dict(cfg_dict)
    torch.set_num_threads(max(1, int(cfg.eval.cpus_per_eval)))
    evaluator = load_evaluator(cfg, prepared_dir)
    unet = load_unet(chain.checkpoint, weights=cfg.eval.checkpoint)
    storage = open_storage(storage_url)
    settings = sampler_settings(make_sampler(chain.sampler, training_scheduler(cfg.model.prediction_type),
                                             cfg.eval.timestep_spacing))
    lo, hi = cfg.eval.guidance_min, cfg.eval.guidance_max
    prev = None
    for cell in chain.cells():
        def evaluate(g, steps=cell.steps):
            res = evaluator.evaluate(unet, chain.sampler, steps, g)
            res["sampler_settings"] = str(settings)
            return res

        seeds = [min(max(cfg.eval.default_guidance, lo), hi)] + ([prev] if prev is not None else [])
        search_cell(cell, evaluate, storage, cfg.eval, seeds)
        done = completed_results(cell, storage)
        prev = min(done, key=lambda r: r[2]["fid"])[1]
    return chain_rows(cfg, chain, rung, storage)


def _trials_target(cfg: StudyConfig) -> int:
    return len(cfg.eval.grid) if cfg.eval.search == "grid" else cfg.eval.n_trials


def chain_done(cfg: StudyConfig, chain: Chain, storage) -> bool:
    """Whether every cell of a chain has its trials."""
    return all(len(completed_results(c, storage)) >= _trials_target(cfg) for c in chain.cells())


def run_eval_grid(cfg: StudyConfig, run_dir: Path, prepared_dir: Path, chains: list[Chain],
                  rungs: dict[int, dict], storage_url: str, progress: bool = True) -> dict:
    """Submit every unfinished chain as a Ray task; rows reach the results table as trials complete."""
    import ray
    from tqdm.auto import tqdm

    storage = open_storage(storage_url)
    todo = [ch for ch in chains if not chain_done(cfg, ch, storage)]
    remote = ray.remote(run_chain).options(
        num_cpus=cfg.eval.cpus_per_eval, num_gpus=cfg.eval.gpus_per_eval,
        max_retries=cfg.eval.max_retries, retry_exceptions=True)
    cfg_dict = to_dict(cfg)
    # Biggest models first: the longest chains start early and the tail of the grid is short.
    todo.sort(key=lambda c: (-rungs[c.width]["normalized_cost"] * sum(c.steps), c.sampler))
    pending = {remote.remote(cfg_dict, str(prepared_dir), ch, rungs[ch.width], storage_url): ch for ch in todo}
    failed = []

    written = [-1]  # rows in the table after the last write

    def sync() -> int:
        """Rebuild every chain's rows from the Optuna studies (the source of truth) into the table.

        Completed trials never change, so the table is rewritten only when their number has."""
        rows = [r for ch in chains for r in chain_rows(cfg, ch, rungs[ch.width], storage)]
        if len(rows) != written[0]:
            upsert_results(run_dir, rows)
            written[0] = len(rows)
        return len(rows)

    total = sum(len(c.steps) for c in chains) * _trials_target(cfg)
    bar = tqdm(total=total, initial=min(total, sync()), unit="eval", desc="evaluate: guidance search",
               disable=not progress)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=10.0)
        for ref in ready:
            ch = pending.pop(ref)
            try:
                ray.get(ref)
            except Exception as err:  # a chain that failed after its retries: keep going, report it
                failed.append(f"evaluation of w{ch.width} at {ch.train_images} images, {ch.sampler}: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            bar.set_postfix_str(f"w{ch.width} {ch.sampler} done")
        bar.update(min(total, sync()) - bar.n)
    bar.close()
    return {"chains": len(chains), "evaluated": len(todo), "failed": failed}
