"""The memory plan's activations against measured CPU training steps at widths and sides the fit never saw.

    python benchmarks/memory_plan_check.py            # both points, with and without checkpointing
    python benchmarks/memory_plan_check.py --tiny     # one point without checkpointing: seconds

Each point: one forward + backward of the trainer's loss (bf16, batch 2) on the paper ladder's UNet, its live-tensor
peak (parameters and gradients excluded, trainers.memory_measure.LiveBytes) against the plan's fitted law
(study.memory.activation_bytes), with and without activation checkpointing; then the plan extrapolated to the
paper's 64 x 64 latents.
"""

from __future__ import annotations

import time

import torch

from study.ladder import LADDERS, Geometry
from study.memory import activation_bytes
from trainers.memory_measure import train_step_bytes

POINTS = [(64, 40), (160, 16)]  # the two tests/test_memory.py checks


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="one point without checkpointing: seconds")
    tiny = p.parse_args().tiny
    torch.set_num_threads(2)
    print(f"{'width':>5} {'side':>4} {'ckpt':>4} {'measured MB/img':>15} {'plan MB/img':>11} {'error':>7} {'s':>5}")
    for width, side in POINTS[:1] if tiny else POINTS:
        geom = Geometry(in_channels=4, sample_size=side, context_dim=768, tokens=77)
        for ckpt in (False,) if tiny else (False, True):
            t0 = time.perf_counter()
            measured = train_step_bytes(LADDERS["paper"], width, geom, 2, torch.bfloat16, ckpt)["peak"] / 2
            plan = activation_bytes(width, side, "train_ckpt" if ckpt else "train")
            print(f"{width:>5} {side:>4} {'yes' if ckpt else 'no':>4} {measured / 1e6:>15.2f} {plan / 1e6:>11.2f} "
                  f"{plan / measured - 1:>+7.2%} {time.perf_counter() - t0:>5.1f}")
    print("\nplan at 64x64 latents (bf16, MB per image):")
    for width in (64, 320, 768):
        print(f"  c={width}: {activation_bytes(width, 64, 'train') / 1e6:8.1f} without checkpointing, "
              f"{activation_bytes(width, 64, 'train_ckpt') / 1e6:7.1f} with, {activation_bytes(width, 64, 'eval') / 1e6:6.1f} "
              f"per sampling input")


if __name__ == "__main__":
    main()
