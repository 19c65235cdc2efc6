"""The distillation experiment: a latent-consistency-distilled student of every base (size, seed), evaluated
with the LCM sampler at few steps, guidance searched per cell as for base.

Its rows (experiment = distillation) answer the paper's distilled-vs-undistilled comparison at equal sampling
cost; each row records `unet_calls` (an LCM step is one UNet call, a guided base step two).
"""

from __future__ import annotations

from pathlib import Path

from sweeps.experiments import Experiment, StageContext, final_milestones

GRID_DIR = "distillation"  # RUN_DIR/distillation/grid-w{W}-s{S}.png: undistilled vs distilled samples


class DistillationExperiment(Experiment):
    name = "distillation"

    def options(self, cfg) -> dict:
        from trainers.recipes.distillation import lcd_options

        return lcd_options(cfg)


    def sources(self, ctx: StageContext) -> dict[tuple[int, int], str]:
        """The teachers: each base (size, seed)'s final milestone."""
        return final_milestones(ctx, "base")

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """The LCM sampler at distill.steps on the final milestone and distill.curve_steps on the earlier ones;
        writes the comparison grids first."""
        from study.schedulers import default_timestep_spacing
        from sweeps.eval_grid import Chain

        ds, chains = ctx.cfg.distill, []
        spacing = ctx.cfg.eval.timestep_spacing or default_timestep_spacing("lcm")  # LCM's grid ignores it
        for (width, seed), milestones in sorted(sizes.items()):
            for i, m in enumerate(milestones):
                # earlier milestones: the curve's one step count (distill.curve_steps); the last: every one
                steps = ds.steps if i == len(milestones) - 1 or not ds.curve_steps else [ds.curve_steps]
                chains.append(Chain(width, seed, int(m["train_images"]), str(m["path"]), "lcm",
                                    tuple(sorted(steps)), spacing, milestone=m, experiment=self.name,
                                    task=self.task))
        if ds.grid_prompts > 0:
            write_grids(ctx, sizes)
        return chains


def write_grids(ctx: StageContext, sizes: dict) -> list[Path]:
    """Per (size, seed): the teacher (DDIM) and its student (LCM) at distill.grid_steps on the same prompts,
    noise and guidance (eval.default_guidance), into RUN_DIR/distillation/; existing grids are kept."""
    from study.imagegrid import comparison_grid
    from study.tasks import make_evaluator
    from study.weights import load_unet

    cfg, ds = ctx.cfg, ctx.cfg.distill
    teachers = final_milestones(ctx, "base")
    todo = {k: rows[-1]["path"] for k, rows in sizes.items()
            if k in teachers and not _grid_path(ctx.run_dir, *k).exists()}
    if not todo:
        return []
    evaluator = make_evaluator("text2image", cfg, ctx.prepared_dir)
    written = []
    for (width, seed), student in sorted(todo.items()):
        rows = [(load_unet(teachers[(width, seed)], cfg.eval.checkpoint), "ddim", ds.grid_steps),
                (load_unet(student, cfg.eval.checkpoint), "lcm", ds.grid_steps)]
        out = _grid_path(ctx.run_dir, width, seed)
        comparison_grid(evaluator, rows, cfg.eval.default_guidance, ds.grid_prompts, out)
        written.append(out)
    return written


def _grid_path(run_dir: Path, width: int, seed: int) -> Path:
    return Path(run_dir) / GRID_DIR / f"grid-w{width}-s{seed}.png"


EXPERIMENT = DistillationExperiment
