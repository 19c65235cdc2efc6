"""How many FID evaluations the guidance search needs to come within the FID noise of the best value
that the paper's full grid (1.5, 2, 3, ..., 8, clipped to the config's range) finds.

Run after a study has trained its sizes (e.g. `study run` on the embedded default):

    python benchmarks/guidance_search.py runs/tiny [--cells 12] [--budget 8]
    python benchmarks/guidance_search.py --tiny   # trains a one-size study for two steps first, in seconds

For each sampled cell (final checkpoint; every size, sampler and step count unless --cells caps it)
it evaluates every grid point, then replays the Optuna search (same sampler and seeding as the
study: the paper's default, then the neighbouring step count's optimum) in memory, and reports the
first evaluation whose FID is within one bootstrap std (the evaluation noise) of the grid's best.
Evaluations are deterministic per guidance (fixed noise and prompts), so the grid's values are
cached and reused by the search where the search asks for the same point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

# --tiny's study: the embedded default cut to one size trained for two steps, one sampler and step count, and
# 32 evaluation samples; no derived experiments; on the digits, whose domain classifier trains in seconds (the
# photographs' takes about 40 s of the 70 s this mode took on them).
TINY_STUDY = ["name=guidance-tiny", "data.name=digits", "dreambooth.data=digits", "model.widths=[8]",
              "train.batch_size=32", "train.total_images=64",
              "train.loss_milestones=[]",
              "train.milestones=[1.0]", "train.warmup_images=0", "eval.samplers=[ddim]", "eval.steps=[2]",
              "eval.curve_steps=2", "eval.num_samples=32", "eval.batch_size=32", "superres.enabled=false",
              "distill.enabled=false", "dreambooth.enabled=false", "tracking.wandb_mode=disabled"]


def tiny_study(root: Path) -> Path:
    """A trained one-size study in ROOT (its data, evaluator and run folder all there): --tiny's input."""
    from study.config import load_config
    from study.prepare import prepare
    from study.runfolder import check_run_folder
    from trainers import train_size

    cfg = load_config("tiny", [f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}", *TINY_STUDY])
    out = check_run_folder(cfg)
    prep = prepare(cfg, progress=False)
    for width in cfg.model.widths:
        train_size(cfg, width, cfg.sweep.seeds[0], out, prep.dir, progress=False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", help="a study's run folder (with --tiny: none)")
    ap.add_argument("--cells", type=int, default=0, help="at most this many cells (0: all)")
    ap.add_argument("--budget", type=int, default=8, help="search evaluations per cell (the grid has 8)")
    ap.add_argument("--tiny", action="store_true",
                    help="train a one-size study in a temporary folder and search one cell (tests/test_benchmarks.py)")
    args = ap.parse_args(argv)
    if args.tiny == (args.run_dir is not None):
        ap.error("give a study's run folder (e.g. runs/tiny) or --tiny, one of the two")
    if args.tiny:
        ap.set_defaults(cells=1, budget=3)
        args = ap.parse_args(argv)
        with tempfile.TemporaryDirectory() as tmp:
            args.run_dir = tiny_study(Path(tmp))
            return search(args)
    return search(args)


def search(args) -> int:
    """Grid and search for each cell of the study in args.run_dir; prints one line a cell and a summary."""
    import optuna
    import torch

    from study.config import from_dict
    from study.evaluator import load_evaluator
    from study.prepare import prepared_paths
    from sweeps.experiments import StageContext
    from sweeps.experiments.base import BaseExperiment
    from sweeps.guidance import search_cell
    from sweeps.sweep import trained_sizes
    from study.weights import load_unet

    cfg = from_dict(json.loads((args.run_dir / "config.json").read_text()))
    cfg.eval.sample_grid = 0  # the study's sample grids are the study's to write, not this benchmark's
    torch.set_num_threads(1)
    sizes = trained_sizes(cfg, args.run_dir)
    if not sizes:
        print(f"{args.run_dir}: no trained sizes; run `study run` (or `study sweep`) first", file=sys.stderr)
        return 2
    finals = {k: [v[-1]] for k, v in sizes.items()}
    chains = BaseExperiment().chains(StageContext(cfg, args.run_dir, prepared_paths(cfg).dir, {}, ""), finals)
    evaluator = load_evaluator(cfg, prepared_paths(cfg).dir)
    lo, hi = cfg.eval.guidance_min, cfg.eval.guidance_max
    grid = sorted({min(max(g, lo), hi) for g in (1.5, 2, 3, 4, 5, 6, 7, 8)})
    search_cfg = cfg.eval
    search_cfg.search, search_cfg.n_trials = "optuna", args.budget
    rows, done = [], 0
    for chain in chains:
        unet = load_unet(chain.checkpoint, weights=cfg.eval.checkpoint)
        prev = None
        for cell in chain.cells():
            if args.cells and done >= args.cells:
                break
            cache: dict[float, dict] = {}

            def evaluate(g, steps=cell.steps):
                key = round(g, 6)
                if key not in cache:
                    cache[key] = evaluator.evaluate(unet, chain.sampler, steps, g)
                return dict(cache[key])

            grid_res = {g: evaluate(g) for g in grid}
            g_best = min(grid_res, key=lambda g: grid_res[g]["fid"])
            best, noise = grid_res[g_best]["fid"], grid_res[g_best]["fid_std"] or 0.0
            order = []
            seeds = [min(max(cfg.eval.default_guidance, lo), hi)] + ([prev] if prev is not None else [])
            search_cell(cell, evaluate, optuna.storages.InMemoryStorage(), search_cfg, seeds,
                        on_trial=lambda n, g, res: order.append((res["fid"], g)))
            hit = next((i + 1 for i, (f, _) in enumerate(order) if f <= best + noise), None)
            prev = min(order)[1]  # the next step count is seeded with this cell's optimum, as in the study
            order = [f for f, _ in order]
            rows.append({"width": chain.width, "sampler": chain.sampler, "steps": cell.steps, "grid_best_g": g_best,
                         "grid_best_fid": best, "noise": noise, "search_best_fid": min(order),
                         "evals_to_within_noise": hit})
            done += 1
            print(f"w{chain.width:<3} {chain.sampler:<12} steps {cell.steps:<3} grid best {best:7.3f} @ g={g_best:<4} "
                  f"(noise {noise:.3f}); search best {min(order):7.3f}; within noise after "
                  f"{hit if hit else f'>{args.budget}'} evaluations", flush=True)
    hits = [r["evals_to_within_noise"] for r in rows]
    reached = [h for h in hits if h is not None]
    print(f"\n{len(rows)} cells, grid: {len(grid)} evaluations per cell")
    print(f"search within the FID noise of the grid's best in {len(reached)}/{len(rows)} cells; "
          f"evaluations needed: median {np.median(reached) if reached else float('nan'):.1f}, "
          f"mean {np.mean(reached) if reached else float('nan'):.2f}, max {max(reached) if reached else 'n/a'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
