"""Training input: the trainer's images/s reading shards (streaming, windowed shuffle) against the single
in-memory array layout it replaced, on the tiny ladder, as a ratio measured in one run.

    python benchmarks/train_input.py            # CPU, tiny ladder c=16, 4x16x16 latents, 16x384 context

The same samples are written twice: as the pre-shard layout (one latents.npy, a caption table; read
as before, one memory map and a full shuffle) and as a shard set (study/shards/format.py, shards of
--shard-size, shuffled in windows of --window images so the reader crosses shards and windows).
Runs go legacy, shards, legacy: the reference is the mean of the two legacy runs, so a machine whose
speed drifts (shared CPUs) does not bias the ratio. Then the reader alone: batches read per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import config, fake_data, run_trainer, shards_from  # noqa: E402  (same data, config, timing)


def reader_rate(prep: Path, window: int, batch: int, seconds: float) -> float:
    """Images/s of PreparedData.arrays alone (no model), over consecutive batches of the stream."""
    from trainers.data import PreparedData

    data, n, t0 = PreparedData(prep, seed=0, window_images=window), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        data.arrays(n, batch)
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--window", type=int, default=1024)  # 4 shards per window, 4 windows per epoch
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reader-seconds", type=float, default=3.0, help="how long each reader rate reads")
    ap.add_argument("--reader-only", action="store_true", help="only the reader's rates (seconds, no training)")
    ap.add_argument("--tiny", action="store_true", help="smallest sizes, end to end in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win; still several shards and windows, so the reader crosses them
        ap.set_defaults(width=8, size=8, n=256, shard_size=32, window=64, batch=8, steps=12, warmup=2,
                        reader_seconds=0.3)
        args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (others' work skews CPU rates)")
    if args.reader_only:
        with tempfile.TemporaryDirectory() as tmp:
            legacy = fake_data(Path(tmp) / "legacy", args.n, 4, args.size, 16, 384)
            shards = shards_from(legacy, Path(tmp) / "sharded", args.shard_size)
            print_reader_rates(legacy, shards, args)
        return
    import ray

    # a fresh local Ray for this process ("local"), not a cluster some other job left running on the machine
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        legacy = fake_data(tmp / "legacy", args.n, 4, args.size, 16, 384)
        shards = shards_from(legacy, tmp / "sharded", args.shard_size)
        print(f"tiny ladder c={args.width}, {args.n} samples of 4x{args.size}x{args.size} latents and 16x384 context, "
              f"batch {args.batch}, {args.threads} threads, {args.steps} steps ({args.warmup} warm-up); shards of "
              f"{args.shard_size}, windows of {args.window} images")
        rates = {}
        for i, (name, prep, window) in enumerate((("legacy", legacy, 1 << 20), ("shards", shards, args.window),
                                                  ("legacy", legacy, 1 << 20))):
            cfg = config("tiny", args.width, args.batch, args.steps, args.threads, use_gpu=False)
            cfg.train.shuffle_window_images = window
            rate, _ = run_trainer(cfg, args.width, prep, tmp / f"run-{i}", args.warmup)
            rates.setdefault(name, []).append(rate)
        legacy_rate, shard_rate = float(np.mean(rates["legacy"])), rates["shards"][0]
        print(f"trainer, in-memory arrays  {legacy_rate:9.1f} images/s (before {rates['legacy'][0]:.1f}, "
              f"after {rates['legacy'][1]:.1f})")
        print(f"trainer, streaming shards  {shard_rate:9.1f} images/s   ratio shards / in-memory "
              f"{shard_rate / legacy_rate:.3f} (target >= 0.95)")
        print_reader_rates(legacy, shards, args)


def print_reader_rates(legacy: Path, shards: Path, args) -> None:
    """The reader alone on both layouts, alternated twice (the machine's drift shows as the spread)."""
    for _ in range(2):
        for name, prep, window in (("in-memory arrays", legacy, 1 << 20), ("streaming shards", shards, args.window)):
            print(f"reader alone, {name:17s} {reader_rate(prep, window, args.batch, args.reader_seconds):11.0f} images/s "
                  f"(batches of {args.batch}, no model)")


if __name__ == "__main__":
    main()
