"""The driver's memory for sorting a prepared set's shard index, in the driver against Ray Data's
distributed sort, at several set sizes: the figure behind `data.prepare_driver_sort_max`.

    python benchmarks/index_sort_memory.py                    # 100K and 400K samples, both sorts

`study prepare` orders every split by a hash of the sample keys before it cuts the shards. Sorting in
the driver holds one entry per sample; Ray Data's sort holds a fixed amount in the driver and the
index in the cluster's object stores. This writes synthetic part records (the encoder's per-chunk JSON,
256 samples each; no latents, the sort does not read them), streams `sorted_entries` over them in a
fresh process with its own local Ray, and prints the driver's private memory (resident minus shared
pages) above what it held before the sort, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHUNK = 256


def make_parts(root: Path, n: int) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    chunks = []
    for c in range(0, n, CHUNK):
        base = root / f"{c // CHUNK:06d}"
        if not Path(f"{base}.json").exists():
            good = [{"key": f"{i:09d}", "caption": f"a synthetic photo number {i}", "label": None, "split": "train",
                     "image_row": -1} for i in range(c, min(n, c + CHUNK))]
            Path(f"{base}.json").write_text(json.dumps({"good": good, "bad": []}))
        chunks.append({"base": str(base), "source": 0, "chunk": c // CHUNK})
    return chunks


def one(root: str, n: int, driver_max: int) -> dict:
    import psutil
    import ray

    from study.shards.pipeline import sorted_entries

    chunks = make_parts(Path(root) / f"parts-{n}", n)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    me, peak, stop = psutil.Process(), [0], threading.Event()

    def private() -> int:
        m = me.memory_info()
        return m.rss - m.shared

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], private())
            stop.wait(0.2)

    before = private()
    threading.Thread(target=sample, daemon=True).start()
    t0, rows = time.time(), 0
    for _ in sorted_entries(chunks, n, driver_max):
        rows += 1
    stop.set()
    ray.shutdown()
    assert rows == n
    return {"seconds": round(time.time() - t0, 1), "driver_delta_mb": round((max(peak[0], private()) - before) / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "index-sort-bench"))
    ap.add_argument("--one", nargs=3, metavar=("ROOT", "N", "DRIVER_MAX"), help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help="one small set, both sorts, in seconds (tests/test_benchmarks.py)")
    args = ap.parse_args()
    if args.tiny:  # flags given explicitly still win
        ap.set_defaults(sizes=[2 * CHUNK])
        args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    print(f"{'samples':>9} {'sort':>12} {'seconds':>8} {'driver +MB':>10} {'KB/sample':>9}")
    for n in args.sizes:
        for name, driver_max in (("driver", n), ("distributed", 0)):
            res = subprocess.run([sys.executable, __file__, "--one", args.root, str(n), str(driver_max)],
                                 capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(res.stderr[-2000:])
            r = json.loads(res.stdout.splitlines()[-1])
            print(f"{n:>9} {name:>12} {r['seconds']:>8} {r['driver_delta_mb']:>10} "
                  f"{r['driver_delta_mb'] * 1024 / n:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
