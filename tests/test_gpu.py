"""GPU checks (deselected by default; `make test-gpu` runs them on a machine with CUDA)."""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_sampling_on_gpu_matches_cpu():
    from study.ladder import LADDERS, Geometry, build_unet
    from study.sampling import sample

    torch.manual_seed(0)
    unet = build_unet(LADDERS["tiny"], 16, Geometry(4, 8, 32, 6)).eval()
    cond, uncond = torch.randn(4, 6, 32), torch.randn(1, 6, 32)
    noise = torch.randn(4, 4, 8, 8)
    # TF32 would make the two devices differ by more than rounding: compare true fp32.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for sampler in ("ddim", "dpmsolver++"):
        cpu = sample(unet, sampler, 8, 3.0, cond, uncond, noise)
        gpu = sample(unet.cuda(), sampler, 8, 3.0, cond.cuda(), uncond.cuda(), noise.cuda()).cpu()
        unet.cpu()
        torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_train_one_size_in_bf16_on_gpu(smoke_prepared, smoke_overrides, tmp_path):
    import ray

    from study.config import load_config
    from trainers import load_milestones, load_unet, train_size

    _, prep = smoke_prepared
    cfg = load_config("smoke", [*smoke_overrides, f"runs_dir={tmp_path}", "train.use_gpu=true",
                                "train.total_images=512", "train.milestones=[0.5,1.0]"])
    try:
        summary = train_size(cfg, 8, 0, tmp_path / "smoke", prep.dir, progress=False)
    finally:
        ray.shutdown()
    assert summary["precision"] == "bf16"
    rows = load_milestones(tmp_path / "smoke" / "train" / "w8-s0")
    assert [r["train_images"] for r in rows] == [256, 512]
    unet = load_unet(tmp_path / "smoke" / "train" / "w8-s0" / rows[-1]["path"])
    assert all(torch.isfinite(p).all() for p in unet.parameters())
