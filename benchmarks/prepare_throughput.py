"""`study prepare` throughput and memory on synthetic WebDataset sets: images/s and the peak resident
memory of every process (the driver and each Ray worker), for several set sizes, resolutions, Ray
worker counts and latent spaces. Memory must not grow with the set: peak at 100K <= 1.2x peak at 2K.

    python benchmarks/prepare_throughput.py                      # 2K and 20K at 64 px, 1 and 2 workers
    python benchmarks/prepare_throughput.py --sizes 2000 20000 100000 --px 64 256

Each configuration runs in a fresh subprocess with its own local Ray (workers = encoder actors; Ray
gets one more CPU for the read-and-decode tasks), so peaks are not carried from one to the next.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

PER_TAR = 1000  # img2dataset's default is 10000; smaller tars give 2 workers something to share at 2K


def make_set(root: Path, n: int, px: int) -> Path:
    """n random JPEGs of px x px (a little wider, so the crop works) with captions, as img2dataset writes."""
    import numpy as np
    from PIL import Image

    done = root / f"wds-{n}-{px}"
    if (done / "READY").exists():
        return done
    done.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (px, px + px // 4, 3), dtype=np.uint8)
    for t in range(0, n, PER_TAR):
        with tarfile.open(done / f"{t // PER_TAR:05d}.tar", "w") as tar:
            for i in range(t, min(n, t + PER_TAR)):
                buf = io.BytesIO()
                Image.fromarray(np.roll(base, i, axis=1)).save(buf, format="JPEG", quality=90)
                for ext, data in (("jpg", buf.getvalue()), ("txt", f"a synthetic photo number {i}".encode())):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (done / "READY").write_text("")
    return done


def _small_vae_dir(root: Path, px: int) -> Path:
    """A small AutoencoderKL of the smoke config's shape (untrained: throughput does not depend on weights)."""
    from diffusers import AutoencoderKL

    from study.autoencoder import small_vae_kwargs
    from study.config import load_config

    out = root / f"small-vae-{px}"
    if not (out / "config.json").exists():
        cfg = load_config("smoke")
        AutoencoderKL(**small_vae_kwargs(cfg.autoencoder, 3, px), scaling_factor=1.0).save_pretrained(out)
    return out


def one(data: str, px: int, workers: int, space: str, out_dir: str) -> dict:
    """Run one prepare in this process and measure it."""
    import numpy as np
    import psutil
    import ray

    from study.config import load_config
    from study.shards.pipeline import prepare_shards

    overrides = ["data.name=webdataset", f"data.root={data}", f"data.resolution={px}", "data.eval_fraction=0.01",
                 "data.shard_size=1024", f"data.prepare_actors={workers}", "data.prepare_writers=2",
                 "eval.feature_extractor=inception", f"eval.inception_path={data}", "eval.num_samples=64"]
    ae_dir = Path(out_dir) / "autoencoder"
    if space == "small-vae":
        overrides += ["autoencoder.kind=train"]
        ae_dir = _small_vae_dir(Path(out_dir).parent, px)
    cfg = load_config("tiny", overrides)
    ray.init(address="local", num_cpus=workers + 1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def sample():  # the driver and every process Ray started for it (raylet, GCS, workers)
        me = psutil.Process()
        while not stop.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss, name = p.memory_info().rss, " ".join(p.cmdline()[:1])[-40:]
                    if p.pid == me.pid:
                        name = "driver"
                    elif p.name().startswith("ray::"):
                        name = p.name()
                    if rss > peaks.get(p.pid, ("", 0))[1]:
                        peaks[p.pid] = (name, rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.time()
    uncond = np.zeros((1, cfg.text_encoder.max_length, 384), np.float16)
    report = prepare_shards(cfg, Path(out_dir) / "shards", ae_dir, uncond, 3, progress=False)
    seconds = time.time() - t0
    stop.set()
    thread.join()
    ray.shutdown()
    mb = lambda rss: round(rss / 2**20)  # noqa: E731
    ray_procs = [rss for name, rss in peaks.values() if name.startswith("ray::")]
    return {"images": report["good"], "seconds": round(seconds, 1), "images_per_s": round(report["good"] / seconds, 1),
            "driver_peak_mb": mb(peaks[os.getpid()][1]), "worker_peak_mb": mb(max(ray_procs, default=0)),
            "other_peak_mb": mb(max((rss for pid, (name, rss) in peaks.items()  # raylet, GCS, object store
                                     if pid != os.getpid() and not name.startswith("ray::")), default=0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--px", type=int, nargs="+", default=[64])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spaces", nargs="+", default=["identity", "small-vae"])
    ap.add_argument("--big-px-size", type=int, default=20000, help="set size for resolutions above 64 px")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "prepare-bench"))
    ap.add_argument("--one", nargs=5, metavar=("DATA", "PX", "WORKERS", "SPACE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        data, px, workers, space, out = args.one
        print(json.dumps(one(data, int(px), int(workers), space, out)))
        return
    root = Path(args.root)
    print(f"{'images':>7} {'px':>4} {'workers':>7} {'space':>9} {'img/s':>8} {'driver MB':>9} {'worker MB':>9}")
    rows = []
    for px in args.px:
        for n in (args.sizes if px == 64 else [args.big_px_size]):
            data = make_set(root, n, px)
            for space in args.spaces:
                for w in args.workers:
                    with tempfile.TemporaryDirectory(dir=root) as out:
                        res = subprocess.run([sys.executable, __file__, "--one", str(data), str(px), str(w), space, out],
                                             capture_output=True, text=True)
                    if res.returncode:
                        print(res.stderr[-2000:], file=sys.stderr)
                        raise SystemExit(f"prepare failed for {n} images at {px} px, {w} workers, {space}")
                    r = {"n": n, "px": px, "workers": w, "space": space, **json.loads(res.stdout.splitlines()[-1])}
                    rows.append(r)
                    print(f"{n:>7} {px:>4} {w:>7} {space:>9} {r['images_per_s']:>8} {r['driver_peak_mb']:>9} "
                          f"{r['worker_peak_mb']:>9}", flush=True)
    sizes = sorted({r["n"] for r in rows if r["px"] == 64})
    if len(sizes) > 1:
        for space in args.spaces:
            for w in args.workers:
                sel = {r["n"]: r for r in rows if r["px"] == 64 and r["space"] == space and r["workers"] == w}
                lo, hi = sel[sizes[0]], sel[sizes[-1]]
                for key in ("driver_peak_mb", "worker_peak_mb", "other_peak_mb"):
                    ratio = hi[key] / max(1, lo[key])
                    print(f"{space}, {w} workers, {key}: {sizes[-1]} vs {sizes[0]} images = {ratio:.2f}x "
                          f"({'flat' if ratio <= 1.2 else 'GROWS'})")
    (root / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
