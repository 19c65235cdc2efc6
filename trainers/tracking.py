"""Rank 0's record of a run: metrics.jsonl, Weights & Biases (imported only when used), a progress bar."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from study.identity import training_hash
from study.redact import redact
from study.runtime import wandb_mode
from trainers.rundir import truncate_metrics


class Tracker:
    """Writes one JSON line per log point, mirrors it to W&B and a progress bar; rank 0 only."""

    def __init__(self, size_dir: Path, cfg, cfg_dict: dict, width: int, seed: int, total_images: int,
                 resumed_images: int, progress: bool):
        self.path = size_dir / "metrics.jsonl"
        truncate_metrics(self.path, resumed_images)
        self.file = open(self.path, "a")
        self.run = None
        self.upload = bool(getattr(cfg.tracking, "upload_checkpoints", False))
        mode = wandb_mode(cfg.tracking.wandb_mode)
        if mode is not None:
            import wandb

            # wandb exports its service's address (WANDB_SERVICE) to the environment of the process that first
            # used it, and Ray workers inherit their driver's environment. A run must live in its own worker's
            # service: in a shared one, a killed worker's run stays registered and its resume is refused
            # ("run ID ... is in use").
            os.environ.pop("WANDB_SERVICE", None)

            job = f"{cfg_dict['recipe']['name']}-" if cfg_dict.get("recipe") else ""

            self.run = wandb.init(
                project=cfg.tracking.project, entity=cfg.tracking.entity, group=cfg.name,
                job_type=(cfg_dict.get("recipe") or {}).get("name", "train"),  # base runs: "train", as before
                name=f"{cfg.name}-{job}w{width}-s{seed}",
                # The same id on every rerun, so a resumed run continues one W&B run (ids allow [A-Za-z0-9_-]).
                id=re.sub(r"[^A-Za-z0-9_-]", "-", f"{cfg.name}"[:40]) + f"-w{width}-s{seed}-{training_hash(cfg_dict)}",
                resume="allow",
                dir=str(size_dir), mode=mode,
                config={**redact(cfg_dict), "width": width, "seed": seed}, settings=wandb.Settings(console="off"))
            self.run.define_metric("train_images")
            self.run.define_metric("*", step_metric="train_images")
        self.bar, self.name = None, f"w{width}-s{seed}"
        if progress:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(desc=self.name, total=total_images, unit="img")
            self.bar.update(resumed_images)

    def milestone(self, row: dict, folder: Path) -> None:
        """A milestone checkpoint as a W&B artifact of this run: a reference to its folder with each file's
        sha256, images seen and FLOPs (tracking.upload_checkpoints: the weights themselves)."""
        if self.run is None:
            return
        import wandb

        from study.weights import FILES, STATE

        state = json.loads((folder / STATE).read_text())
        files = state.get(FILES, {})
        meta = {"path": str(folder), "sha256": {k: v["sha256"] for k, v in files.items()},
                "train_images": row["train_images"], "train_flops": row.get("train_flops"),
                "width": row["width"], "seed": row["seed"], "params": row.get("params")}
        art = wandb.Artifact(f"checkpoint-{self.run.id}", type="checkpoint", metadata=meta)
        if self.upload:
            art.add_dir(str(folder))
        else:  # a reference stores the URI and a checksum, never the bytes
            art.add_reference(f"file://{folder.resolve()}", checksum=False)
        self.run.log_artifact(art, aliases=[f"images-{row['train_images']}", "latest"])

    def log(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log(row)
        if self.bar is not None:
            self.bar.set_description(f"{self.name} loss {row['loss']:.4f} {row['images_per_s']:.0f} img/s")
            self.bar.update(row["train_images"] - self.bar.n)

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            self.run.finish()
        if self.bar is not None:
            self.bar.close()
