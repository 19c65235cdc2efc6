"""The DreamBooth experiment: a DreamBooth fine-tune of every base (size, seed)'s final milestone, evaluated on
(sampler, steps) cells with the guidance searched for the combined objective of dreambooth.* (subject fidelity
under a prompt-fidelity constraint). Its rows (experiment = task = dreambooth) carry subject and prompt fidelity,
language drift and the path of each size's image grid (RUN_DIR/dreambooth/grids/)."""

from __future__ import annotations

from sweeps.experiments import Experiment, StageContext, final_milestones


class DreamBoothExperiment(Experiment):
    name = "dreambooth"
    objective = "objective"  # study.experiments.dreambooth.evaluator.objective_value

    def options(self, cfg) -> dict:
        from trainers.recipes.dreambooth import dreambooth_options

        return dreambooth_options(cfg)


    def sources(self, ctx: StageContext) -> dict[tuple[int, int], str]:
        """Each base (size, seed)'s final milestone (EMA weights, dreambooth.base_weights)."""
        return final_milestones(ctx, "base")

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """(sampler, steps) cells of dreambooth.samplers x dreambooth.steps on each fine-tune."""
        db = ctx.cfg.dreambooth
        return self.final_chains(ctx, sizes, db.samplers, {s: db.steps for s in db.samplers})


EXPERIMENT = DreamBoothExperiment
