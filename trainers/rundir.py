"""What a training run folder holds: config, metrics, milestone index, DONE and non-finite markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from study.atomic import write_atomic, write_json
from study.config import ConfigError, first_difference
from study.identity import training_hash, training_identity as identity
from study.redact import redact
from study.weights import STATE


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: a property of the run, not a transient failure, so never retried."""


def run_dir_for(run_dir, width: int, seed: int, subdir: str = "train") -> Path:
    """The folder of one (width, seed) training run: RUN_DIR/train/wW-sS for the base ladder,
    RUN_DIR/<experiment>/train/wW-sS for a derived experiment."""
    return Path(run_dir) / subdir / f"w{width}-s{seed}"


def check_config(size_dir: Path, cfg_dict: dict) -> None:
    """Fail, naming the first differing key, if the run folder was trained with another config."""
    path = size_dir / "config.json"
    if not path.exists():
        return
    # The folder's copy is redacted (study.redact): compare like with like.
    diff = first_difference(identity(redact(json.loads(path.read_text()))), identity(redact(cfg_dict)))
    if diff and not any((size_dir / "checkpoints").glob(f"*/{STATE}")):
        # Nothing was trained under the old config (a run that failed before its first checkpoint): the folder
        # holds no result that the new config could mix with, so it starts under the new one.
        print(f"note: {size_dir} held no checkpoint of its old config ({diff[0]} differs): starting it anew",
              file=sys.stderr)
        path.unlink()
        return
    if diff:
        key, old, new = diff
        raise ConfigError(f"{size_dir} holds a run trained with {key}={old!r}, this config has {key}={new!r}: "
                          f"use a new run name (name=...) or --fresh to start this run over")


def write_config(size_dir: Path, cfg_dict: dict) -> None:
    """The resolved config of a new run (kept as first written: a resume may change operational keys)."""
    if not (size_dir / "config.json").exists():
        size_dir.mkdir(parents=True, exist_ok=True)
        write_json(size_dir / "config.json", redact(cfg_dict))  # no credential reaches a file


def done_summary(size_dir: Path, cfg_dict: dict) -> dict | None:
    """The final summary if this run already finished with this config, else None."""
    path = size_dir / "DONE"
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("config_hash") == training_hash(cfg_dict):
            return done["summary"]
    return None


def mark_done(size_dir: Path, cfg_dict: dict, summary: dict) -> None:
    write_json(size_dir / "DONE", {"config_hash": training_hash(cfg_dict), "summary": summary})


def load_milestones(size_dir) -> list[dict]:
    """The milestone index of a run: one row per milestone checkpoint, paths relative to the run folder."""
    path = Path(size_dir) / "milestones.json"
    return json.loads(path.read_text()) if path.exists() else []


def add_milestone(size_dir: Path, row: dict) -> None:
    """Append a milestone row (idempotent: a milestone already indexed is not added twice)."""
    rows = [r for r in load_milestones(size_dir) if r["train_images"] != row["train_images"]]
    write_json(size_dir / "milestones.json", sorted(rows + [row], key=lambda r: r["train_images"]))


def nonfinite_message(size_dir: Path) -> str | None:
    path = size_dir / "nonfinite.json"
    return json.loads(path.read_text())["message"] if path.exists() else None


def mark_nonfinite(size_dir: Path, record: dict) -> None:
    write_json(size_dir / "nonfinite.json", record)


def truncate_metrics(path: Path, max_images: int) -> None:
    """Drop metric rows logged after the checkpoint a run resumes from: they are about to be redone."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["train_images"] <= max_images:
                keep.append(line)
        except (ValueError, KeyError):  # a line cut short by a kill
            pass
    write_atomic(path, lambda f: f.write("".join(ln + "\n" for ln in keep)), binary=False)


def intact_milestones(size_dir, checksums: bool = False) -> list[dict]:
    """The milestone rows whose checkpoint is complete and whose files have their recorded sizes (and sums,
    if asked; loading a UNet checks the sums anyway): what a failed size can still be evaluated on."""
    from study.weights import CorruptCheckpointError, verify

    rows = []
    for row in load_milestones(size_dir):
        try:
            verify(Path(size_dir) / row["path"], checksums=checksums)
        except CorruptCheckpointError:
            continue
        rows.append(row)
    return rows


def size_status(size_dir, cfg_dict: dict | None = None) -> dict:
    """Where one training run stands: {"status", "milestones", "reason"}.

    status: "done" (finished, DONE marker for this config), "partial" (stopped early or failed, with intact
    milestones that can be evaluated and marked partial), "failed" (stopped with none), "missing" (never
    started). milestones: the intact milestone rows; reason: why it is not done (None when done)."""
    size_dir = Path(size_dir)
    if cfg_dict is not None and done_summary(size_dir, cfg_dict) is not None or \
            cfg_dict is None and (size_dir / "DONE").exists():
        return {"status": "done", "milestones": load_milestones(size_dir), "reason": None}
    if not size_dir.exists():
        return {"status": "missing", "milestones": [], "reason": "never started"}
    rows = intact_milestones(size_dir)
    reason = nonfinite_message(size_dir) or (
        f"training stopped at {rows[-1]['train_images']} images, before its final milestone" if rows
        else "training stopped before its first milestone")
    return {"status": "partial" if rows else "failed", "milestones": rows, "reason": reason}
