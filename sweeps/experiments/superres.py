"""The super-resolution experiment (issue 12): a 4x super-resolution fine-tune of every base (size, seed)'s final
milestone, evaluated on (sampler, steps) cells at guidance 1 (no search: the paper uses no guidance). Its rows
(experiment = superres, task = superres4x) carry FID, LPIPS, PSNR and SSIM, bicubic upsampling's scores on the
same patches (bicubic_*), and the path of each cell's output strip for the image grid (RUN_DIR/superres/)."""

from __future__ import annotations

from sweeps.experiments import Experiment, StageContext, final_milestones

# Keys of the superres section that change what a fine-tune computes (its run identity); the evaluation keys
# (samplers, steps, noise level at inference, num_eval, the metric networks) may change without retraining.
TRAINING_KEYS = ("data", "root", "hr_size", "photo_shrink", "base_weights", "formulation", "residual_scale",
                 "prediction_type", "train_images", "batch_size", "lr", "warmup_images", "ema_decay",
                 "max_noise_level")


class SuperResExperiment(Experiment):
    name = "superres"
    objective = "fid"
    search = False

    def options(self, cfg) -> dict:
        o = {k: getattr(cfg.superres, k) for k in TRAINING_KEYS}
        if o["formulation"] != "residual":  # a scale the concat formulation never reads retrains nothing
            del o["residual_scale"]
        if not o["prediction_type"]:  # the base model's, as before the key existed: its runs keep their identity
            del o["prediction_type"]
        return o

    def sources(self, ctx: StageContext) -> dict[tuple[int, int], str]:
        """Each base (size, seed)'s final milestone (superres.base_weights)."""
        return final_milestones(ctx, "base")

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """(sampler, steps) cells of superres.samplers x superres.steps on each fine-tune, guidance 1."""
        o = ctx.cfg.superres
        steps = {s: [x for x in o.steps if x <= o.max_steps.get(s, max(o.steps))] for s in o.samplers}
        return self.final_chains(ctx, sizes, o.samplers, steps, fixed_guidance=(1.0,))


EXPERIMENT = SuperResExperiment
