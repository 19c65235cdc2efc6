"""The base experiment: train the ladder, search the guidance of every (sampler, steps) cell.

Its rows answer three of the paper's experiments: quality against training compute (the curve cell at every
training budget), quality against sampling cost at the best guidance, and the sampler comparison.
"""

from __future__ import annotations

from pathlib import Path

from sweeps.experiments import Experiment, StageContext

GRID_DIR = "grids/base"  # RUN_DIR/grids/base/w{W}-s{S}.png and .json: each size's samples, same prompts and noise


class BaseExperiment(Experiment):
    name = "base"

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """The full (sampler x steps) grid where eval.grid_budgets says, the quality-vs-compute cell
        (curve_sampler, curve_steps) at the other budgets."""
        from study.schedulers import default_timestep_spacing
        from sweeps.eval_grid import Chain

        e = ctx.cfg.eval
        curve_steps = e.curve_steps or max(e.steps)
        if e.sample_grid > 0:
            write_grids(ctx, sizes, curve_steps)
        chains = []
        for (width, seed), rows in sorted(sizes.items()):
            milestones = [m for m in rows if not m.get("loss_only")]
            for i, sampler, steps in grid(e, len(milestones)):
                m = milestones[i]
                spacing = e.timestep_spacing or default_timestep_spacing(sampler)
                chains.append(Chain(width, seed, int(m["train_images"]), str(m["path"]), sampler, steps, spacing,
                                    milestone=m))
            # train.loss_milestones: one held-out loss each, no FID
            chains += [Chain(width, seed, int(m["train_images"]), str(m["path"]), "", (0,), "", milestone=m,
                             loss_only=True) for m in rows if m.get("loss_only")]
        return chains


def grid(e, n_milestones: int) -> list[tuple[int, str, tuple[int, ...]]]:
    """(milestone index, sampler, steps) of one size's evaluation: the full (sampler x steps) grid where
    eval.grid_budgets says, the quality-vs-compute cell (curve_sampler, curve_steps) at the other budgets."""
    curve_steps = e.curve_steps or max(e.steps)
    out = []
    for i in range(n_milestones):
        full = e.grid_budgets == "all" or i == n_milestones - 1
        for sampler in (e.samplers if full else [e.curve_sampler]):
            cap = e.max_steps.get(sampler, max(e.steps))
            steps = sorted(s for s in e.steps if s <= cap) if full else [curve_steps]
            if steps:
                out.append((i, sampler, tuple(steps)))
    return out


def write_grids(ctx: StageContext, sizes: dict, steps: int) -> list[Path]:
    """Per (size, seed): eval.sample_grid samples of its final milestone from the evaluator's fixed prompts and
    noise (the same for every size), at eval.default_guidance with curve_sampler and `steps`; a JSON beside each
    PNG says what it shows. Existing grids are kept (rerun to resume)."""
    from study.atomic import write_json
    from study.imagegrid import comparison_grid
    from study.tasks import make_evaluator
    from study.weights import load_unet

    cfg, e = ctx.cfg, ctx.cfg.eval
    todo = {k: rows[-1] for k, rows in sizes.items() if rows and not rows[-1].get("partial")
            and not (Path(ctx.run_dir) / GRID_DIR / f"w{k[0]}-s{k[1]}.png").exists()}
    if not todo:
        return []
    evaluator = make_evaluator("text2image", cfg, ctx.prepared_dir)
    written = []
    for (width, seed), m in sorted(todo.items()):
        out = Path(ctx.run_dir) / GRID_DIR / f"w{width}-s{seed}.png"
        comparison_grid(evaluator, [(load_unet(m["path"], e.checkpoint), e.curve_sampler, steps)],
                        e.default_guidance, e.sample_grid, out)
        write_json(out.with_suffix(".json"), {
            "experiment": "base", "width": width, "seed": seed, "params": ctx.rungs[width]["params"],
            "train_images": int(m["train_images"]), "sampler": e.curve_sampler, "steps": steps,
            "guidance": e.default_guidance, "samples": e.sample_grid})
        written.append(out)
    return written


EXPERIMENT = BaseExperiment
