"""Captions stored as text-encoder hidden states against token ids with the frozen encoder run in the training
step: bytes per sample and training images/s, on CPU, measured in one run (what data.captions chooses between).

    python benchmarks/caption_storage.py            # tiny ladder c=16, 4x16x16 latents, batch 32, CPU
    python benchmarks/caption_storage.py --tiny     # seconds

Encoders: the embedded default's all-MiniLM-L6-v2 (16 tokens, dim 384) and the CLIP stand-in of the tests
(tests/standins.py: 2 layers, dim 32, 77 tokens). Each mode runs the same step (UNet forward and backward,
AdamW) on the same latents; "tokens" adds the frozen encoder's forward (no grad, the same autocast) on the
batch's ids. Runs go states, tokens, states per encoder, and the reference is the mean of the two states
runs, so a machine whose speed drifts (shared CPUs) does not bias the ratio. Rates are at the median step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def encoders(tmp: Path) -> dict:
    """The encoders compared: name -> TextEncoder."""
    from study.config import load_config
    from study.text import load_text_encoder

    sys.path.insert(0, str(REPO / "tests"))
    from standins import sd_folder

    sd = sd_folder(tmp / "sd")
    return {"minilm": load_text_encoder(load_config("tiny").text_encoder),
            "clip-standin": load_text_encoder(load_config("tiny", ["text_encoder.kind=clip", f"text_encoder.path={sd}",
                                                                   "text_encoder.max_length=77"]).text_encoder)}


def rate(encoder, mode: str, width: int, size: int, batch: int, steps: int, warmup: int) -> float:
    """Steady images/s of the training step with captions as `mode` ("states" or "tokens")."""
    from study.ladder import LADDERS, Geometry, build_unet
    from study.schedulers import training_scheduler
    from trainers.diffusion import diffusion_loss

    t, d = encoder.max_length, encoder.dim
    rng = np.random.default_rng(0)
    captions = [f"a photo of object {i} number {rng.integers(1000)}" for i in range(batch)]
    ids = torch.from_numpy(encoder.tokenize(captions)).long()  # what the shards hold in "tokens" mode
    states = encoder.encode(captions).half()  # what the shards hold in "states" mode
    latents = torch.from_numpy(rng.standard_normal((batch, 4, size, size), dtype=np.float32))
    torch.manual_seed(0)
    unet = build_unet(LADDERS["tiny"], width, Geometry(in_channels=4, sample_size=size, context_dim=d, tokens=t))
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    sched, uncond = training_scheduler("epsilon"), torch.zeros(1, t, d)
    times, last = [], time.perf_counter()
    for step in range(steps):
        if mode == "states":
            context = states.float()
        else:  # the frozen encoder in the step, as trainers/recipes/base.py runs it (float32 on CPU)
            context = encoder.encode_ids(ids).float()
        loss = diffusion_loss(unet, sched, latents, context, uncond, 0.1, torch.Generator().manual_seed(step),
                              torch.float32)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return batch / float(np.median(times[warmup:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="smallest sizes, in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:
        ap.set_defaults(width=8, size=8, batch=8, steps=6, warmup=2)
        args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (others' work skews CPU rates)")
    print(f"tiny ladder c={args.width}, 4x{args.size}x{args.size} latents, batch {args.batch}, {args.threads} threads, "
          f"{args.steps} steps ({args.warmup} warm-up), CPU")
    with tempfile.TemporaryDirectory() as tmp:
        for name, enc in encoders(Path(tmp)).items():
            t, d = enc.max_length, enc.dim
            runs = {m: [] for m in ("states", "tokens")}
            for mode in ("states", "tokens", "states"):
                runs[mode].append(rate(enc, mode, args.width, args.size, args.batch, args.steps, args.warmup))
            states = float(np.mean(runs["states"]))
            print(f"{name:13s} states  {t * d * 2:7d} B/sample {states:9.1f} images/s")
            print(f"{name:13s} tokens  {t * 4:7d} B/sample {runs['tokens'][0]:9.1f} images/s   ratio tokens / states "
                  f"{runs['tokens'][0] / states:.3f}")


if __name__ == "__main__":
    main()
