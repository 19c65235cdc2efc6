"""Rank 0's post-hoc EMA during training (study.phema): the power-function profiles updated after every step,
their state saved with every checkpoint (so a resumed run continues them exactly) and snapshotted
train.phema_snapshots times over the run for `study ema`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from study.atomic import write_atomic
from study.phema import STATE_FILE, PowerEMA, pack, snapshot_path, unpack


class PostHocEMA:
    def __init__(self, module: torch.nn.Module, sigma_rels, total_images: int, snapshots: int, size_dir: Path):
        self.names = [n for n, _ in module.named_parameters()]
        self.ema = PowerEMA([p for _, p in module.named_parameters()], sigma_rels)
        self.every = max(1, total_images // snapshots)
        self.size_dir = Path(size_dir)

    def step(self, images: int, batch: int) -> None:
        """Fold in the weights after a step; snapshot when the run crosses the next snapshot point."""
        self.ema.update(images, batch)
        if images // self.every > (images - batch) // self.every:
            self._write(snapshot_path(self.size_dir, images))

    def save(self, folder: Path) -> None:
        """The profiles' state into a checkpoint folder being written."""
        save_file(pack(self.ema, self.names), Path(folder) / STATE_FILE)

    def load(self, folder: Path) -> bool:
        """Continue the profiles from a checkpoint; False when it holds none (written before post-hoc EMA)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return False
        self.ema.load(unpack(load_file(path)), self.names)
        return True

    def _write(self, path: Path) -> None:
        tensors = pack(self.ema, self.names)
        write_atomic(path, lambda f: f.write(_bytes(tensors)))


def _bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)
