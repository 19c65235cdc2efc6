"""Reading a trained UNet from a checkpoint folder (written by trainers.checkpoint): JSON config plus
safetensors, nothing unpickled, every file checked against the sizes and SHA-256 sums recorded when it was
written. Core, so that evaluation and sampling need not import the trainer."""

from __future__ import annotations

import json
from pathlib import Path

from study.errors import UserError
from study.identity import sha256_file

STATE = "state.json"  # a checkpoint folder holds it only once complete (trainers.checkpoint.publish)
FILES = "files"  # state.json's record of every other file: {name: {"bytes": n, "sha256": hex}}


class CorruptCheckpointError(UserError):
    """A checkpoint file is missing, truncated or altered since it was written."""


class NotACheckpointError(CorruptCheckpointError, FileNotFoundError):
    """The folder holds no complete checkpoint (no state.json)."""


def manifest(folder: Path) -> dict:
    """Size and SHA-256 of every file of a checkpoint folder except state.json (which will hold this)."""
    return {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(Path(folder).iterdir()) if f.is_file() and f.name != STATE}


def read_state(folder: Path) -> dict:
    """A checkpoint's state.json; a damaged one raises CorruptCheckpointError."""
    path = Path(folder) / STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotACheckpointError(f"{folder} is not a complete checkpoint (no {STATE}): pass a milestone "
                                     f"folder listed in the run's milestones.json") from None
    except (OSError, ValueError) as err:
        raise CorruptCheckpointError(f"checkpoint {folder}: {STATE} is unreadable ({err}): use another milestone "
                                     f"of the run (milestones.json) or rerun training to rewrite it") from None
    if not isinstance(state, dict) or "train_images" not in state:
        raise CorruptCheckpointError(f"checkpoint {folder}: {STATE} has no train_images: use another milestone")
    return state


def verify(folder, names=None, checksums: bool = True) -> dict:
    """Check the named files (default: all recorded) against state.json's sizes and, if asked, SHA-256
    sums; return the state. Checkpoints written before sums were recorded pass unchecked."""
    folder = Path(folder)
    state = read_state(folder)
    recorded = state.get(FILES)
    if recorded is None:
        return state
    for name in (recorded if names is None else names):
        path, want = folder / name, recorded.get(name)
        problem = None
        if want is None:
            problem = "not recorded when the checkpoint was written"
        elif not path.is_file():
            problem = "missing"
        elif path.stat().st_size != want["bytes"]:
            problem = f"{path.stat().st_size} bytes, {want['bytes']} written (truncated or overwritten)"
        elif checksums and sha256_file(path) != want["sha256"]:
            problem = "its SHA-256 differs from the one recorded when it was written (altered or damaged)"
        if problem:
            raise CorruptCheckpointError(f"checkpoint {folder}: {name} is {problem}: use another milestone of the "
                                         f"run (milestones.json) or rerun training to rewrite it")
    return state


def load_unet(checkpoint_dir, weights: str = "ema"):
    """A UNet2DConditionModel from a checkpoint folder: JSON config plus safetensors, verified, nothing unpickled."""
    from diffusers import UNet2DConditionModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if weights not in ("ema", "raw"):
        raise UserError(f"weights={weights!r}: expected 'ema' or 'raw'")
    folder = Path(checkpoint_dir)
    name = f"{weights}.safetensors"
    checked = FILES in verify(folder, ["unet.json", name])
    try:
        config = json.loads((folder / "unet.json").read_text())
        unet = UNet2DConditionModel.from_config(config)
        unet.load_state_dict(load_file(folder / name))
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        if checked:  # the files are as written: the failure is ours, not the checkpoint's
            raise
        raise CorruptCheckpointError(f"checkpoint {folder}: cannot read unet.json / {name} ({str(err)[:200]}): "
                                     f"use another milestone of the run (milestones.json)") from err
    return unet.eval()
