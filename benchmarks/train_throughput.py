"""Trainer throughput beside a bare PyTorch loop on the same model, batch and data, measured in one run.

    python benchmarks/train_throughput.py             # CPU: tiny-ladder c=16, 4x16x16 latents; then the
                                                      # GPU comparison if there is one
    python benchmarks/train_throughput.py --gpu-only  # only the GPU: c=320, 64x64x4 latents, bf16, MFU
    python benchmarks/train_throughput.py --tiny      # seconds: the smallest sizes, CPU then GPU if there is one

Steady state only: the first --warmup steps of each loop are left out and the rate is taken at the
median step time (robust to bursts of other work on a shared machine); the trainer's start-up (Ray,
worker imports, DeepSpeed init) is printed on its own line. The bare loop does the same work per
step with none of the machinery: the trainer's own recipe (the same shard reader and stream order, model and
diffusion loss), AdamW, clipping and EMA, with no DeepSpeed, no Ray, no logging. Both read the same shard set
(random latents and captions, written as `study prepare` writes them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Dense bf16 peak of common accelerators, for MFU (pass --peak-tflops for others).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def fake_data(root: Path, n: int, c: int, h: int, t: int, d: int, seed: int = 0) -> Path:
    """A prepared folder in the pre-shard layout (one latents.npy, a caption table) of random float16 arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "latents.npy", rng.standard_normal((n, c, h, h), dtype=np.float32).astype(np.float16))
    np.save(root / "caption_table.npy", rng.standard_normal((64, t, d), dtype=np.float32).astype(np.float16))
    np.save(root / "caption_index.npy", rng.integers(0, 64, n).astype(np.int64))
    np.save(root / "uncond.npy", rng.standard_normal((1, t, d), dtype=np.float32).astype(np.float16))
    (root / "meta.json").write_text(json.dumps({"n_train": n, "latent_shape": [c, h, h], "context_shape": [t, d]}))
    return root


def shards_from(legacy: Path, out: Path, shard_size: int) -> Path:
    """The shard set (what `study prepare` writes) of a pre-shard folder: the same samples in the same order."""
    from study.shards.format import UNCOND, shard_name, write_index, write_shard
    from trainers.data import SHARDS

    lat = np.load(legacy / "latents.npy", mmap_mode="r")
    table, index = np.load(legacy / "caption_table.npy"), np.load(legacy / "caption_index.npy")
    folder, records = out / SHARDS, []
    for k, lo in enumerate(range(0, len(lat), shard_size)):
        hi = min(lo + shard_size, len(lat))
        meta = [{"key": str(i), "caption": "", "label": None} for i in range(lo, hi)]
        records.append(write_shard(folder, shard_name("train", k), lat[lo:hi], table[index[lo:hi]], meta))
    np.save(folder / UNCOND, np.load(legacy / "uncond.npy"))
    write_index(folder, shard_size, lat.shape[1:], table.shape[1:], {"train": records}, bad_samples=0)
    return out


def fake_shards(root: Path, n: int, c: int, h: int, t: int, d: int, shard_size: int = 256) -> Path:
    """A prepared folder holding a shard set of n random samples, as `study prepare` writes one."""
    return shards_from(fake_data(root / "legacy", n, c, h, t, d), root / "sharded", shard_size)


def steady_rate(step_times, batch: int) -> float:
    """Images per second at the median step time: robust to bursts of other work on a shared machine."""
    return batch / float(np.median(step_times))


def run_trainer(cfg, width: int, prep: Path, out: Path, warmup: int) -> tuple[float, float]:
    """(steady images/s, start-up seconds) of trainers.train_size on this config."""
    import trainers

    summary = trainers.train_size(cfg, width, 0, out, prep, progress=False)
    rows = [json.loads(x) for x in (trainers.run_dir_for(out, width, 0) / "metrics.jsonl").read_text().splitlines()]
    step_times = np.diff([r["elapsed_s"] for r in rows])[warmup:]  # one row per step (log_every_images=batch)
    return steady_rate(step_times, cfg.train.batch_size), summary["wall_s"] - summary["train_s"]


def run_bare(cfg, width: int, prep: Path, steps: int, warmup: int, device: str, bf16: bool) -> float:
    """Steady images/s of a plain loop: same model, batches, loss, AdamW, clipping and EMA."""
    from diffusers.training_utils import EMAModel

    from trainers.data import micro_batch_start
    from trainers.diffusion import step_generator
    from trainers.recipes import RecipeContext, get_recipe

    tc, dev = cfg.train, torch.device(device)
    # The trainer's own recipe: the same reader (shards, stream order, float32 batches moved to the device per
    # step), model and loss, so the ratio is the trainer's machinery (Ray, DeepSpeed, logging) and nothing else.
    recipe = get_recipe("base")
    ctx = RecipeContext(cfg, width, 0, prep, dev)
    data = recipe.data(ctx)
    torch.manual_seed(0)
    unet = recipe.model(ctx).to(dev)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, betas=(tc.adam_beta1, tc.adam_beta2))
    ema = EMAModel([p.detach().float() for p in params], decay=tc.ema_decay, foreach=True)
    B = tc.batch_size
    times, last = [], time.perf_counter()
    for step in range(steps):
        batch = data.batch(micro_batch_start(step * B, 0, 0, 1, B), B, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = recipe.loss(unet, batch, step_generator(dev, 0, step, 0, 0), torch.float32)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(params)
        loss.item()  # the trainer reads the loss every step (NaN check), so the bare loop does too
        now = time.perf_counter()
        times.append(now - last)
        last = now
    del unet, params, opt, ema, batch, recipe, data
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # hand the memory back: the trainer's worker is another process on this GPU
    return steady_rate(times[warmup:], B)


def config(ladder: str, width: int, batch: int, steps: int, threads: int, use_gpu: bool):
    from study.config import load_config

    return load_config(None, [
        "name=bench", f"model.ladder={ladder}", f"model.widths=[{width}]", f"train.batch_size={batch}",
        f"train.total_images={batch * steps}", "train.milestones=[1.0]", "train.loss_milestones=[]",
        f"train.log_every_images={batch}",
        "train.num_workers=1", f"train.cpus_per_worker={threads}", f"train.torch_threads={threads}",
        f"train.use_gpu={str(use_gpu).lower()}", "tracking.wandb_mode=disabled", "sweep.max_failures=0"])


def compare(name, cfg, width, prep, steps, warmup, device, bf16, tmp: Path, fwd_flops=None, peak=None):
    # Bare, trainer, bare again: the reference is the mean of the two bare runs, so a machine whose speed
    # drifts during the run (shared or throttled CPUs) does not bias the ratio.
    bare1 = run_bare(cfg, width, prep, steps, warmup, device, bf16)
    trainer, startup = run_trainer(cfg, width, prep, tmp / f"run-{name}", warmup)
    bare2 = run_bare(cfg, width, prep, steps, warmup, device, bf16)
    bare = (bare1 + bare2) / 2
    print(f"[{name}] bare PyTorch loop  {bare:9.1f} images/s (before {bare1:.1f}, after {bare2:.1f})")
    print(f"[{name}] trainer            {trainer:9.1f} images/s   ratio trainer / bare {trainer / bare:.3f}")
    print(f"[{name}] trainer start-up   {startup:9.1f} s (Ray, worker imports, DeepSpeed init; not in the rates)")
    if fwd_flops and peak:  # training FLOPs per image = 3 x forward (forward + backward)
        for label, rate in (("bare", bare), ("trainer", trainer)):
            print(f"[{name}] MFU {label:8s} {3 * fwd_flops * rate / (peak * 1e12):.1%} of {peak:g} TFLOP/s bf16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--n", type=int, default=4096, help="samples in the prepared set")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-batch", type=int, default=32)  # lower it if c=320 runs out of memory
    ap.add_argument("--gpu-steps", type=int, default=60)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU comparison")
    ap.add_argument("--tiny", action="store_true", help="smallest sizes, end to end in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win
        ap.set_defaults(width=8, size=8, n=256, shard_size=64, batch=8, steps=12, warmup=2, gpu_batch=4, gpu_steps=6)
        args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (others' work skews CPU rates)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.gpu_only:
            prep = fake_shards(tmp / "prep-cpu", args.n, 4, args.size, 16, 384, args.shard_size)
            cfg = config("tiny", args.width, args.batch, args.steps, args.threads, use_gpu=False)
            print(f"CPU: tiny ladder c={args.width}, {args.n} samples of 4x{args.size}x{args.size} latents and 16x384 "
                  f"context in shards of {args.shard_size}, "
                  f"batch {args.batch}, fp32, {args.threads} threads, {args.steps} steps ({args.warmup} warm-up)")
            compare("cpu", cfg, args.width, prep, args.steps, args.warmup, "cpu", False, tmp)
        if not torch.cuda.is_available():
            print("GPU: skipped (no CUDA device): c=320 at 64x64x4 latents in bf16 needs a GPU")
            return
        from study.ladder import ladder
        from trainers.data import PreparedData

        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        prep = fake_shards(tmp / "prep-gpu", args.n, 4, 64, 77, 768, args.shard_size)  # SD1.5: 64x64x4 latents, 77 CLIP tokens
        rung = ladder("paper", [320], PreparedData(prep, 0).geometry)[0]
        threads = min(8, os.cpu_count() or 1)
        cfg = config("paper", 320, args.gpu_batch, args.gpu_steps, threads, use_gpu=True)  # precision auto: bf16
        print(f"GPU {name}: paper ladder c=320 ({rung.params / 1e6:.0f}M params, {rung.gflops:.0f} GFLOPs/forward), "
              f"64x64x4 latents, batch {args.gpu_batch}, bf16" + ("" if peak else " (pass --peak-tflops for MFU)"))
        compare("gpu", cfg, 320, prep, args.gpu_steps, min(args.warmup, args.gpu_steps // 3), "cuda", True, tmp,
                rung.flops, peak)


if __name__ == "__main__":
    main()
