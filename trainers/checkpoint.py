"""Atomic, safely loadable, verified checkpoints: safetensors weights, weights-only optimizer state, no
pickled code; state.json records every file's size and SHA-256, and resume skips a damaged checkpoint."""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


LATEST = "latest"
from study.weights import FILES, STATE, CorruptCheckpointError, load_unet, manifest, verify  # noqa: F401


def milestone_name(images: int) -> str:
    return f"milestone-{images:010d}"


def loss_name(images: int) -> str:
    """A loss-only budget's weights-only checkpoint (train.loss_milestones): never a resume point."""
    return f"loss-{images:010d}"


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
    """(train_images, folder) of every complete checkpoint, oldest first (an unreadable state.json: left out)."""
    found = []
    for d in [root / LATEST, *root.glob("milestone-*")]:
        if (d / STATE).is_file():
            try:
                found.append((int(json.loads((d / STATE).read_text())["train_images"]), d))
            except (OSError, ValueError, KeyError, TypeError):
                pass
    return sorted(found, key=lambda x: (x[0], x[1].name != LATEST))


def quarantine(folder: Path, reason: str) -> Path:
    """Move a damaged checkpoint aside (ROOT/.corrupt-NAME-TIME, kept for inspection) and say so."""
    dest = folder.with_name(f".corrupt-{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    os.replace(folder, dest)
    print(f"warning: {reason}; moved it aside to {dest}", file=sys.stderr, flush=True)
    return dest


def newest_intact(root: Path) -> Path | None:
    """The newest checkpoint whose files match their recorded sizes and sums; damaged newer ones (and any
    with an unreadable state.json) are quarantined on the way, so a rerun never trips on them again."""
    readable = {f for _, f in complete(root)}
    for d in [root / LATEST, *root.glob("milestone-*")]:
        if (d / STATE).is_file() and d not in readable:
            quarantine(d, f"checkpoint {d}: {STATE} is unreadable")
    for _, folder in reversed(complete(root)):
        try:
            verify(folder)
            return folder
        except CorruptCheckpointError as err:
            quarantine(folder, f"{err}; resuming from the previous checkpoint")
    return None


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


EXTRA = "extra.safetensors"  # a recipe's own state (e.g. distillation's target network), rank 0


def write(root: Path, name: str, engine, ema, state: dict, rank: int, world_size: int, partitioned: bool,
          recipe=None, phema=None) -> Path:
    """Write checkpoint `name` atomically: each rank adds its own files to a temp folder, rank 0 publishes."""
    final, tmp = root / name, root / f".tmp-{name}-{state['train_images']:010d}"
    try:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier(world_size)
        if partitioned or rank == 0:  # ZeRO >= 1: each rank holds a different optimizer partition
            save_optimizer(engine.optimizer, tmp / f"optimizer-rank{rank}.pt")
        save_rng(tmp, rank)
        if phema is not None:  # each rank's share of the post-hoc EMA profiles (trainers.phema_track)
            phema.save(tmp)
        _barrier(world_size)  # every rank's files are in before rank 0 makes the folder visible
        if rank == 0:
            save_weights(engine.module, ema, tmp)
            extra = recipe.extra_state() if recipe is not None else {}
            if extra:
                save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, tmp / EXTRA)
            # Sizes and sums of every rank's files, recorded before the folder becomes visible (resume verifies).
            (tmp / STATE).write_text(json.dumps({**state, FILES: manifest(tmp)}, indent=1))
            publish(tmp, final)
    except Exception as err:
        from study.errors import disk_full_error, is_disk_full

        if not is_disk_full(err):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # give the space back; the live checkpoints are untouched
        raise disk_full_error(root, checkpoint_bytes(engine, ema)) from err
    _barrier(world_size)
    return final


def write_weights(root: Path, name: str, engine, ema, state: dict, rank: int, world_size: int) -> Path:
    """Write a weights-only checkpoint atomically (rank 0): the raw and EMA weights, the UNet's config and state.json
    with their sums; what an evaluation reads (study.weights.load_unet), not what a resume needs (no optimizer, RNG
    or post-hoc EMA state: `complete` never lists it). A loss-only budget's, a third of a milestone's bytes."""
    final, tmp = root / name, root / f".tmp-{name}-{state['train_images']:010d}"
    if rank == 0:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_weights(engine.module, ema, tmp)
            (tmp / STATE).write_text(json.dumps({**state, FILES: manifest(tmp)}, indent=1))
            publish(tmp, final)
        except Exception as err:
            from study.errors import disk_full_error, is_disk_full

            if not is_disk_full(err):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_full_error(root, checkpoint_bytes(engine, ema)) from err
    _barrier(world_size)
    return final


def checkpoint_bytes(engine, ema) -> int:
    """About what one checkpoint takes on disk: the weights, the EMA and Adam's two moments (fp32 each)."""
    params = sum(p.numel() for p in engine.module.parameters())
    return 4 * params * (1 + (ema is not None) + 2)


def write_latest_from(root: Path, src: Path, rank: int, world_size: int) -> None:
    """After milestone `src` is written, drop a `latest` that is no newer: the milestone is now the newest
    checkpoint and resume takes the newest intact one of either kind. (`latest` used to be a hard-linked
    copy of the milestone, so one damaged file damaged both; now the two never share storage.)"""
    if rank == 0:
        latest = root / LATEST
        try:
            older = json.loads((latest / STATE).read_text())["train_images"] <= verify(src, [])["train_images"]
        except (OSError, ValueError, KeyError):
            older = latest.exists()
        if older:
            old = root / f".old-{LATEST}-{uuid.uuid4().hex[:8]}"
            os.replace(latest, old)
            shutil.rmtree(old, ignore_errors=True)
    _barrier(world_size)


def resume(root: Path, engine, ema, rank: int, world_size: int, partitioned: bool, recipe=None,
           phema=None) -> dict | None:
    """Load the newest complete checkpoint into the engine (and rank 0's EMA); None when there is none."""
    if rank == 0:
        recover(root)
        newest_intact(root)  # rank 0 verifies and quarantines, so every rank sees the same newest checkpoint
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
    if phema is not None:
        phema.load(folder)  # a checkpoint from before post-hoc EMA: the profiles start from these weights
    if recipe is not None and (folder / EXTRA).is_file():  # every rank: the recipe's state is the same everywhere
        recipe.load_extra_state(load_file(folder / EXTRA))
    return state
