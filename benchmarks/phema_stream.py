"""Post-hoc EMA reconstruction (`study ema`), streamed per tensor against every snapshot loaded at once: wall time and
peak resident memory of each, on a training run's snapshots.

    python benchmarks/phema_stream.py RUN_DIR/train/w32-s0 [--sigma-rel 0.08]
    python benchmarks/phema_stream.py --tiny     # on synthetic snapshots of a few MB (the test suite's run)

Each method runs in a fresh process (its peak RSS is its own), alternating over three rounds; the figures are
medians. The streamed one is what `study ema` and the ema experiment run; the other is the reconstruction before
it streamed (unpack(load_file) of every snapshot, then one dict of the result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
size_dir, sigma, method = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
import torch
from study import phema
t = time.perf_counter()
if method == "stream":
    out = phema.reconstruct_checkpoint(size_dir, sigma)
    shutil.rmtree(out)  # the next round reconstructs again
else:
    from safetensors.torch import load_file
    merged = {}
    for path in sorted((size_dir / phema.SNAPSHOTS).glob("*.safetensors")):
        images = int(path.stem.split("-")[0])
        for s, d in phema.unpack(load_file(path)).items():
            merged.setdefault((images, float(s)), {}).update(d)
    snaps = [(i, s, d) for (i, s), d in sorted(merged.items())]
    last = json.loads((size_dir / "milestones.json").read_text())[-1]["train_images"]
    phema.reconstruct(snaps, int(last), sigma)
print(json.dumps({"s": time.perf_counter() - t, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def synthetic_run(root) -> str:
    """A training run's folder as the trainer leaves it, on random weights: 8 snapshots of the two profiles
    (sigma_rel 0.05, 0.10) of 4 tensors (about 1 MB each), a milestone checkpoint and milestones.json."""
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from study.phema import PowerEMA, snapshot_path
    from study.weights import FILES, STATE, manifest

    root = Path(root)
    (root / "phema").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    ws = {f"block{i}.weight": torch.zeros(512, 512) for i in range(4)}
    ema = PowerEMA(list(ws.values()), (0.05, 0.10))
    for step in range(1, 81):
        for w in ws.values():
            w += torch.randn(w.shape, generator=gen) * 0.01
        ema.update(step * 64, 64)
        if step % 10 == 0:
            flat = {f"{float(s):.3f}/{n}": t for s, d in ema.state(list(ws)).items() for n, t in d.items()}
            save_file(flat, snapshot_path(root, step * 64))
    end = 80 * 64
    ckpt = root / "checkpoints" / f"milestone-{end:010d}"
    ckpt.mkdir(parents=True)
    save_file({n: w.clone() for n, w in ws.items()}, ckpt / "ema.safetensors")
    (ckpt / "unet.json").write_text("{}")
    (ckpt / STATE).write_text(json.dumps({"train_images": end, FILES: manifest(ckpt)}))
    (root / "milestones.json").write_text(json.dumps([{"train_images": end, "path": f"checkpoints/{ckpt.name}"}]))
    return str(root)


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size_dir", nargs="?")
    ap.add_argument("--sigma-rel", type=float, default=0.08)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="synthetic snapshots of a few MB, one round")
    args = ap.parse_args()
    if args.tiny:
        args.size_dir, args.rounds = synthetic_run(tempfile.mkdtemp(prefix="phema-stream-") + "/w0-s0"), 1
    elif not args.size_dir:
        ap.error("pass a training run folder (RUN_DIR/train/wW-sS) or --tiny")
    got: dict[str, list[dict]] = {"stream": [], "all_at_once": []}
    for _ in range(args.rounds):
        for method in got:
            res = subprocess.run([sys.executable, "-c", CHILD, args.size_dir, str(args.sigma_rel), method],
                                 capture_output=True, text=True, check=True)
            got[method].append(json.loads(res.stdout.strip().splitlines()[-1]))
    for method, runs in got.items():
        print(f"{method:>12}: {np.median([r['s'] for r in runs]):.2f} s, peak RSS "
              f"{np.median([r['peak_mib'] for r in runs]):.0f} MiB (median of {len(runs)})")


if __name__ == "__main__":
    main()
