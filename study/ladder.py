"""The model ladder: one table of presets, and the cost model read off the model itself."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from study.results import sampling_cost


@dataclass(frozen=True)
class LadderPreset:
    """A family of SD-shaped UNets; only the base width c changes from row to row."""

    widths: tuple[int, ...]
    reference_width: int  # normalized cost = FLOPs / FLOPs of this width (paper: c=320, SD1.5 itself)
    layers_per_block: int
    attention_head_dim: int  # diffusers' SD1.5 quirk: this is the number of heads (8)
    norm_num_groups: int
    multipliers: tuple[int, ...] = (1, 2, 4, 4)  # block_out_channels = (c, 2c, 4c, 4c), as SD1.5
    note: str = ""

    def fits(self, width: int) -> bool:
        """Whether base width c builds in this family: positive and divisible by its GroupNorm groups."""
        return isinstance(width, int) and width > 0 and width % self.norm_num_groups == 0


# One row per family; a size is a width in the row (STYLE: one table of sizes).
LADDERS: dict[str, LadderPreset] = {
    # arXiv 2404.01367 Table 1: SD1.5's UNet at 11 widths, 39M .. 5B parameters.
    "paper": LadderPreset(widths=(64, 96, 128, 160, 192, 224, 256, 288, 320, 512, 768), reference_width=320,
                          layers_per_block=2, attention_head_dim=8, norm_num_groups=32,
                          note="SD1.5 UNet, block_out_channels=(c, 2c, 4c, 4c); Table 1 of the paper"),
    # The same shape scaled down for CPU: 8 groups so that c=8 still normalises over 1-channel groups.
    "tiny": LadderPreset(widths=(8, 16, 24, 32, 48), reference_width=32, layers_per_block=1,
                         attention_head_dim=4, norm_num_groups=8,
                         note="SD1.5 shape at CPU scale: (c, 2c, 4c, 4c), one layer per block, 4 heads"),
}


@dataclass(frozen=True)
class Geometry:
    """What the UNet sees: latent channels and size, text context length and width."""

    in_channels: int
    sample_size: int
    context_dim: int
    tokens: int


def unet_kwargs(preset: LadderPreset, width: int, geom: Geometry) -> dict:
    """UNet2DConditionModel arguments for one row: SD1.5's blocks with base width `width`."""
    n = len(preset.multipliers)
    return dict(
        sample_size=geom.sample_size,
        in_channels=geom.in_channels,
        out_channels=geom.in_channels,
        layers_per_block=preset.layers_per_block,
        block_out_channels=tuple(width * m for m in preset.multipliers),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        attention_head_dim=preset.attention_head_dim,
        norm_num_groups=preset.norm_num_groups,
        cross_attention_dim=geom.context_dim,  # the constructor's default (1280) is not SD1.5's 768
    )


def build_unet(preset: LadderPreset, width: int, geom: Geometry, device=None):
    """Instantiate one ladder row (on `device`, e.g. "meta" to count without allocating)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device(device or "cpu"):
        return UNet2DConditionModel(**unet_kwargs(preset, width, geom))


@lru_cache(maxsize=None)
def _measure(preset: LadderPreset, width: int, geom: Geometry) -> tuple[int, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = build_unet(preset, width, geom, device="meta")
    params = sum(p.numel() for p in unet.parameters())
    x = torch.empty(1, geom.in_channels, geom.sample_size, geom.sample_size, device="meta")
    ctx = torch.empty(1, geom.tokens, geom.context_dim, device="meta")
    t = torch.tensor([999], device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x, t, encoder_hidden_states=ctx)
    return params, float(counter.get_total_flops())


@dataclass(frozen=True)
class Rung:
    """One size of the ladder with its cost: everything the compute axes are built from."""

    width: int
    params: int
    flops: float  # forward FLOPs per image (batch 1), counted by torch's FlopCounterMode
    normalized_cost: float  # flops / flops(reference width), the paper's sampling-cost unit

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def sampling_cost(self, steps: int) -> float:
        """The paper's sampling cost: normalized cost x sampling steps."""
        return sampling_cost(self.normalized_cost, steps)

    def as_row(self) -> dict:
        return {**asdict(self), "gflops": self.gflops}


def ladder(preset_name: str, widths, geom: Geometry, reference_width: int | None = None) -> list[Rung]:
    """The cost table of a ladder: params, forward FLOPs and normalized cost for each width."""
    preset = LADDERS[preset_name]
    ref = reference_width or preset.reference_width
    _, ref_flops = _measure(preset, ref, geom)
    rows = []
    for w in widths:
        params, flops = _measure(preset, int(w), geom)
        rows.append(Rung(width=int(w), params=params, flops=flops, normalized_cost=flops / ref_flops))
    return rows


def _local_config(path: str | None, sub: str) -> dict | None:
    """Read a model's config.json from a local SD-style folder (or the folder itself), if present."""
    if path is None:
        return None
    for cand in (Path(path) / sub / "config.json", Path(path) / "config.json"):
        if cand.exists():
            return json.loads(cand.read_text())
    return None


def geometry(cfg) -> Geometry:
    """The latent and text-context shape a study config implies, without loading any weights."""
    data, ae, te = cfg.data, cfg.autoencoder, cfg.text_encoder
    if ae.kind == "identity":
        from study.datasets import dataset

        geom_c, size = dataset(data.name).channels, data.resolution
    elif ae.kind == "train":
        geom_c, size = ae.latent_channels, data.resolution // 2 ** (len(ae.block_out_channels) - 1)
    else:  # pretrained: read the VAE's config when present; SD's VAE otherwise (4 ch, /8)
        vae = _local_config(ae.path, "vae") or {}
        factor = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
        geom_c, size = vae.get("latent_channels", 4), data.resolution // factor
    if te.kind == "minilm":
        context = 384  # all-MiniLM-L6-v2 hidden size
    else:
        context = (_local_config(te.path, "text_encoder") or {}).get("hidden_size", 768)
    return Geometry(in_channels=geom_c, sample_size=size, context_dim=context, tokens=te.max_length)


def study_ladder(cfg) -> list[Rung]:
    """The cost table for the widths of a study config."""
    return ladder(cfg.model.ladder, cfg.model.widths, geometry(cfg), cfg.model.reference_width)


def format_table(rows: list[Rung]) -> str:
    """A readable fixed-width table of the ladder."""
    def fmt_params(n: int) -> str:
        return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"

    lines = [f"{'width':>6} {'params':>9} {'GFLOPs/fwd':>11} {'norm. cost':>10}"]
    for r in rows:
        lines.append(f"{r.width:>6} {fmt_params(r.params):>9} {r.gflops:>11.3f} {r.normalized_cost:>10.3f}")
    return "\n".join(lines)
