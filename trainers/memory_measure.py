"""Activation memory measured, not guessed: the real UNet (and SD's VAE decoder) run on CPU at small widths and
resolutions, the bytes they hold counted tensor by tensor, and a linear law in width x pixels fitted to them.

Two counts of one training step (forward + backward of the trainer's own loss):
- saved: the bytes the backward pass keeps (`torch.autograd.graph.saved_tensors_hooks`, each storage once,
  parameters excluded). It cannot see inside activation checkpointing (the checkpoint hides what it keeps).
- peak: the largest sum of live tensors other than parameters and gradients at any moment of the step (a
  TorchDispatchMode sees every tensor an operation creates, a finaliser on its storage sees it freed). This is
  what the GPU must hold beside the model states; with checkpointing it includes the recomputation.
The plan (study.memory) uses the peak; `saved` is the cross-check that the peak is the saved activations plus a
backward transient. `python -m trainers.memory_measure` regenerates the table shipped as study/memory_table.json.
"""

from __future__ import annotations

import json
import weakref

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from study.memory import TABLE, features, predict

# Fitted points (widths of the paper ladder: multiples of its 32 norm groups) and held-out points, which the
# fit never sees and which report its error. 16 and 24 px latents are 1/16 and 1/7 of the paper's 64 x 64.
FIT_POINTS = [(32, 8), (32, 16), (32, 24), (64, 8), (64, 16), (64, 24), (96, 8), (96, 16)]
HELD_OUT = [(96, 24), (128, 16), (64, 32)]
VAE_SIDES = [8, 12, 16]  # latent sides of the decoder points (64..128 px images)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4)  # SD1.5's vae/config.json


class LiveBytes(TorchDispatchMode):
    """The bytes of tensors created while active, as a timeline: peak() excludes storages named after the fact
    (gradients, known only once the backward is done)."""

    def __init__(self, outside=()):
        super().__init__()
        self.events: list[tuple[int, int]] = []  # (storage id, +bytes | -bytes)
        self.live: dict[int, int] = {}  # data_ptr -> storage id, for storages alive now
        # Storages made before (parameters, buffers, inputs): a view of one (a weight's transpose) is not new.
        self.outside = {t.untyped_storage().data_ptr() for t in outside}
        self._next = 0

    def _freed(self, ptr: int, sid: int, nbytes: int) -> None:
        self.events.append((sid, -nbytes))
        if self.live.get(ptr) == sid:
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                ptr, nbytes = st.data_ptr(), st.nbytes()
                if nbytes == 0 or ptr in self.live or ptr in self.outside:
                    continue  # a view, or an in-place result, of a storage already counted
                self._next += 1
                self.live[ptr] = self._next
                self.events.append((self._next, nbytes))
                weakref.finalize(st, self._freed, ptr, self._next, nbytes)
        return out

    def ids_of(self, tensors) -> set[int]:
        """The ids of the live storages behind these tensors."""
        return {self.live[t.untyped_storage().data_ptr()] for t in tensors
                if t is not None and t.untyped_storage().data_ptr() in self.live}

    def peak(self, exclude: set[int] = frozenset()) -> int:
        """The largest sum of live bytes over the timeline, without the excluded storages."""
        now = top = 0
        for sid, delta in self.events:
            if sid not in exclude:
                now += delta
                top = max(top, now)
        return top


def _inputs(geom, batch: int, dtype: torch.dtype, gen: torch.Generator):
    x = torch.randn(batch, geom.in_channels, geom.sample_size, geom.sample_size, generator=gen)
    ctx = torch.randn(batch, geom.tokens, geom.context_dim, generator=gen)
    return x, ctx.to(dtype)


def train_step_bytes(preset, width: int, geom, batch: int, dtype: torch.dtype, checkpointing: bool) -> dict:
    """Peak live bytes (and bytes saved for backward) of one forward + backward of the trainer's loss."""
    from diffusers import DDPMScheduler

    from study.ladder import build_unet
    from trainers.diffusion import diffusion_loss

    torch.manual_seed(0)
    unet = build_unet(preset, width, geom).to(dtype).train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    gen = torch.Generator().manual_seed(0)
    x, ctx = _inputs(geom, batch, dtype, gen)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    mode = LiveBytes([*unet.parameters(), *unet.buffers(), x, ctx])
    with mode:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = diffusion_loss(unet, sched, x, ctx, ctx[:1], 0.1, gen, dtype)
        loss.backward()
        grads = mode.ids_of([p.grad for p in unet.parameters()])
    return {"peak": mode.peak(grads), "saved": sum(saved.values()) if not checkpointing else None}


@torch.no_grad()
def forward_bytes(module_fn, outside) -> int:
    """Peak live bytes of one no-grad call (sampling, decoding); outside: tensors that exist before it."""
    mode = LiveBytes(outside)
    with mode:
        module_fn()
    return mode.peak()


def eval_unet_bytes(preset, width: int, geom, batch: int, dtype: torch.dtype) -> int:
    """Peak live bytes of one guided sampling call of the UNet on `batch` inputs (the CFG batch itself)."""
    from study.ladder import build_unet

    unet = build_unet(preset, width, geom).to(dtype).eval()
    x, ctx = _inputs(geom, batch, dtype, torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500)
    x = x.to(dtype)
    return forward_bytes(lambda: unet(x, t, encoder_hidden_states=ctx, return_dict=False),
                         [*unet.parameters(), *unet.buffers(), x, ctx])


def vae_decode_bytes(side: int, batch: int, dtype: torch.dtype) -> int:
    """Peak live bytes of SD's VAE decoder on `batch` latents of side x side."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**SD_VAE).to(dtype).eval()
    z = torch.randn(batch, 4, side, side).to(dtype)
    return forward_bytes(lambda: vae.decode(z).sample, [*vae.parameters(), *vae.buffers(), z])


def fit(points: list[dict], key: str) -> list[float]:
    """Least squares on relative error (each point weighted by 1/its value) of bytes per image."""
    A = np.stack([features(p["width"], p["side"] ** 2) for p in points])
    y = np.array([p[key] for p in points], dtype=float)
    coef, *_ = np.linalg.lstsq(A / y[:, None], np.ones_like(y), rcond=None)
    return [float(c) for c in coef]


def measure_table(batch: int = 2, dtype: torch.dtype = torch.bfloat16, log=print) -> dict:
    """Measure every point, fit the laws, report the held-out error: the table study.memory reads."""
    from study.ladder import LADDERS, Geometry

    preset = LADDERS["paper"]
    points = []
    for width, side in FIT_POINTS + HELD_OUT:
        geom = Geometry(in_channels=4, sample_size=side, context_dim=768, tokens=77)  # SD1.5's geometry
        row = {"width": width, "side": side, "held_out": (width, side) in HELD_OUT}
        for ckpt in (False, True):
            r = train_step_bytes(preset, width, geom, batch, dtype, ckpt)
            row["train_ckpt" if ckpt else "train"] = r["peak"] / batch
            if not ckpt:
                row["saved"] = r["saved"] / batch
        row["eval"] = eval_unet_bytes(preset, width, geom, batch, dtype) / batch
        log(json.dumps(row))
        points.append(row)
    fitted = [p for p in points if not p["held_out"]]
    table = {"dtype": str(dtype).replace("torch.", ""), "batch": batch, "torch": torch.__version__,
             "features": ["width*pixels", "pixels", "width", "1"], "points": points, "laws": {}, "held_out_error": {}}
    for key in ("train", "train_ckpt", "eval", "saved"):
        coef = fit(fitted, key)
        table["laws"][key] = coef
        table["held_out_error"][key] = {f"c{p['width']}@{p['side']}": predict(coef, p["width"], p["side"] ** 2)
                                        / p[key] - 1 for p in points if p["held_out"]}
    vae = [{"side": s, "decode": vae_decode_bytes(s, 1, torch.float32)} for s in VAE_SIDES]
    log(json.dumps(vae))
    A = np.array([[s["side"] ** 2, 1.0] for s in vae])
    y = np.array([s["decode"] for s in vae], dtype=float)
    table["vae_decode_fp32"] = {"points": vae, "law": [float(c) for c in np.linalg.lstsq(A, y, rcond=None)[0]]}
    return table


if __name__ == "__main__":
    torch.set_num_threads(2)
    TABLE.write_text(json.dumps(measure_table(), indent=1) + "\n")
    print(f"wrote {TABLE}")
