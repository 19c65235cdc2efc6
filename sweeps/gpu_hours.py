"""GPU-hours of a study before it runs: each (experiment, width)'s training FLOPs and the base grid's sampling
FLOPs, from the ladder's forward FLOPs per image (study.ladder), over the peak of the GPU kind the memory plan
(study.memory) puts it on, at an assumed utilisation.

The utilisation is an assumption, not a measurement: no GPU has run this trainer yet (tests/test_gpu.py prints
the first measured MFU). It is counted in hardware FLOPs: a run the plan checkpoints recomputes one forward per
step (4 forwards' work per image instead of 3), and that work takes GPU time too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# Dense bf16 tensor-core peaks (no structured sparsity), in TFLOP/s, from NVIDIA's data sheets: A100 SXM 312,
# H100 SXM 989, L40S 362. Keyed by the model in a GPU kind resource (gpu_<model>_<GB>gb, cluster.yaml).
PEAK_BF16_TFLOPS = {"a100": 312.0, "h100": 989.0, "l40s": 362.0}
# 35 % of peak: what well-tuned bf16 UNet training reaches on A100/H100 by public reports (30-45 %; an LLM's
# large matrix products reach more, a UNet's convolutions and attention at 64x64 latents less), and what sampling
# at batch 25 x 2 is assumed to reach too. Unmeasured here: `--mfu` takes another.
ASSUMED_MFU = 0.35


@dataclass
class CostRow:
    """One (experiment, stage, width): its FLOPs, the GPU kind it runs on and its GPU-hours there."""

    experiment: str
    stage: str  # train | sample (the base grid's guidance search)
    width: int
    params: int
    flops: float  # hardware FLOPs (a checkpointed run's recomputed forward included)
    kind: str | None  # the memory plan's GPU kind; None where nothing fits
    gpu_hours: float | None

    def as_row(self) -> dict:
        return asdict(self)


def _hours(flops: float, kind: str | None, mfu: float) -> float | None:
    from study.memory import KIND_RESOURCE

    if kind is None:
        return None
    peak = PEAK_BF16_TFLOPS.get(KIND_RESOURCE.match(kind).group(1))
    return flops / (mfu * peak * 1e12) / 3600 if peak else None


def study_cost(cfg, mfu: float = ASSUMED_MFU) -> list[CostRow]:
    """Training GPU-hours of every enabled experiment at every width (trainers.budget's training FLOPs; frozen
    networks' forwards and prior-preservation images counted as the memory plan counts them), and the base grid's
    sampling GPU-hours (every cell's Optuna trials x eval.num_samples x steps x 2 with guidance)."""
    from study.config import with_train
    from study.experiments import SPECS
    from study.ladder import geometry, ladder
    from study.memory import chosen, cluster_kinds, jobs, memory_plan
    from sweeps.experiments.base import grid
    from trainers.budget import plan

    plan_rows = memory_plan(cfg)
    geom = geometry(cfg)
    out = []
    for job in jobs(cfg):
        if job.experiment != "base" and not SPECS[job.experiment].enabled(cfg):
            continue
        t = with_train(cfg, job.train).train
        rungs = ladder(cfg.model.ladder, cfg.model.widths, replace(geom, sample_size=job.side or geom.sample_size),
                       cfg.model.reference_width)
        for rung in rungs:
            budget = plan(t, rung.flops)
            row = chosen(plan_rows, job.experiment, rung.width)
            # per image: forward + backward (3 forwards, Budget.train_flops), a recomputed forward when
            # checkpointed, and the frozen networks' forwards; per sample, its images (prior preservation: 2)
            forwards = 3 + (1 if row is not None and row.checkpointing else 0) + job.nograd_forwards
            flops = budget.train_flops(budget.total_images) / 3 * forwards * job.images_per_sample
            kind = row.kind if row is not None else None
            out.append(CostRow(job.experiment, "train", rung.width, rung.params, flops, kind, _hours(flops, kind, mfu)))
    e = cfg.eval
    n_milestones = len(plan(cfg.train, 1.0).milestone_steps)
    calls = sum(sum(steps) for _, _, steps in grid(e, n_milestones)) * e.n_trials * e.num_samples * 2  # guided
    # An evaluation asks for eval.gpus_per_eval GPUs, which the autoscaler serves with the node type it fills best:
    # of the kinds the batch fits, the one of fewest GPUs per node (cluster.yaml: the 1-GPU L40S), then least memory.
    kinds = {k.resource: k for k in cluster_kinds(cfg)}
    for rung in ladder(cfg.model.ladder, cfg.model.widths, geom, cfg.model.reference_width):
        fits = [r for r in plan_rows if r.experiment == "base" and r.width == rung.width and r.eval_fits]
        kind = min(fits, key=lambda r: (kinds[r.kind].gpus_per_node, r.gpu_gb, r.kind)).kind if fits else None
        flops = calls * rung.flops
        out.append(CostRow("base", "sample", rung.width, rung.params, flops, kind, _hours(flops, kind, mfu)))
    return out


def format_cost(rows: list[CostRow], mfu: float) -> str:
    """The cost table (`study ladder CONFIG --gpu-hours`): one line per (experiment, stage, width), then the
    total of each experiment and of the study."""
    lines = [f"GPU-hours at {mfu:.0%} of each GPU's dense bf16 peak (an assumption: no GPU has measured this "
             f"trainer's MFU yet)",
             f"{'experiment':<12} {'stage':<6} {'width':>5} {'params':>7} {'PFLOPs':>12} {'GPU kind':<14} "
             f"{'GPU-hours':>10}"]
    for r in rows:
        hours = f"{r.gpu_hours:>10,.0f}" if r.gpu_hours is not None else f"{'no fit':>10}"
        lines.append(f"{r.experiment:<12} {r.stage:<6} {r.width:>5} {r.params / 1e9:>6.2f}B {r.flops / 1e15:>12,.0f} "
                     f"{r.kind or '-':<14} {hours}")
    totals: dict[str, float] = {}
    for r in rows:
        totals[r.experiment] = totals.get(r.experiment, 0.0) + (r.gpu_hours or 0.0)
    for name, hours in totals.items():
        lines.append(f"{name:<12} total {'':>5} {'':>7} {'':>12} {'':<14} {hours:>10,.0f}")
    lines.append(f"{'study':<12} total {'':>5} {'':>7} {'':>12} {'':<14} {sum(totals.values()):>10,.0f}")
    return "\n".join(lines)
