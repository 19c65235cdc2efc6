"""The GPU memory plan, computed before anything trains: for each experiment, width and GPU kind of the cluster,
the peak memory per GPU of a training step and of an evaluation batch, and the micro-batch, gradient
accumulation and activation checkpointing that keep the configured global batch within a GPU with a margin.

What a training step holds on the GPU of rank 0 (the worst: it also keeps the EMA):
- model, gradient and optimizer states: DeepSpeed's own estimator for the ZeRO stage (mixed precision: 16-bit
  weights and gradients, fp32 master weights, gradients and Adam moments, 20 bytes a parameter unsharded);
- the EMA: an fp32 copy of the weights, plus one fp32 temporary the size of the model while it updates
  (diffusers' EMAModel with foreach, below 1B parameters; larger models update tensor by tensor), which comes
  after the backward, so it counts against the activations; each rank's share of the post-hoc EMA profiles;
- activations: measured bytes per image (study/memory_table.json, trainers.memory_measure) x micro-batch, and the
  micro-batch's own inputs (fp32 latents and text-encoder states);
- the frozen text encoder at the training precision, where the shards keep token ids (data.captions = tokens) and
  the step encodes them (base and distillation runs; its no-grad forward frees its activations before the UNet's);
- derived experiments: distillation's frozen teacher and target network (16-bit) and their no-grad forwards
  (the teacher's with guidance, 2x the micro-batch); DreamBooth's class images (prior preservation doubles the
  micro-batch).
The table is measured on the paper ladder's blocks (SD1.5's: two layers per block, 77 CLIP tokens); another
ladder's plan reads the same law, an overestimate for the tiny ladder's one layer per block.
An evaluation batch holds the UNet (fp32), the sampling batch (x2 with classifier-free guidance) and its
text-encoder states, then the VAE decoder on eval.decode_batch_size images at a time.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from study.errors import ConfigError

# Above this many parameters the training EMA updates tensor by tensor, with no model-sized temporary
# (trainers.phema_track.ema_foreach decides by it, and the plan counts the temporary by it).
FOREACH_MAX_PARAMS = 1e9
GB = 1e9
TABLE = Path(__file__).with_name("memory_table.json")  # measured by trainers/memory_measure.py
REPO_CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
# A node type's GPU kind is a custom resource, one unit per GPU, named after the GPU and its memory: a trial asks
# for it to land on that kind, and the autoscaler reads it from cluster.yaml to start the right nodes.
KIND_RESOURCE = re.compile(r"^gpu_([a-z0-9]+)_(\d+)gb$")
SD_VAE_PARAMS = 83_653_863  # SD1.5's AutoencoderKL (decoder and encoder); both are loaded for evaluation
FEATURE_PARAMS = {"inception": 23_851_784, "classifier": 0}  # clean-fid's Inception-v3 (2015-12-05)
CLIP_PARAMS = 427_616_513  # CLIP ViT-L/14 (the CLIP score's model), fp32 on the evaluation GPU


@dataclass(frozen=True)
class GpuKind:
    """A kind of GPU of the cluster: its placement resource, memory and the node types that carry it."""

    resource: str
    memory_gb: float
    gpus_per_node: int
    node_types: tuple[str, ...]


def kind_memory_gb(resource: str) -> float | None:
    """The GPU memory a kind resource names (gpu_h100_80gb -> 80), None for any other resource."""
    m = KIND_RESOURCE.match(resource)
    return float(m.group(2)) if m else None


@lru_cache(maxsize=8)
def _cluster_kinds(path: str) -> tuple[GpuKind, ...]:
    import yaml

    kinds: dict[str, dict] = {}
    for name, nt in (yaml.safe_load(Path(path).read_text()).get("available_node_types") or {}).items():
        res = nt.get("resources") or {}
        if not res.get("GPU") or nt.get("max_workers", 1) == 0:
            continue
        named = [r for r in res if kind_memory_gb(r) is not None]
        if len(named) != 1 or res[named[0]] != res["GPU"]:
            raise ConfigError(f"{path}: node type {name!r} has {res['GPU']} GPUs but no GPU kind resource: add one "
                              f"resource gpu_<model>_<GB>gb with one unit per GPU (e.g. \"gpu_h100_80gb\": 8)")
        k = kinds.setdefault(named[0], {"gpus": int(res["GPU"]), "types": []})
        k["gpus"] = max(k["gpus"], int(res["GPU"]))
        k["types"].append(name)
    return tuple(sorted((GpuKind(r, kind_memory_gb(r), k["gpus"], tuple(k["types"])) for r, k in kinds.items()),
                        key=lambda k: (k.memory_gb, k.resource)))


def cluster_kinds(cfg=None, path: str | Path | None = None) -> tuple[GpuKind, ...]:
    """The GPU kinds of the cluster file (resources.cluster_yaml, else the repository's cluster.yaml), their memory
    times resources.gpu_memory_scale."""
    path = Path(path or (cfg.resources.cluster_yaml if cfg is not None and cfg.resources.cluster_yaml else None)
                or REPO_CLUSTER_YAML)
    path = REPO_CLUSTER_YAML.parent / path if not path.is_absolute() else path
    if not path.exists():
        raise ConfigError(f"config key 'resources.cluster_yaml': {str(path)!r} does not exist: give the Ray "
                          f"cluster file whose GPU node types the memory plan fits")
    kinds = _cluster_kinds(str(path.resolve()))
    scale = cfg.resources.gpu_memory_scale if cfg is not None else 1.0
    return tuple(replace(k, memory_gb=k.memory_gb * scale) for k in kinds) if scale != 1.0 else kinds


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(TABLE.read_text())


def features(width: int, pixels: int) -> np.ndarray:
    """The fit's regressors: conv and attention activations grow as width x pixels (flash attention keeps
    q, k, v and the output, linear in tokens), the latent-channel layers as pixels alone, cross-attention's keys
    and values (77 tokens) as width alone."""
    return np.array([width * pixels, pixels, width, 1.0], dtype=float)


def predict(coef, width: int, pixels: int) -> float:
    """Bytes per image the fitted law gives at a width and latent pixel count."""
    return float(features(width, pixels) @ np.asarray(coef))


def activation_bytes(width: int, side: int, kind: str, precision: str = "bf16") -> float:
    """Bytes per image of a training step (kind train / train_ckpt) or of a sampling call (eval), from the fitted
    law of the measured table (bf16); fp32 holds twice the bytes."""
    return predict(_table()["laws"][kind], width, side * side) * (2.0 if precision == "fp32" else 1.0)


def model_states_bytes(params: int, zero_stage: int, gpus_per_node: int, nodes: int) -> int:
    """Weights, gradients and optimizer states per GPU: DeepSpeed's estimator (ZeRO 1 and 2 share one; without
    ZeRO nothing is sharded, which is the estimator for one GPU)."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    if zero_stage == 0:
        gpus_per_node, nodes = 1, 1
    _, gpu = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus_per_node, num_nodes=nodes,
                                                   cpu_offload=False)
    return int(gpu)


@dataclass
class Job:
    """What one experiment trains per width: global batch, images per sample, extra frozen networks."""

    experiment: str
    batch_size: int
    images_per_sample: int = 1  # DreamBooth with prior preservation: an instance and a class image
    frozen_copies: int = 0  # 16-bit copies of the model beside it (distillation: teacher and target)
    nograd_forwards: int = 0  # no-grad forwards per image in the step (distillation: 2 teacher + 1 target)
    side: int | None = None  # latent side, if not the base data's (super-resolution)
    base_captions: bool = True  # its batches are the prepared data's captions (not its own prompts or none)
    guided_eval: bool = True  # evaluation with classifier-free guidance (2 UNet inputs per image)
    train: dict = field(default_factory=dict)  # its runs' train overrides (workers, batch, ...: the spec's)


MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2


def text_encoder_params(cfg) -> int:
    """Parameters of the configured text encoder, from its local config (CLIP; SD1.5's ViT-L/14 text tower,
    123,060,480, where the folder is absent) without loading it."""
    from study.ladder import _local_config

    te = cfg.text_encoder
    if te.kind == "minilm":
        return MINILM_PARAMS
    c = _local_config(te.path, "text_encoder") or {}
    d, inner, layers = c.get("hidden_size", 768), c.get("intermediate_size", 3072), c.get("num_hidden_layers", 12)
    embeddings = (c.get("vocab_size", 49408) + c.get("max_position_embeddings", 77)) * d
    layer = 4 * d * d + 4 * d + 2 * d * inner + inner + d + 4 * d  # attention, MLP, two LayerNorms
    return int(embeddings + layers * layer + 2 * d)


def _traits(name: str, cfg) -> dict:
    """What an experiment's step holds beyond a base run's (Job's fields); a new experiment is base-like until
    it is named here."""
    from study.ladder import geometry

    if name == "distillation":  # the guided teacher step (2 x batch) and the target network, both frozen
        return {"frozen_copies": 2, "nograd_forwards": 3, "guided_eval": False}
    if name == "superres":  # HR latents of superres.hr_size pixels; evaluated without guidance
        factor = max(1, cfg.data.resolution // geometry(cfg).sample_size)
        return {"side": max(1, cfg.superres.hr_size // factor), "guided_eval": False, "base_captions": False}
    if name == "dreambooth":  # prior preservation adds a class image to every instance image; its own prompts
        return {"images_per_sample": 2 if cfg.dreambooth.prior_preservation else 1, "base_captions": False}
    return {}


def jobs(cfg) -> list[Job]:
    """The training jobs of a config: every experiment of the registry (enabled or not, so the plan shows them
    before they are switched on), each with its own batch (its spec's train overrides)."""
    from study.experiments import SPECS

    out = []
    for name, spec in SPECS.items():
        if not spec.trains:  # it only evaluates another experiment's checkpoints
            continue
        overrides = (spec.train(cfg) if spec.train else None) or {}
        out.append(Job(name, overrides.get("batch_size", cfg.train.batch_size), train=overrides, **_traits(name, cfg)))
    return out


@dataclass
class PlanRow:
    """One (experiment, width, GPU kind): the plan's choice and what it holds per GPU, in GB."""

    experiment: str
    width: int
    params: int
    kind: str
    node_types: str
    gpu_gb: float
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    states_gb: float
    ema_gb: float
    activations_gb: float
    train_gb: float
    eval_batch: int
    eval_gb: float
    fits: bool
    eval_fits: bool

    def as_row(self) -> dict:
        return asdict(self)


def train_bytes(cfg, job: Job, width: int, params: int, side: int, mb: int, ckpt: bool, kind: GpuKind) -> dict:
    """Peak bytes of one training step on rank 0 with micro-batch mb: states, EMA, activations."""
    t = cfg.train
    prec = "fp32" if t.precision == "fp32" else "bf16"
    nodes = max(1, -(-t.num_workers // kind.gpus_per_node))
    states = model_states_bytes(params, t.zero_stage, min(t.num_workers, kind.gpus_per_node), nodes)
    states += job.frozen_copies * 2 * params
    if job.base_captions and cfg.data.captions == "tokens":  # the frozen text encoder the step runs
        states += (4 if prec == "fp32" else 2) * text_encoder_params(cfg)
    # The fp32 EMA on rank 0, and this rank's share of the post-hoc EMA profiles (trainers.phema_track).
    phema = 4 * params * len(t.phema_sigma_rels) / max(1, t.num_workers) if t.phema_snapshots > 0 else 0
    ema = 4 * params + phema
    images = mb * job.images_per_sample
    from study.ladder import geometry

    g = geometry(cfg)
    inputs = images * 4 * (g.in_channels * side * side + g.tokens * g.context_dim)  # fp32 batch on the GPU
    act = images * activation_bytes(width, side, "train_ckpt" if ckpt else "train", prec) + inputs
    act += images * job.nograd_forwards * activation_bytes(width, side, "eval", prec)
    # The EMA's foreach update holds a model-sized temporary after the backward; large models update tensor by
    # tensor instead (FOREACH_MAX_PARAMS).
    temporary = 4 * params if params < FOREACH_MAX_PARAMS else 0
    return {"states": states, "ema": ema, "activations": act, "total": states + ema + max(act, temporary)}


def eval_bytes(cfg, job: Job, width: int, params: int, side: int, batch: int) -> int:
    """Peak bytes of one evaluation batch: the fp32 UNet sampling (x2 guided), then decoding and scoring."""
    from study.ladder import geometry

    g = geometry(cfg)
    calls = batch * (2 if job.guided_eval else 1)
    weights = 4 * (params + SD_VAE_PARAMS + FEATURE_PARAMS.get(str(cfg.eval.feature_extractor), 0)
                   + (CLIP_PARAMS if cfg.eval.clip_path else 0))
    sampling = calls * (activation_bytes(width, side, "eval", "fp32") + 4 * g.tokens * g.context_dim)
    law = _table()["vae_decode_fp32"]["law"]
    chunk = min(batch, cfg.eval.decode_batch_size)
    decode = chunk * (law[0] * side * side + law[1]) if cfg.autoencoder.kind == "pretrained" else 0
    return int(weights + max(sampling, decode))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose(cfg, job: Job, width: int, params: int, side: int, kind: GpuKind) -> tuple[int, int, bool, dict]:
    """(micro-batch, accumulation, checkpointing, bytes): the largest micro-batch that fits the kind with the
    margin, without checkpointing when one of at least train.min_micro_batch images fits, else with it. The
    global batch stays job.batch_size; train.micro_batch and train.checkpointing override the choice."""
    t = cfg.train
    per_rank = max(1, job.batch_size // t.num_workers)  # a derived job's batch may be below the workers
    cap = kind.memory_gb * GB * (1 - t.memory_margin)
    modes = {"true": [True], "false": [False]}.get(str(t.checkpointing).lower(), [False, True])
    micro = [t.micro_batch] if t.micro_batch else [per_rank // a for a in _divisors(per_rank) if a >= t.grad_accum]
    options = [(mb, c, train_bytes(cfg, job, width, params, side, mb, c, kind)) for c in modes for mb in micro]
    fitting = [o for o in options if o[2]["total"] <= cap]  # without checkpointing first, largest first
    if not fitting:  # the smallest micro-batch of the last mode, which the plan marks as not fitting
        mb, c, b = options[-1]
        return mb, per_rank // mb, c, b
    busy = [o for o in fitting if o[1] or o[0] >= min(t.min_micro_batch, per_rank)]
    mb, c, b = (busy or fitting)[0]
    return mb, per_rank // mb, c, b


def memory_plan(cfg, kinds: tuple[GpuKind, ...] | None = None, experiments=None, widths=None) -> list[PlanRow]:
    """The plan of every (experiment, width, GPU kind) of the config: choices, GB per GPU, whether it fits."""
    from study.config import with_train
    from study.ladder import geometry, ladder

    kinds = kinds if kinds is not None else cluster_kinds(cfg)
    widths = list(widths or cfg.model.widths)
    rungs = {r.width: r for r in ladder(cfg.model.ladder, widths, geometry(cfg), cfg.model.reference_width)}
    side0 = geometry(cfg).sample_size
    rows = []
    for job in jobs(cfg):
        if experiments is not None and job.experiment not in experiments:
            continue
        side = job.side or side0
        jcfg = with_train(cfg, job.train)  # its runs' own workers and batch
        for width in widths:
            params = rungs[width].params
            for kind in kinds:
                mb, accum, ckpt, b = choose(jcfg, job, width, params, side, kind)
                cap = kind.memory_gb * GB * (1 - cfg.train.memory_margin)
                ev = eval_bytes(cfg, job, width, params, side, cfg.eval.batch_size)
                rows.append(PlanRow(job.experiment, width, params, kind.resource, ",".join(kind.node_types),
                                    kind.memory_gb, mb, accum, ckpt, b["states"] / GB, b["ema"] / GB,
                                    b["activations"] / GB, b["total"] / GB, cfg.eval.batch_size, ev / GB,
                                    b["total"] <= cap, ev <= cap))
    return rows


def chosen(rows: list[PlanRow], experiment: str, width: int) -> PlanRow | None:
    """The row a run uses: the GPU kind of least memory that fits (the cheapest), None if none fits."""
    fit = [r for r in rows if r.experiment == experiment and r.width == width and r.fits]
    return min(fit, key=lambda r: (r.gpu_gb, r.kind)) if fit else None


def placement(rows: list[PlanRow], experiment: str, width: int) -> dict:
    """The custom resource one worker (one GPU) of a run asks Ray for: its plan's GPU kind."""
    row = chosen(rows, experiment, width)
    return {row.kind: 1} if row is not None else {}


def refuse_unfit(rows: list[PlanRow], experiments=("base",)) -> None:
    """One line naming the first width (of these experiments) that fits no GPU kind, before any step."""
    for r in rows:
        if r.experiment in experiments and chosen(rows, r.experiment, r.width) is None:
            big = max((x for x in rows if x.experiment == r.experiment and x.width == r.width), key=lambda x: x.gpu_gb)
            raise ConfigError(
                f"{r.experiment} width {r.width} fits no GPU kind of the cluster: {big.train_gb:.1f} GB per GPU at "
                f"micro-batch {big.micro_batch}{' with checkpointing' if big.checkpointing else ''} on {big.kind} "
                f"({big.gpu_gb:g} GB less the train.memory_margin): raise train.num_workers or train.zero_stage, or "
                f"drop the width from model.widths (`study ladder CONFIG --memory` prints the plan)")


def format_plan(rows: list[PlanRow]) -> str:
    """The plan as a fixed-width table (`study ladder CONFIG --memory`): per experiment and width, the GPU kind a
    run trains on (the least memory that fits; the largest, marked NO, where none does), what it holds per GPU,
    and the kinds an evaluation batch fits."""
    head = (f"{'experiment':<12} {'width':>5} {'params':>7}  {'GPU kind (node types)':<44} {'micro':>5} {'accum':>5} "
            f"{'ckpt':>4} {'states':>6} {'act.':>5} {'GB/GPU':>6} {'fits':>4}  {'eval b':>6} {'eval GB':>7}  eval fits")
    lines = [head]
    keys = dict.fromkeys((r.experiment, r.width) for r in rows)
    for experiment, width in keys:
        mine = [r for r in rows if (r.experiment, r.width) == (experiment, width)]
        r = chosen(rows, experiment, width) or max(mine, key=lambda x: x.gpu_gb)
        where = f"{r.kind} ({r.node_types})"
        evals = ",".join(x.kind for x in mine if x.eval_fits) or "NONE"
        lines.append(f"{experiment:<12} {width:>5} {r.params / 1e9:>6.2f}B  {where:<44} {r.micro_batch:>5} "
                     f"{r.grad_accum:>5} {'yes' if r.checkpointing else 'no':>4} {r.states_gb + r.ema_gb:>6.1f} "
                     f"{r.activations_gb:>5.1f} {r.train_gb:>6.1f} {'yes' if r.fits else 'NO':>4}  "
                     f"{r.eval_batch:>6} {r.eval_gb:>7.1f}  {evals}")
    return "\n".join(lines)
