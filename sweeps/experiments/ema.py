"""The post-hoc EMA experiment: each base (size, seed)'s final milestone as trained ("fixed": its training EMA,
train.ema_decay) and reconstructed at each of ema.sigma_rels (study.phema), all scored at the reference cell
(eval.curve_sampler, curve_steps) at one fixed guidance, so that the only difference between two rows of a size
is the averaging of its weights. Its rows carry `variant` ("fixed", "sigma-0.080", ...) and the held-out loss."""

from __future__ import annotations

from pathlib import Path

from sweeps.experiments import Experiment, StageContext, final_milestones


class EmaExperiment(Experiment):
    name = "ema"
    search = False  # one fixed guidance for every EMA length

    def sources(self, ctx: StageContext) -> dict[tuple[int, int], str]:
        """Each base (size, seed)'s final milestone: the weights it averages differently."""
        return final_milestones(ctx, "base")

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """One chain per (size, seed, EMA length) and one for the training's own EMA, at the reference cell."""
        from study.phema import reconstruct_checkpoint
        from study.schedulers import default_timestep_spacing
        from sweeps.eval_grid import Chain

        e, o = ctx.cfg.eval, ctx.cfg.ema
        steps, sampler = e.curve_steps or max(e.steps), e.curve_sampler
        spacing = e.timestep_spacing or default_timestep_spacing(sampler)
        guidance = (o.guidance if o.guidance is not None else e.default_guidance,)
        out = []
        for (width, seed), milestones in sorted(sizes.items()):
            m = milestones[-1]
            size_dir = Path(m["path"]).parent.parent
            forms = [("fixed", m["path"])] + [(f"sigma-{s:.3f}", str(reconstruct_checkpoint(size_dir, s,
                                                                                          int(m["train_images"]))))
                                              for s in o.sigma_rels]
            for variant, checkpoint in forms:
                out.append(Chain(width, seed, int(m["train_images"]), checkpoint, sampler, (steps,), spacing,
                                 milestone=m, experiment=self.name, task=self.task, fixed_guidance=guidance,
                                 variant=variant))
        return out


EXPERIMENT = EmaExperiment
