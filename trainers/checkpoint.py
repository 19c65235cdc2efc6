"""Atomic, safely loadable checkpoints: safetensors weights, weights-only optimizer state, no pickled code."""

from __future__ import annotations

import enum
import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


LATEST = "latest"
from study.weights import STATE, load_unet  # noqa: F401  (the reader lives in the core; re-exported)


def milestone_name(images: int) -> str:
    return f"milestone-{images:010d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Move a fully written, fsynced temp folder into place; a reader sees the old folder or the new one."""
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    old = None
    if final.exists():  # os.replace cannot overwrite a non-empty folder: move the old one aside first
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover(root: Path) -> None:
    """Clean up after a killed write: drop temp folders; restore `latest` if the kill fell mid-swap."""
    root.mkdir(parents=True, exist_ok=True)
    for tmp in root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(root.glob(f".old-{LATEST}-*"), key=lambda p: p.stat().st_mtime)
    if olds and not (root / LATEST).exists():
        os.replace(olds.pop(), root / LATEST)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def complete(root: Path) -> list[tuple[int, Path]]:
    """(train_images, folder) of every complete checkpoint, oldest first."""
    found = []
    for d in [root / LATEST, *root.glob("milestone-*")]:
        if (d / STATE).is_file():
            found.append((json.loads((d / STATE).read_text())["train_images"], d))
    return sorted(found, key=lambda x: (x[0], x[1].name != LATEST))


def link_copy(src: Path, tmp: Path) -> None:
    """Fill tmp with src's files: hard links (files are never rewritten in place), else copies."""
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)


# --- optimizer state: keep only what torch.load(weights_only=True) can read back ------------------

_DROP = object()


def _plain(x):
    """Tensors, numbers, strings and containers of them; anything else (loss scalers, enums) is dropped."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, enum.Enum):
        return _DROP
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, dict):
        out = {k: _plain(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(x, (list, tuple)):
        out = [_plain(v) for v in x]
        return _DROP if any(v is _DROP for v in out) else type(x)(out) if isinstance(x, list) else tuple(out)
    return _DROP


def _merge(live, saved):
    # What was dropped on save is configuration (loss-scaler objects, ZeRO layout records) that the live
    # optimizer, built from the same config, already holds.
    if isinstance(live, dict) and isinstance(saved, dict):
        return {**live, **{k: _merge(live.get(k), v) for k, v in saved.items()}}
    return saved


def save_optimizer(optimizer, path: Path) -> None:
    torch.save(_plain(optimizer.state_dict()), path)


def load_optimizer(optimizer, path: Path, world_size: int) -> None:
    """Load a saved optimizer state (ours, DeepSpeed's ZeRO or its mixed-precision wrappers)."""
    import inspect

    saved = torch.load(path, map_location="cpu", weights_only=True)
    merged = _merge(optimizer.state_dict(), saved)
    params = inspect.signature(optimizer.load_state_dict).parameters
    if "state_dict_list" in params:  # ZeRO 1/2 or BF16_Optimizer: this rank's own partition, fp32 master kept
        optimizer.load_state_dict(state_dict_list=[merged] * world_size, load_optimizer_states=True,
                                  load_from_fp32_weights=True)
    elif "load_optimizer_states" in params:  # FP16_Optimizer (fp16, or bf16 without ZeRO)
        optimizer.load_state_dict(merged, load_optimizer_states=True)
    else:
        optimizer.load_state_dict(merged)


# --- weights ------------------------------------------------------------------------------------------

def save_weights(module: torch.nn.Module, ema, folder: Path) -> None:
    """Raw weights, EMA weights (the parameters replaced by their averages) and the UNet's JSON config."""
    raw = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(raw, folder / "raw.safetensors")
    names = [n for n, _ in module.named_parameters()]
    avg = dict(raw) | {n: s.detach().cpu().contiguous() for n, s in zip(names, ema.shadow_params)}
    save_file(avg, folder / "ema.safetensors")
    (folder / "unet.json").write_text(json.dumps(dict(module.config), indent=1, default=list))


def load_ema(ema, module: torch.nn.Module, folder: Path, ema_step: int) -> None:
    avg = load_file(folder / "ema.safetensors")
    for (name, _), shadow in zip(module.named_parameters(), ema.shadow_params):
        shadow.copy_(avg[name])
    ema.optimization_step = ema_step


def save_rng(folder: Path, rank: int) -> None:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    save_file(states, folder / f"rng-rank{rank}.safetensors")


def load_rng(folder: Path, rank: int) -> None:
    path = folder / f"rng-rank{rank}.safetensors"
    if path.exists():
        states = load_file(path)
        torch.set_rng_state(states["cpu"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])


# --- collective save and resume (every rank calls these at the same step) ---------------------------

def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def write(root: Path, name: str, engine, ema, state: dict, rank: int, world_size: int, partitioned: bool) -> Path:
    """Write checkpoint `name` atomically: each rank adds its own files to a temp folder, rank 0 publishes."""
    final, tmp = root / name, root / f".tmp-{name}-{state['train_images']:010d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(world_size)
    if partitioned or rank == 0:  # ZeRO >= 1: each rank holds a different optimizer partition
        save_optimizer(engine.optimizer, tmp / f"optimizer-rank{rank}.pt")
    save_rng(tmp, rank)
    _barrier(world_size)  # every rank's files are in before rank 0 makes the folder visible
    if rank == 0:
        save_weights(engine.module, ema, tmp)
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        publish(tmp, final)
    _barrier(world_size)
    return final


def write_latest_from(root: Path, src: Path, rank: int, world_size: int) -> None:
    """Make `latest` a copy (hard links) of a just-written milestone."""
    if rank == 0:
        tmp = root / f".tmp-{LATEST}-from-{src.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        link_copy(src, tmp)
        publish(tmp, root / LATEST)
    _barrier(world_size)


def resume(root: Path, engine, ema, rank: int, world_size: int, partitioned: bool) -> dict | None:
    """Load the newest complete checkpoint into the engine (and rank 0's EMA); None when there is none."""
    if rank == 0:
        recover(root)
    _barrier(world_size)
    found = complete(root)
    if not found:
        return None
    folder = found[-1][1]
    state = json.loads((folder / STATE).read_text())
    if partitioned and state["world_size"] != world_size:
        raise ValueError(f"{folder} holds ZeRO optimizer partitions of {state['world_size']} workers, this run "
                         f"has {world_size}: resume with train.num_workers={state['world_size']}")
    engine.module.load_state_dict(load_file(folder / "raw.safetensors"))
    load_optimizer(engine.optimizer, folder / f"optimizer-rank{rank if partitioned else 0}.pt", world_size)
    load_rng(folder, rank)
    if ema is not None:
        load_ema(ema, engine.module, folder, state["ema_step"])
    return state
