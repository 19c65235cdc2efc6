"""What it costs to launch a training run: a grid of short runs with each run as a Ray Train job, then inline.

    python benchmarks/train_launch.py               # 4 runs of 2 steps each (tiny ladder c=8), 2 at a time

The grid is sweeps.train_grid.run_train_grid, as `study run` drives it, on random prepared data. A
one-worker run goes inline by default (the Tune trial trains in its own actor); the Ray Train mode
is forced here for the comparison (a controller and a worker process per run, as multi-worker runs
use). The runs are so short that the figures are the launch cost: wall time of the grid, and the CPU
seconds the whole machine spent on it (every Ray process included), per run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine_cpu_s() -> float:
    """CPU seconds spent by every process on this machine so far (user + system, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def grid(runs: int, batch: int, steps: int, inline: bool, tmp: Path) -> tuple[float, float]:
    """(wall s, machine CPU s) of one training grid of `runs` sizes in one launch mode."""
    import sweeps.train_grid as tg
    from train_throughput import fake_data
    from study.config import load_config

    widths = ",".join(str(8 * (i + 1)) for i in range(runs))
    cfg = load_config(None, [
        "name=launch", "model.ladder=tiny", f"model.widths=[{widths}]", f"train.batch_size={batch}",
        f"train.total_images={batch * steps}", "train.milestones=[1.0]", "train.loss_milestones=[]",
        "train.warmup_images=0",
        "train.cpus_per_worker=0.95", "tracking.wandb_mode=disabled", f"runs_dir={tmp}"])
    prep = fake_data(tmp / "prep", 1024, 1, 8, 16, 384)
    tg.inline_training = lambda train_cfg: inline  # the mode under test, whatever the worker count
    t0, c0 = time.perf_counter(), machine_cpu_s()
    out = tg.run_train_grid(cfg, tmp / ("inline" if inline else "ray-train"), prep, progress=False)
    assert not out["errors"], out["errors"]
    return time.perf_counter() - t0, machine_cpu_s() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4, help="sizes in the grid (c = 8, 16, ...)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="smallest grid, end to end in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win
        ap.set_defaults(runs=1, batch=8, steps=1)
        args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; Ray with 2 CPUs "
          f"(2 runs at a time)")
    with tempfile.TemporaryDirectory() as tmp:
        for inline in (False, True):
            wall, cpu = grid(args.runs, args.batch, args.steps, inline, Path(tmp))
            label = "inline (Tune trial)" if inline else "Ray Train job     "
            print(f"{label}  {args.runs} runs: {wall:6.1f} s wall, {cpu:6.1f} CPU-s in all, "
                  f"{cpu / args.runs:5.1f} CPU-s per run")


if __name__ == "__main__":
    main()
