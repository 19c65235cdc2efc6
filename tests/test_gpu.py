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


# --- the memory plan against the GPU (study.memory; issue 25) -------------------------------------------------

def _paper(*overrides):
    from study.config import load_config

    # This machine's GPU is the plan's only kind (no cluster file); one worker, as on a one-GPU machine.
    return load_config("paper", ["resources.cluster_yaml=null", "train.num_workers=1", "eval.clip_path=null",
                                 *overrides])


@pytest.fixture
def single_rank(monkeypatch):
    """A one-rank process group, as trainers.loop.train_inline sets up, for a bare DeepSpeed engine."""
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl", store=torch.distributed.HashStore(), rank=0, world_size=1)
    torch.cuda.set_device(0)


@pytest.mark.parametrize("width", [128, 320])
def test_memory_plan_predicts_the_peak_of_a_training_step(width, single_rank):
    from diffusers.training_utils import EMAModel

    from study.config import from_dict, to_dict
    from study.ladder import LADDERS, Geometry, build_unet
    from study.memory import chosen, memory_plan
    from study.schedulers import training_scheduler
    from trainers.diffusion import diffusion_loss
    from trainers.engine import initialize
    from trainers.run import local_kinds

    cfg = _paper("train.batch_size=256")
    row = chosen(memory_plan(cfg, local_kinds(), widths=[width], experiments=["base"]), "base", width)
    assert row is not None
    # One optimizer step per micro-batch (accumulation adds no memory): the engine's batch is the micro-batch.
    d = to_dict(cfg)
    tc = from_dict({**d, "train": {**d["train"], "batch_size": row.micro_batch, "grad_accum": 1}}).train
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    unet = build_unet(LADDERS["paper"], width, Geometry(4, 64, 768, 77))
    if row.checkpointing:
        unet.enable_gradient_checkpointing()
    engine = initialize(unet, tc, 1, "bf16")
    params = list(engine.module.parameters())
    ema = EMAModel([p.detach().float() for p in params], decay=0.9999, foreach=True)
    sched = training_scheduler("epsilon")
    b = row.micro_batch
    latents, ctx = torch.randn(b, 4, 64, 64, device="cuda"), torch.randn(b, 77, 768, device="cuda")
    for step in range(2):  # the second step has the optimizer's moments allocated: the steady peak
        gen = torch.Generator(device="cuda").manual_seed(step)
        loss = diffusion_loss(engine, sched, latents, ctx, ctx[:1], 0.1, gen, torch.bfloat16)
        engine.backward(loss)
        engine.step()
        ema.step(params)
    peak = torch.cuda.max_memory_allocated() - base
    print(f"c={width} micro-batch {b} checkpointing {row.checkpointing}: peak {peak / 1e9:.2f} GB, "
          f"plan {row.train_gb:.2f} GB ({row.train_gb * 1e9 / peak - 1:+.1%})")
    assert abs(row.train_gb * 1e9 / peak - 1) < 0.15


def test_train_c320_from_shards_in_bf16_prints_images_per_s_and_mfu(tmp_path):
    import importlib.util
    from pathlib import Path

    import ray

    import trainers
    from test_train_shards import shards_from
    from train_helpers import fake_prepared

    prep = shards_from(fake_prepared(tmp_path / "legacy", n=1024, c=4, h=64, t=77, d=768), tmp_path / "prep", 256)
    cfg = _paper("runs_dir=" + str(tmp_path), "name=gpu", "model.widths=[320]", "train.batch_size=64",
                 "train.total_images=1024", "train.milestones=[1.0]", "train.warmup_images=0",
                 "train.checkpoint_every_images=0", "train.use_gpu=true", "train.cpus_per_worker=1",
                 "tracking.wandb_mode=disabled")
    try:
        s = trainers.train_size(cfg, 320, 0, tmp_path / "run", prep, progress=False, inline=True)
    finally:
        ray.shutdown()
    spec = importlib.util.spec_from_file_location(
        "train_throughput", Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in bench.PEAK_TFLOPS.items() if k in name), None)
    rate = s["train_images"] / s["train_s"]  # start-up and the first (compiling) steps included: a floor
    mfu = f"{3 * s['gflops'] * 1e9 * rate / (peak * 1e12):.1%}" if peak else "n/a"
    print(f"c=320 bf16 from shards on {name}: {rate:.1f} images/s, MFU {mfu}, grad_accum {s['grad_accum']}, "
          f"checkpointing {s['checkpointing']}")
    assert s["precision"] == "bf16" and rate > 0


def test_an_evaluation_batch_of_the_largest_width_that_fits_one_gpu():
    from diffusers import AutoencoderKL

    from study.ladder import LADDERS, Geometry, build_unet
    from study.memory import FEATURE_PARAMS, GB, memory_plan
    from trainers.memory_measure import SD_VAE
    from study.sampling import sample
    from trainers.run import local_kinds

    cfg = _paper()
    rows = [r for r in memory_plan(cfg, local_kinds(), experiments=["base"]) if r.eval_fits]
    row = max(rows, key=lambda r: r.width)
    n = row.eval_batch
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    unet = build_unet(LADDERS["paper"], row.width, Geometry(4, 64, 768, 77)).cuda().eval()
    vae = AutoencoderKL(**SD_VAE).cuda().eval()
    with torch.no_grad():
        latents = sample(unet, "ddim", 2, 7.5, torch.randn(n, 77, 768), torch.randn(1, 77, 768),
                         torch.randn(n, 4, 64, 64, device="cuda"))
        vae.decode(latents[:256] / 0.18215)
    peak = torch.cuda.max_memory_allocated() - base
    plan = row.eval_gb * GB - 4 * FEATURE_PARAMS["inception"]  # no Inception loaded here
    print(f"evaluation batch {n} (x2 guided) of c={row.width}: peak {peak / 1e9:.2f} GB, plan {plan / 1e9:.2f} GB")
    assert abs(plan / peak - 1) < 0.15
