"""What buys the embedded study more work per CPU-second, at the shapes `make demo` uses (configs/tiny.yaml):
training-step images/s by batch size, precision (fp32, bf16 autocast), memory format and torch.compile (with
its one-off compile time); one process with 2 threads against 2 processes with 1 thread each; and the sampling
batch of an evaluation, eager and compiled.

    python benchmarks/cpu_options.py            # the full table (a few minutes on 2 cores)
    python benchmarks/cpu_options.py --tiny     # seconds: one width, two options, few steps

Every option runs in the same process, interleaved with the fp32 baseline in rounds, and each figure is the
median over rounds: the ratios, not the absolute rates, are the result (machines of one kind differ by 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def demo_unet(width: int):
    """The tiny ladder's UNet at the demo's geometry (configs/tiny.yaml), and that geometry."""
    from study.config import load_config
    from study.ladder import LADDERS, build_unet, geometry

    cfg = load_config("tiny")
    geom = geometry(cfg)
    return build_unet(LADDERS[cfg.model.ladder], width, geom), geom


# (width, batch, compiled) -> seconds of the two warm-up steps (torch.compile's cost) in each round: the first
# round's compile starts from an empty Inductor cache (a fresh machine), the later ones reuse it (a rerun).
FIRST_STEPS_S: dict = {}


def train_rate(width: int, batch: int, steps: int, bf16: bool = False, channels_last: bool = False,
               compiled: bool = False) -> float:
    """Images/s of AdamW training steps on the diffusion loss (the median step after two warm-up steps)."""
    from study.objective import denoising_loss
    from study.schedulers import training_scheduler

    torch.manual_seed(0)
    unet, geom = demo_unet(width)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    model = torch.compile(unet) if compiled else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    sched = training_scheduler()
    x = torch.randn(batch, geom.in_channels, geom.sample_size, geom.sample_size)
    ctx = torch.randn(batch, geom.tokens, geom.context_dim)
    times, t_start = [], time.perf_counter()
    for i in range(steps + 2):
        t0 = time.perf_counter()
        noise, t = torch.randn_like(x), torch.randint(0, 1000, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = denoising_loss(model, sched, x, ctx, noise, t, torch.float32)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
        elif i == 1:
            FIRST_STEPS_S.setdefault((width, batch, compiled), []).append(time.perf_counter() - t_start)
    return batch / float(np.median(times))


def sample_rate(width: int, batch: int, steps: int = 4, compiled: bool = False) -> float:
    """Images/s of DDIM sampling with classifier-free guidance (the evaluation's inner loop)."""
    from study.sampling import sample

    unet, geom = demo_unet(width)
    unet.eval()
    if compiled:
        unet = torch.compile(unet)
    cond = torch.randn(batch, geom.tokens, geom.context_dim)
    uncond = torch.randn(1, geom.tokens, geom.context_dim)
    noise = torch.randn(batch, geom.in_channels, geom.sample_size, geom.sample_size)
    sample(unet, "ddim", steps, 3.0, cond, uncond, noise)  # warm-up (and compilation, at this batch and steps)
    t0 = time.perf_counter()
    sample(unet, "ddim", steps, 3.0, cond, uncond, noise)
    return batch / (time.perf_counter() - t0)


def _one(args) -> None:
    """Child process: one thread, train_rate printed as JSON (for the side-by-side measurement)."""
    torch.set_num_threads(1)
    print(json.dumps({"rate": train_rate(args.width, args.batch, args.steps)}))


def side_by_side(width: int, batch: int, steps: int) -> float:
    """Total images/s of two 1-thread processes training at once (two trials side by side)."""
    cmd = [sys.executable, __file__, "--child", "--width", str(width), "--batch", str(batch), "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="seconds: one width, two options, few steps")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per option (median reported)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _one(args)
    # torch.compile's first compile as on a fresh machine: Inductor's on-disk cache starts empty (a private folder).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="cpu-options-inductor-"))
    # The demo ladder's two ends (configs/tiny.yaml's widths): the smallest is the most overhead-bound.
    widths, steps, rounds = ([16], 3, 1) if args.tiny else ([16, 32], 8, args.rounds)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 2)))
    options = {"fp32": {}, "batch128": {"batch": 128}, "batch256": {"batch": 256}, "bf16": {"bf16": True},
               "channels_last": {"channels_last": True}, "compile": {"compiled": True}}
    if args.tiny:
        options = {k: options[k] for k in ("fp32", "batch128")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    for width in widths:
        rates: dict[str, list[float]] = {k: [] for k in options}
        for _ in range(rounds):  # interleaved: slow drift of the machine hits every option alike
            for name, kw in options.items():
                kw = {"batch": 64, **kw}
                rates[name].append(train_rate(width, kw.pop("batch"), steps, **kw))
        base = float(np.median(rates["fp32"]))
        print(f"width {width}: training images/s (median of {rounds} round(s)) and ratio to fp32 batch 64")
        for name, r in rates.items():
            print(f"  {name:<14} {np.median(r):8.1f} img/s  ratio {np.median(r) / base:5.2f}")
        if "compile" in options:  # what the compiled rate costs up front, per run (each trial compiles anew)
            cold, *warm = FIRST_STEPS_S[(width, 64, True)]
            print(f"  compile: first two steps {cold:.1f} s with an empty Inductor cache"
                  + (f", {np.median(warm):.1f} s with it filled" if warm else "")
                  + f", against {np.median(FIRST_STEPS_S[(width, 64, False)]):.1f} s eager")
        if not args.tiny:
            together = side_by_side(width, 64, steps)
            torch.set_num_threads(2)
            alone = train_rate(width, 64, steps)
            print(f"  2 trials x 1 thread: {together:.1f} img/s in total; 1 trial x 2 threads: {alone:.1f} img/s "
                  f"(ratio {together / alone:.2f})")
        for batch in ([64] if args.tiny else [32, 64, 128, 256, 512]):
            print(f"  sampling batch {batch:<5} {sample_rate(width, batch):8.1f} img/s (DDIM 4 steps, guided)")
        if not args.tiny:
            print(f"  sampling batch 128 compiled {sample_rate(width, 128, compiled=True):8.1f} img/s")


if __name__ == "__main__":
    main()
