"""Super-resolution fine-tuning images/s against base training images/s for the same size (issue 12).

    python benchmarks/superres_throughput.py [--widths 8 16 24 32] [--steps 12] [--threads 1]

Both loops are plain PyTorch (AdamW, clipping), no Ray or DeepSpeed, on the tiny config: base training is
the diffusion loss on the 8x8 digits' pixel latents with caption embeddings; the SR fine-tune is the superres
recipe itself (its data: crops of the embedded photographs, 16x16 HR from 4x4 LR, conditioned on the LR image
and noise level) on the widened model. Steady state: the median step time after one warm-up step, the two
loops alternating in blocks so a burst of other work on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _step_time(model, make_loss, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = make_loss(i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 24, 32])
    ap.add_argument("--steps", type=int, default=12, help="steps per loop and width (two blocks each)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tiny study trains on one core each)")
    ap.add_argument("--tiny", action="store_true", help="one width, few steps, in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win
        ap.set_defaults(widths=[8], steps=4)
        args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from study.config import load_config
    from study.ladder import LADDERS, build_unet, geometry
    from study.schedulers import training_scheduler
    from study.experiments.superres.model import widen_for_superres
    from trainers.diffusion import diffusion_loss
    from trainers.recipes import RecipeContext
    from trainers.recipes.superres import SuperResRecipe

    cfg = load_config("tiny", ["superres.enabled=true"])
    geom = geometry(cfg)
    B = cfg.superres.batch_size
    tmp = tempfile.TemporaryDirectory()  # removed when the script ends
    prep = Path(tmp.name)
    np.save(prep / "uncond.npy", np.zeros((1, geom.tokens, geom.context_dim), np.float16))
    recipe = SuperResRecipe()
    # data() asks that a base milestone be named; its batches do not read it, and the model below is a fresh UNet
    # of each width widened as the recipe widens its base (throughput does not depend on the weights)
    recipe.data(RecipeContext(cfg, args.widths[0], 0, prep, torch.device("cpu"), init_from=prep))
    sched = training_scheduler(cfg.model.prediction_type)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(B, geom.in_channels, geom.sample_size, geom.sample_size, generator=g)
    ctx = torch.randn(B, geom.tokens, geom.context_dim, generator=g)
    print(f"batch {B}, {args.threads} thread(s); base: {geom.sample_size}x{geom.sample_size} digits latents; "
          f"SR: {cfg.superres.hr_size}x{cfg.superres.hr_size} HR from {cfg.superres.hr_size // 4}x"
          f"{cfg.superres.hr_size // 4} LR")
    print(f"{'width':>6} {'base img/s':>11} {'SR img/s':>9} {'SR/base':>8}")
    for w in args.widths:
        base = build_unet(LADDERS[cfg.model.ladder], w, geom)
        sr = widen_for_superres(build_unet(LADDERS[cfg.model.ladder], w, geom), geom.in_channels)
        base_loss = lambda i: diffusion_loss(base, sched, lat, ctx, ctx[:1], 0.1,  # noqa: E731
                                             torch.Generator().manual_seed(i), torch.float32)
        sr_loss = lambda i: recipe.loss(sr, recipe.batch(i * B, B, torch.device("cpu")),  # noqa: E731
                                        torch.Generator().manual_seed(i), torch.float32)
        tb, ts = [], []
        for _ in range(2):  # alternate blocks: a burst of other work on a shared machine hits both
            tb += _step_time(base, base_loss, args.steps // 2 + 1)[1:]
            ts += _step_time(sr, sr_loss, args.steps // 2 + 1)[1:]
        rb, rs = B / float(np.median(tb)), B / float(np.median(ts))
        print(f"{w:>6} {rb:>11.0f} {rs:>9.0f} {rs / rb:>8.2f}")


if __name__ == "__main__":
    main()
