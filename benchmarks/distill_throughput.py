"""Distillation (LCD) training images/s against base diffusion training images/s for the same size, one run.

    python benchmarks/distill_throughput.py            # CPU: tiny-ladder c=16, 4x16x16 latents, fp32
    python benchmarks/distill_throughput.py --gpu      # GPU: paper ladder c=320, 64x64x4 latents, bf16 autocast

Both loops do one optimizer step per batch with the same model size, batch, AdamW, clipping and the
trainer's EMA; the base step is the study's diffusion loss (one UNet forward + backward), the LCD step is
study/experiments/distillation/lcd.py's loss (student forward + backward, a guided teacher step = one forward at twice the batch,
one target forward) plus the target network's EMA update. The two loops alternate in blocks, so a burst of
other work on a shared machine hits both; the rate is taken at the median step time. The trainer's own
machinery (Ray, DeepSpeed) costs both the same and is measured by benchmarks/train_throughput.py.
Expected ratio from the arithmetic alone: (3 + 2 + 1) / 3 forward-equivalents = 0.5.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _setup(ladder: str, width: int, channels: int, size: int, tokens: int, dim: int, device, batch: int):
    from study.experiments.distillation.student import student_from_teacher
    from study.ladder import LADDERS, Geometry, build_unet
    from study.experiments.distillation.lcd import LCD

    torch.manual_seed(0)
    geom = Geometry(in_channels=channels, sample_size=size, context_dim=dim, tokens=tokens)
    base = build_unet(LADDERS[ladder], width, geom).to(device)
    teacher = build_unet(LADDERS[ladder], width, geom).to(device)
    student = student_from_teacher(teacher)
    lcd = LCD(teacher, student, torch.randn(1, tokens, dim), w_min=1.0, w_max=5.0).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    data = (torch.randn(batch, channels, size, size, generator=g, device=device),
            torch.randn(batch, tokens, dim, generator=g, device=device))
    return base, student, lcd, data


def _stepper(model, loss_fn, after):
    from diffusers.training_utils import EMAModel

    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    ema = EMAModel([p.detach().float() for p in params], decay=0.999, foreach=True)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        after()
        ema.step(params)
    return step


def measure(args) -> dict:
    """Steady images/s of the base and the LCD step, alternating blocks of steps."""
    from study.schedulers import training_scheduler
    from trainers.diffusion import diffusion_loss

    device = torch.device("cuda" if args.gpu else "cpu")
    base, student, lcd, (latents, context) = _setup(args.ladder, args.width, args.channels, args.size,
                                                    args.tokens, args.dim, device, args.batch)
    sched, uncond = training_scheduler(), lcd.uncond
    gen = torch.Generator(device=device).manual_seed(1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.gpu else torch.autocast("cpu", enabled=False)

    def base_loss():
        with autocast:
            return diffusion_loss(base, sched, latents, context, uncond, 0.1, gen, torch.float32)

    def lcd_loss():
        with autocast:
            return lcd.loss(student, latents, context, gen)

    steps = {"base": _stepper(base, base_loss, lambda: None),
             "distill": _stepper(student, lcd_loss, lambda: lcd.update_target(student))}
    times = {k: [] for k in steps}
    for block in range(args.blocks):
        for name, step in steps.items():
            for i in range(args.steps):
                if args.gpu:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                step()
                if args.gpu:
                    torch.cuda.synchronize()
                if block > 0 or i >= 2:  # the first steps of the first block warm caches and allocators
                    times[name].append(time.perf_counter() - t)
    rates = {k: args.batch / float(np.median(v)) for k, v in times.items()}
    return {**rates, "ratio": rates["distill"] / rates["base"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="paper ladder c=320 on 64x64x4 latents, bf16, on CUDA")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=5, help="steps per block of each loop")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="smallest sizes, end to end in seconds (tests/test_benchmarks.py)")
    args = p.parse_args()
    if args.tiny:  # flags given explicitly still win; the GPU keeps c=320, the size its figures are about
        p.set_defaults(batch=4, steps=3, blocks=2, **({} if args.gpu else {"width": 8}))
        args = p.parse_args()
    if args.blocks < 2 and args.steps < 3:
        raise SystemExit("--blocks 1 needs --steps >= 3: the first two steps of the first block are warm-up")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here; run without --gpu for the CPU figures")
    gpu = dict(ladder="paper", width=320, channels=4, size=64, tokens=77, dim=768, batch=32)
    cpu = dict(ladder="tiny", width=16, channels=4, size=16, tokens=8, dim=384, batch=32)
    for k, v in (gpu if args.gpu else cpu).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    r = measure(args)
    where = "GPU bf16" if args.gpu else f"CPU fp32, {args.threads} threads"
    print(f"{args.ladder} c={args.width}, {args.channels}x{args.size}x{args.size} latents, batch {args.batch}, {where}")
    print(f"base training   {r['base']:10.1f} images/s")
    print(f"distillation    {r['distill']:10.1f} images/s")
    print(f"ratio distill/base: {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
