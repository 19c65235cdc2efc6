"""Checkpoints are verified on load: damaged files (truncated, altered, state.json cut short) are named,
moved aside, and resume falls back to the previous intact checkpoint; `latest` never shares a milestone's files."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel

from study.weights import CorruptCheckpointError, load_unet, verify
from trainers import checkpoint as ckpt
from trainers.rundir import add_milestone, mark_done, size_status


def _engine(seed: int):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
                                attention_head_dim=2, cross_attention_dim=16)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    ema = EMAModel([p.detach().clone() for p in unet.parameters()], decay=0.9)
    return SimpleNamespace(module=unet, optimizer=opt), ema


def _write(root, name, images, seed):
    engine, ema = _engine(seed)
    state = {"train_images": images, "train_steps": images // 32, "ema_step": 1, "world_size": 1}
    return ckpt.write(root, name, engine, ema, state, rank=0, world_size=1, partitioned=False)


def _resume(root):
    engine, ema = _engine(99)
    state = ckpt.resume(root, engine, ema, rank=0, world_size=1, partitioned=False)
    return state, engine


@pytest.fixture()
def two_milestones(tmp_path):
    root = tmp_path / "run" / "train" / "w8-s0" / "checkpoints"
    a = _write(root, ckpt.milestone_name(64), 64, seed=1)
    b = _write(root, ckpt.milestone_name(128), 128, seed=2)
    return root, a, b


def test_sizes_and_sums_are_recorded(two_milestones):
    root, a, _ = two_milestones
    files = json.loads((a / ckpt.STATE).read_text())[ckpt.FILES]
    assert {"raw.safetensors", "ema.safetensors", "unet.json", "optimizer-rank0.pt", "rng-rank0.safetensors"} <= set(files)
    assert files["ema.safetensors"]["bytes"] == (a / "ema.safetensors").stat().st_size
    assert len(files["ema.safetensors"]["sha256"]) == 64
    assert verify(a)["train_images"] == 64


def test_truncated_newest_checkpoint_falls_back_to_the_previous(two_milestones, capsys):
    root, a, b = two_milestones
    with open(b / "raw.safetensors", "r+b") as f:  # a real truncation, as a full disk or a kill leaves it
        f.truncate(100)
    state, engine = _resume(root)
    assert state["train_images"] == 64
    want = _engine(1)[0].module.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in engine.module.state_dict().items())
    err = capsys.readouterr().err
    assert "raw.safetensors is 100 bytes" in err and "moved it aside" in err
    assert not b.exists() and len(list(root.glob(".corrupt-milestone-0000000128-*"))) == 1
    assert _resume(root)[0]["train_images"] == 64  # a rerun does not trip on it again


def test_altered_bytes_of_the_same_size_are_caught(two_milestones):
    root, a, b = two_milestones
    data = bytearray((b / "ema.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (b / "ema.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="ema.safetensors is its SHA-256 differs"):
        load_unet(b)
    assert load_unet(b, weights="raw") is not None  # the other file is intact and still loads
    assert _resume(root)[0]["train_images"] == 64


def test_cut_state_json_is_moved_aside(two_milestones):
    root, a, b = two_milestones
    text = (b / ckpt.STATE).read_text()
    (b / ckpt.STATE).write_text(text[: len(text) // 2])
    assert _resume(root)[0]["train_images"] == 64
    assert not b.exists()


def test_every_checkpoint_damaged_means_a_fresh_start(two_milestones):
    root, a, b = two_milestones
    for d in (a, b):
        (d / "unet.json").unlink()
    assert _resume(root)[0] is None


def test_latest_never_shares_storage_with_a_milestone(tmp_path):
    root = tmp_path / "checkpoints"
    _write(root, ckpt.LATEST, 32, seed=1)
    m = _write(root, ckpt.milestone_name(64), 64, seed=2)
    ckpt.write_latest_from(root, m, rank=0, world_size=1)
    assert not (root / ckpt.LATEST).exists()  # superseded by the milestone: dropped, not hard-linked
    assert all(f.stat().st_nlink == 1 for f in m.iterdir())
    later = _write(root, ckpt.LATEST, 96, seed=3)
    assert {f.stat().st_ino for f in later.iterdir()}.isdisjoint(f.stat().st_ino for f in m.iterdir())
    ckpt.write_latest_from(root, m, rank=0, world_size=1)  # a newer latest is kept
    assert ckpt.complete(root)[-1] == (96, root / ckpt.LATEST)


def test_size_status_of_a_failed_size_lists_its_intact_milestones(two_milestones):
    root, a, b = two_milestones
    size_dir = root.parent
    assert size_status(size_dir.parent / "w16-s0")["status"] == "missing"
    for images, folder in ((64, a), (128, b)):
        add_milestone(size_dir, {"train_images": images, "path": f"checkpoints/{folder.name}"})
    st = size_status(size_dir)
    assert st["status"] == "partial" and [m["train_images"] for m in st["milestones"]] == [64, 128]
    with open(b / "ema.safetensors", "r+b") as f:
        f.truncate(10)
    st = size_status(size_dir)
    assert [m["train_images"] for m in st["milestones"]] == [64] and "before its final milestone" in st["reason"]
    (a / "raw.safetensors").unlink()
    assert size_status(size_dir)["status"] == "failed"
    mark_done(size_dir, {"data": {}, "text_encoder": {}, "autoencoder": {}, "model": {}, "train": {}}, {})
    assert size_status(size_dir)["status"] == "done"


def test_study_sample_on_a_truncated_checkpoint_is_one_line(two_milestones, tmp_path, monkeypatch, capsys):
    from cli import main as cli
    from study.config import to_dict
    from train_helpers import tiny_config

    root, a, b = two_milestones
    size_dir = root.parent
    (size_dir / "config.json").write_text(json.dumps(to_dict(tiny_config())))
    (size_dir / "metrics.jsonl").write_text("")
    with open(a / "ema.safetensors", "r+b") as f:
        f.truncate(1000)
    monkeypatch.delenv("LDM_SCALING_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["study", "sample", str(a), "--prompt", "a seven", "--out", str(tmp_path / "g.png")])
    with pytest.raises(SystemExit) as done:  # the real entry point, in-process
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(lines) == 1, lines
    assert "ema.safetensors is 1000 bytes" in lines[0] and f"traceback in {size_dir / 'errors.log'}" in lines[0]
    assert "CorruptCheckpointError" in (size_dir / "errors.log").read_text()


def test_a_checkpoint_that_finds_the_disk_full_is_one_line_and_leaves_nothing(tmp_path):
    import subprocess

    from study.errors import DiskFullError, user_message

    one = sum(f.stat().st_size for f in _write(tmp_path / "probe", "m", 64, seed=1).iterdir())
    mnt = tmp_path / "small"
    mnt.mkdir()
    size_k = int(one * 1.5) // 1024 + 64  # room for one checkpoint, not for two
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        first = _write(mnt, ckpt.milestone_name(64), 64, seed=1)
        with pytest.raises(DiskFullError) as err:
            _write(mnt, ckpt.milestone_name(128), 128, seed=2)
        msg = user_message(err.value)
        assert msg.startswith(f"no space left on the disk holding {mnt} (the write needs about ") and "MB free" in msg
        assert not list(mnt.glob(".tmp-*"))  # the half-written folder is gone, its space given back
        assert verify(first, [])["train_images"] == 64  # the live checkpoint is untouched
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
