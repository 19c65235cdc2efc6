"""Every script under benchmarks/ runs end to end in its --tiny mode and prints its figures.

Each runs as a user runs it (`python benchmarks/NAME.py --tiny`, from the repository root), and its output is
parsed: every figure it must print is there, finite, and positive where a rate or a time must be. The figures
themselves are not checked against anything (speed is not a unit test; the full runs record them in
docs/benchmarks.md). A new benchmark is one entry of FIGURES: the test fails until it has one.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NUM = r"(-?[0-9.]+(?:e[+-]?[0-9]+)?|nan|inf|-inf)"  # what the scripts print for a figure, including the bad values

# Per script: (pattern, how many lines must match it at least, which figures must be > 0). Every figure a
# pattern captures must be finite; the positive ones are rates, times and ratios of rates.
FIGURES = {
    "train_throughput.py": [
        (rf"\[cpu\] bare PyTorch loop +{NUM} images/s \(before {NUM}, after {NUM}\)", 1, (0, 1, 2)),
        (rf"\[cpu\] trainer +{NUM} images/s +ratio trainer / bare {NUM}", 1, (0, 1)),
        (rf"\[cpu\] trainer start-up +{NUM} s", 1, (0,)),
    ],
    "train_input.py": [
        (rf"trainer, in-memory arrays +{NUM} images/s \(before {NUM}, after {NUM}\)", 1, (0, 1, 2)),
        (rf"trainer, streaming shards +{NUM} images/s +ratio shards / in-memory {NUM}", 1, (0, 1)),
        (rf"reader alone, in-memory arrays +{NUM} images/s", 2, (0,)),
        (rf"reader alone, streaming shards +{NUM} images/s", 2, (0,)),
    ],
    "train_launch.py": [
        (rf"Ray Train job +1 runs: +{NUM} s wall, +{NUM} CPU-s in all, +{NUM} CPU-s per run", 1, (0, 1, 2)),
        (rf"inline \(Tune trial\) +1 runs: +{NUM} s wall, +{NUM} CPU-s in all, +{NUM} CPU-s per run", 1, (0, 1, 2)),
    ],
    "cpu_options.py": [  # training images/s and the ratio to fp32 batch 64; the sampling rate
        (rf"^  fp32 +{NUM} img/s +ratio +{NUM}$", 1, (0, 1)),
        (rf"^  batch128 +{NUM} img/s +ratio +{NUM}$", 1, (0, 1)),
        (rf"^  sampling batch 64 +{NUM} img/s", 1, (0,)),
    ],
    "distill_throughput.py": [
        (rf"base training +{NUM} images/s", 1, (0,)),
        (rf"distillation +{NUM} images/s", 1, (0,)),
        (rf"ratio distill/base: {NUM}", 1, (0,)),
    ],
    "superres_throughput.py": [
        (rf"^ +8 +{NUM} +{NUM} +{NUM}$", 1, (0, 1, 2)),  # width 8: base img/s, SR img/s, SR/base
    ],
    "prepare_throughput.py": [  # images, px, workers, space, captions; img/s, driver MB, private, worker MB, private,
        # store MB, bytes per sample, files per 1M samples, disk peak MB, disk MB at the end
        (rf"^ +(?:256|512) +64 +1 +identity +tokens +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} "
         rf"+{NUM}$", 2, (0, 1, 2, 3, 4, 6, 7, 8, 9)),
        (rf"identity, 1 workers, captions as tokens, driver_private_mb: 512 vs 256 images = {NUM}x", 1, (0,)),
    ],
    "caption_storage.py": [  # per encoder: bytes per sample and images/s of each mode, the ratio tokens / states
        (rf"^minilm +states +{NUM} B/sample +{NUM} images/s$", 1, (0, 1)),
        (rf"^clip-standin +tokens +{NUM} B/sample +{NUM} images/s +ratio tokens / states {NUM}$", 1, (0, 1, 2)),
    ],
    "crossing_power.py": [  # the worst false-crossing rate and its upper bound; settings below the end-gap test
        (rf"^level: highest false rate {NUM}%; highest 95 % Clopper-Pearson upper bound {NUM}%", 1, (1,)),
        (r"^power: settings below the end-gap test's ([0-9]+) of ([0-9]+);", 1, (1,)),
        (rf"^complete; this run {NUM} s$", 1, ()),
    ],
    "phema_stream.py": [  # per method: median seconds and peak RSS of a post-hoc EMA reconstruction
        (rf"^ +(?:stream|all_at_once): {NUM} s, peak RSS {NUM} MiB \(median of [0-9]+\)$", 2, (0, 1)),
    ],
    "gof_level.py": [  # false 'does not fit' rates (may be 0), power against a step, a U and an outlier
        (rf"^  [46] points: {NUM} \(chi-square alone {NUM}, leave-one-out alone {NUM}\)$", 2, ()),
        (rf"^  (?:step|U|one outlier \(6 sd\)): {NUM}$", 3, ()),
    ],
    "memory_plan_check.py": [  # width, side, ckpt, measured MB/img, plan MB/img, error, seconds
        (rf"^ +64 +40 +no +{NUM} +{NUM} +[-+0-9.]+% +{NUM}$", 1, (0, 1, 2)),
        (rf"^  c=(?:64|320|768): +{NUM} without checkpointing, +{NUM} with, +{NUM} per sampling input$", 3, (0, 1, 2)),
    ],
    "guidance_search.py": [  # FIDs, the best guidance, the noise; then cells reached / cells
        (rf"w8 +ddim +steps 2 +grid best +{NUM} @ g={NUM} +\(noise {NUM}\); search best +{NUM};", 1, (0, 1, 3)),
        (r"search within the FID noise of the grid's best in ([0-9]+)/1 cells", 1, ()),
    ],
}
GPU_RUNS = {  # the GPU parts, with the lines only they print
    "train_throughput.py": (["--gpu-only"], [
        (rf"\[gpu\] bare PyTorch loop +{NUM} images/s \(before {NUM}, after {NUM}\)", 1, (0, 1, 2)),
        (rf"\[gpu\] trainer +{NUM} images/s +ratio trainer / bare {NUM}", 1, (0, 1)),
        (rf"\[gpu\] MFU bare +{NUM}%", 1, (0,)),
    ]),
    "distill_throughput.py": (["--gpu"], FIGURES["distill_throughput.py"]),
}


def run_tiny(script: str, *extra: str, gpu: bool = False) -> str:
    """`python benchmarks/SCRIPT --tiny` from the repository root; its output, or the test fails with it."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # not this process's W&B service
    env.update(RAY_ADDRESS="", WANDB_MODE="disabled")  # a Ray of its own, never a cluster found on the machine
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU figures; the GPU parts are the gpu-marked test below
    res = subprocess.run([sys.executable, f"benchmarks/{script}", "--tiny", *extra], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{script} --tiny exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def check_figures(script: str, out: str, figures) -> None:
    """Every pattern matched often enough; every figure finite, and > 0 where it must be."""
    for pattern, at_least, positive in figures:
        found = re.findall(pattern, out, flags=re.MULTILINE)
        assert len(found) >= at_least, f"{script} printed no line like {pattern!r}:\n{out}"
        for groups in found:
            groups = groups if isinstance(groups, tuple) else (groups,)
            values = [float(g) for g in groups]
            assert all(math.isfinite(v) for v in values), f"{script}: a figure is not finite in {groups}:\n{out}"
            assert all(values[i] > 0 for i in positive), f"{script}: a rate or time is not > 0 in {groups}:\n{out}"


def test_every_benchmark_is_listed():
    """A script added under benchmarks/ must be added to FIGURES (and given a --tiny mode)."""
    on_disk = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    assert on_disk == set(FIGURES), (f"benchmarks/ and tests/test_benchmarks.py's FIGURES differ: not listed "
                                     f"{sorted(on_disk - set(FIGURES))}, listed but gone {sorted(set(FIGURES) - on_disk)}")


@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_tiny(script):
    check_figures(script, run_tiny(script), FIGURES[script])


@pytest.mark.gpu
@pytest.mark.parametrize("script", sorted(GPU_RUNS))
def test_benchmark_tiny_gpu(script):
    extra, figures = GPU_RUNS[script]
    check_figures(script, run_tiny(script, *extra, gpu=True), figures)
