"""The post-hoc EMA during training (study.phema): the power-function profiles updated after every step, their
state saved with every checkpoint (so a resumed run continues them exactly) and snapshotted train.phema_snapshots
times over the run for `study ema`. Each rank tracks its own share of the tensors (by size, fixed by the model),
so the profiles cost 4 bytes per parameter per profile spread over the ranks, not on one GPU."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from study.atomic import write_atomic
from study.memory import FOREACH_MAX_PARAMS
from study.phema import STATE_FILE, PowerEMA, pack, snapshot_path, unpack


def ema_foreach(params) -> bool:
    """Whether the training EMA updates all tensors at once (a model-sized temporary) or one by one."""
    return sum(p.numel() for p in params) < FOREACH_MAX_PARAMS


def shares(module: torch.nn.Module, world: int) -> list[list[str]]:
    """The parameter names each rank tracks: largest tensors first, each to the least-loaded rank."""
    load, out = [0] * world, [[] for _ in range(world)]
    for name, p in sorted(module.named_parameters(), key=lambda x: (-x[1].numel(), x[0])):
        r = load.index(min(load))
        out[r].append(name)
        load[r] += p.numel()
    return out


class PostHocEMA:
    def __init__(self, module: torch.nn.Module, sigma_rels, total_images: int, snapshots: int, size_dir: Path,
                 rank: int = 0, world: int = 1):
        mine = set(shares(module, world)[rank])
        named = [(n, p) for n, p in module.named_parameters() if n in mine]
        self.names = [n for n, _ in named]
        self.ema = PowerEMA([p for _, p in named], sigma_rels)
        self.every = max(1, total_images // snapshots)
        self.size_dir = Path(size_dir)
        self.part = "" if world == 1 else f"-rank{rank}of{world}"

    def step(self, images: int, batch: int) -> None:
        """Fold in the weights after a step; snapshot when the run crosses the next snapshot point."""
        self.ema.update(images, batch)
        if images // self.every > (images - batch) // self.every:
            self._write(snapshot_path(self.size_dir, images, self.part))

    def save(self, folder: Path) -> None:
        """This rank's profiles into a checkpoint folder being written."""
        save_file(pack(self.ema, self.names), Path(folder) / STATE_FILE.replace(".", f"{self.part}.", 1))

    def load(self, folder: Path) -> bool:
        """Continue the profiles from a checkpoint; False when it holds none of this rank's (written before
        post-hoc EMA, or by another number of workers: the profiles then start from these weights)."""
        path = Path(folder) / STATE_FILE.replace(".", f"{self.part}.", 1)
        if not path.is_file():
            return False
        self.ema.load(unpack(load_file(path)), self.names)
        return True

    def _write(self, path: Path) -> None:
        from study.errors import disk_full_error, is_disk_full

        data = _bytes(pack(self.ema, self.names))
        try:
            write_atomic(path, lambda f: f.write(data))
        except OSError as err:  # one line naming the folder and the space it needed, as a checkpoint's
            if is_disk_full(err):
                raise disk_full_error(path.parent, len(data)) from err
            raise


def _bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)
