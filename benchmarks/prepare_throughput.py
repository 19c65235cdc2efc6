"""`study prepare` throughput and memory on synthetic WebDataset sets: images/s and the peak resident
memory of every process (the driver and each Ray worker), for several set sizes, resolutions, Ray
worker counts, latent spaces and caption storage (data.captions: token ids, the default, or hidden states).
Memory must not grow with the set: peak at 100K <= 1.2x peak at 2K.

    python benchmarks/prepare_throughput.py                      # 2K and 20K at 64 px, 1 and 2 workers
    python benchmarks/prepare_throughput.py --sizes 2000 20000 100000 --px 64 256

Each configuration runs in a fresh subprocess with its own local Ray (workers = encoder actors; Ray
gets one more CPU for the read-and-decode tasks), so peaks are not carried from one to the next.
Per process it prints the resident set and the
private memory (resident minus shared pages); "store" is Ray's object store in /dev/shm. A worker's
resident set also counts the object-store pages it has mapped: shared, and counted once in "store".
Rows already in ROOT/results.json are kept (rerun to resume a long matrix; --fresh to remeasure);
PREPARE_TRACE=FILE writes every process's memory over time (with --one), to find what grows.
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


def _shm_used() -> int:
    """Bytes in use on /dev/shm: Ray's object store lives there (its pages are shared by every process
    that maps them, so a worker's resident set counts the pages it touched)."""
    import shutil

    return shutil.disk_usage("/dev/shm").used if os.path.isdir("/dev/shm") else 0


def _disk_used(out: Path, skip: Path) -> int:
    """Bytes of every file under `out` (shards and the staging folder parts/), less the autoencoder's."""
    total = 0
    for dirpath, _, files in os.walk(out):
        if Path(dirpath).is_relative_to(skip):
            continue
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:  # deleted meanwhile (a source's chunks, once in its shards)
                pass
    return total


def _by_mapping(p) -> str:
    """A process's resident memory by what is mapped (MB): the object store's shared memory, other
    files (libraries, memory-mapped arrays) and anonymous memory (its own heap). Slow: trace only."""
    shm = files = anon = 0
    for m in p.memory_maps(grouped=True):
        if "/dev/shm" in m.path or "plasma" in m.path:
            shm += m.rss
        elif m.path.startswith("/"):
            files += m.rss
        else:
            anon += m.rss
    return f"shm={shm >> 20} files={files >> 20} anon={anon >> 20}"


def one(data: str, px: int, workers: int, space: str, out_dir: str, captions: str = "tokens") -> dict:
    """Run one prepare in this process and measure it."""
    import numpy as np
    import psutil
    import ray

    from study.config import load_config
    from study.shards.pipeline import prepare_shards

    overrides = ["data.name=webdataset", f"data.root={data}", f"data.resolution={px}", "data.eval_fraction=0.01",
                 "data.shard_size=1024", f"data.prepare_actors={workers}", "data.prepare_writers=2",
                 "eval.feature_extractor=inception", f"eval.inception_path={data}", "eval.num_samples=64",
                 f"data.captions={captions}"]
    ae_dir = Path(out_dir) / "autoencoder"
    if space == "small-vae":
        overrides += ["autoencoder.kind=train"]
        ae_dir = _small_vae_dir(Path(out_dir).parent, px)
    cfg = load_config("tiny", overrides)
    ray.init(address="local", num_cpus=workers + 1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    # Per process: peak resident set, and peak private memory (resident minus shared pages: the object
    # store's /dev/shm and memory-mapped part files count as shared). Ray reuses worker processes for
    # different tasks, so a process is named by the role it had at its peak.
    peaks: dict[int, dict] = {}
    trace = open(os.environ["PREPARE_TRACE"], "w") if os.environ.get("PREPARE_TRACE") else None
    stop = threading.Event()

    shm_base, shm_peak, disk_peak = _shm_used(), [0], [0]

    def sample():  # the driver and every process Ray started for it (raylet, GCS, workers)
        me, t_start = psutil.Process(), time.time()
        while not stop.is_set():
            shm_peak[0] = max(shm_peak[0], _shm_used() - shm_base)
            disk_peak[0] = max(disk_peak[0], _disk_used(Path(out_dir), ae_dir))
            for p in [me, *me.children(recursive=True)]:
                try:
                    m, name = p.memory_info(), " ".join(p.cmdline()[:1])[-40:]
                    if p.pid == me.pid:
                        name = "driver"
                    elif p.name().startswith("ray::"):
                        name = p.name()
                    private = m.rss - m.shared
                    peak = peaks.setdefault(p.pid, {"rss": 0, "private": 0, "rss_role": name, "private_role": name})
                    if m.rss > peak["rss"]:
                        peak.update(rss=m.rss, rss_role=name)
                    if private > peak["private"]:
                        peak.update(private=private, private_role=name)
                    if trace:
                        trace.write(f"{time.time() - t_start:.1f}\t{p.pid}\t{name}\t{m.rss >> 20}\t{private >> 20}"
                                    f"\t{_by_mapping(p) if name.startswith('ray::') and m.rss > 500 << 20 else ''}\n")
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.time()
    uncond = np.zeros((1, cfg.text_encoder.max_length, 384), np.float16)
    report = prepare_shards(cfg, Path(out_dir) / "shards", ae_dir, uncond, 3, progress=False)
    seconds = time.time() - t0
    stop.set()
    thread.join()
    ray.shutdown()
    if trace:
        trace.close()
    mb = lambda rss: round(rss / 2**20)  # noqa: E731
    workers_ = {pid: pk for pid, pk in peaks.items() if pk["rss_role"].startswith("ray::")}
    top = max(workers_.values(), key=lambda pk: pk["rss"], default={"rss": 0, "rss_role": ""})
    top_private = max(workers_.values(), key=lambda pk: pk["private"], default={"private": 0, "private_role": ""})
    disk_peak[0] = max(disk_peak[0], _disk_used(Path(out_dir), ae_dir))  # the end, should no sample have seen it
    shards = [p for p in (Path(out_dir) / "shards").iterdir() if p.is_file()]
    shard_bytes = sum(p.stat().st_size for p in shards)
    return {"images": report["good"], "seconds": round(seconds, 1), "images_per_s": round(report["good"] / seconds, 1),
            # storage: the shards' bytes per sample and files per 1M samples, and the peak of all prepare wrote
            # (shards + staging) against the shards it ends with (1.0: the set is never on disk twice)
            "bytes_per_sample": round(shard_bytes / report["good"]),
            "files_per_1m": round(len(shards) * 1e6 / report["good"]),
            "disk_peak_mb": mb(disk_peak[0]), "disk_final_mb": mb(shard_bytes),
            "driver_peak_mb": mb(peaks[os.getpid()]["rss"]), "driver_private_mb": mb(peaks[os.getpid()]["private"]),
            "worker_peak_mb": mb(top["rss"]), "worker_peak_role": top["rss_role"],
            "worker_private_mb": mb(top_private["private"]), "worker_private_role": top_private["private_role"],
            "object_store_mb": mb(shm_peak[0]),
            "other_peak_mb": mb(max((pk["rss"] for pid, pk in peaks.items()  # raylet, GCS, object store
                                     if pid != os.getpid() and pid not in workers_), default=0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--px", type=int, nargs="+", default=[64])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--spaces", nargs="+", default=["identity", "small-vae"])
    ap.add_argument("--captions", nargs="+", default=["tokens"], choices=["tokens", "states"],
                    help="what the shards keep of each caption (data.captions): token ids, or hidden states")
    ap.add_argument("--big-px-size", type=int, default=20000, help="set size for resolutions above 64 px")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "prepare-bench"))
    ap.add_argument("--fresh", action="store_true", help="measure again the rows results.json already holds")
    ap.add_argument("--one", nargs=6, metavar=("DATA", "PX", "WORKERS", "SPACE", "OUT", "CAPTIONS"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help="two small sets, one configuration, in seconds "
                                                        "(tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win; its own root, so a full matrix's results.json is untouched
        ap.set_defaults(sizes=[256, 512], px=[64], workers=[1], spaces=["identity"], fresh=True,
                        root=os.path.join(tempfile.gettempdir(), "prepare-bench-tiny"))
        args = ap.parse_args()
    if args.one:
        data, px, workers, space, out, captions = args.one
        print(json.dumps(one(data, int(px), int(workers), space, out, captions)))
        return
    root = Path(args.root)
    # Rows already measured are kept (a long matrix resumes by rerunning); --fresh measures them again.
    saved = root / "results.json"
    rows = [] if args.fresh or not saved.exists() else json.loads(saved.read_text())
    head = ("images", "px", "workers", "space", "captions", "img/s", "driver MB", "private", "worker MB", "private", "store MB",
            "B/sample", "files/1M", "disk peak", "disk end")
    print(" ".join(f"{h:>9}" for h in head))
    for px in args.px:
        for n in (args.sizes if px == 64 else [args.big_px_size]):
            for space, w, cap in ((s_, w_, c_) for s_ in args.spaces for w_ in args.workers for c_ in args.captions):
                r = next((r for r in rows if _key(r) == (n, px, w, space, cap)), None)
                if r is None:
                    r = {"n": n, "px": px, "workers": w, "space": space, "captions": cap,
                         **_measure(root, n, px, w, space, cap)}
                    rows.append(r)
                    root.mkdir(parents=True, exist_ok=True)
                    saved.write_text(json.dumps(rows, indent=1))
                print(" ".join(f"{v:>9}" for v in (n, px, w, space, cap, r["images_per_s"], r["driver_peak_mb"],
                                                    r["driver_private_mb"], r["worker_peak_mb"], r["worker_private_mb"],
                                                    r["object_store_mb"], r.get("bytes_per_sample", "-"),
                                                    r.get("files_per_1m", "-"), r.get("disk_peak_mb", "-"),
                                                    r.get("disk_final_mb", "-"))), flush=True)
    sizes = sorted({r["n"] for r in rows if r["px"] == 64 and r["n"] in args.sizes})
    if len(sizes) > 1:
        # The target is on each process's own memory (private) and the object store's; a worker's resident
        # set also counts the object-store pages it has touched, which are shared and counted once in the store.
        for space, w, cap in ((s_, w_, c_) for s_ in args.spaces for w_ in args.workers for c_ in args.captions):
            sel = {r["n"]: r for r in rows if _key(r)[1:] == (64, w, space, cap)}
            if sizes[0] not in sel or sizes[-1] not in sel:
                continue
            lo, hi = sel[sizes[0]], sel[sizes[-1]]
            for key in ("driver_private_mb", "worker_private_mb", "driver_peak_mb", "worker_peak_mb",
                        "other_peak_mb"):
                ratio = hi[key] / max(1, lo[key])
                print(f"{space}, {w} workers, captions as {cap}, {key}: {sizes[-1]} vs {sizes[0]} images = "
                      f"{ratio:.2f}x ({'flat' if ratio <= 1.2 else 'GROWS'})")
            # The store holds the read-ahead, capped at data.prepare_readahead chunks per encoder actor: a
            # set smaller than that (2K images are 8 chunks) never fills the cap, so a ratio against the
            # smallest set says nothing; the peaks by size do (flat once the cap is reached).
            print(f"{space}, {w} workers, captions as {cap}, object_store_mb by size: "
                  + ", ".join(f"{n}: {sel[n]['object_store_mb']}" for n in sizes if n in sel))


def _key(row: dict) -> tuple:
    """A row's configuration; rows measured before captions were a choice stored hidden states."""
    return row["n"], row["px"], row["workers"], row["space"], row.get("captions", "states")


def _measure(root: Path, n: int, px: int, workers: int, space: str, captions: str) -> dict:
    data = make_set(root, n, px)
    with tempfile.TemporaryDirectory(dir=root) as out:
        res = subprocess.run([sys.executable, __file__, "--one", str(data), str(px), str(workers), space, out,
                              captions], capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"prepare failed for {n} images at {px} px, {workers} workers, {space}, captions as {captions}")
    return json.loads(res.stdout.splitlines()[-1])


if __name__ == "__main__":
    main()
