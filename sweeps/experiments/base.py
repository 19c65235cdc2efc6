"""The base experiment: train the ladder, search the guidance of every (sampler, steps) cell.

Its rows answer three of the paper's experiments: quality against training compute (the curve cell at every
training budget), quality against sampling cost at the best guidance, and the sampler comparison.
"""

from __future__ import annotations

from sweeps.experiments import Experiment, StageContext


class BaseExperiment(Experiment):
    name = "base"

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """The full (sampler x steps) grid where eval.grid_budgets says, the quality-vs-compute cell
        (curve_sampler, curve_steps) at the other budgets."""
        from study.schedulers import default_timestep_spacing
        from sweeps.eval_grid import Chain

        e = ctx.cfg.eval
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
                    chains.append(Chain(width, seed, int(m["train_images"]), str(m["path"]), sampler,
                                        tuple(steps), spacing, milestone=m))
        return chains


EXPERIMENT = BaseExperiment
