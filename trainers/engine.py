"""DeepSpeed set-up from the study config: ZeRO stage, precision, micro-batch, accumulation, clipping."""

from __future__ import annotations

import torch

from study.config import ConfigError


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """`auto` means bf16 on GPU (as the paper's A100 runs would) and fp32 on CPU."""
    if precision == "auto":
        return "bf16" if use_gpu else "fp32"
    if precision == "fp16" and not use_gpu:
        raise ConfigError("config key 'train.precision' = 'fp16': fp16 needs a GPU; use fp32 or auto on CPU")
    return precision


def micro_batch(train_cfg, world_size: int) -> int:
    """Images per worker per forward pass: global batch / (grad_accum x workers)."""
    return train_cfg.batch_size // (train_cfg.grad_accum * world_size)


def deepspeed_config(train_cfg, world_size: int, precision: str) -> dict:
    """The DeepSpeed config of one run; the optimizer is ours (a torch AdamW), so none is named here."""
    if train_cfg.zero_stage == 3:
        # Stage 3 shards the parameters themselves: the EMA and safetensors checkpoints need them whole.
        raise ConfigError("config key 'train.zero_stage' = 3 is not supported by the trainer (EMA and "
                          "checkpoints need whole parameters): use 0, 1 or 2")
    return {
        "train_batch_size": train_cfg.batch_size,
        "train_micro_batch_size_per_gpu": micro_batch(train_cfg, world_size),
        "gradient_accumulation_steps": train_cfg.grad_accum,
        "gradient_clipping": float(train_cfg.grad_clip),
        "zero_optimization": {"stage": train_cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,  # we log ourselves, in images
        "wall_clock_breakdown": False,
    }


def _skip_shm_comm_op() -> None:
    # DeepSpeed's TorchBackend JIT-compiles a shared-memory all-reduce (about 60-100 s on first use,
    # cached under ~/.cache/torch_extensions) whenever it is created. Only `inference_all_reduce`
    # (DeepSpeed inference's tensor parallelism) ever uses it; training all-reduces go through
    # torch.distributed (gloo on CPU, NCCL on GPU). Marking it incompatible skips the build.
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def initialize(unet: torch.nn.Module, train_cfg, world_size: int, precision: str):
    """Wrap the UNet and a torch AdamW in a DeepSpeed engine (no CPU-Adam build: the optimizer is ours)."""
    import deepspeed

    _skip_shm_comm_op()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                                  betas=(train_cfg.adam_beta1, train_cfg.adam_beta2))
    engine, *_ = deepspeed.initialize(model=unet, optimizer=optimizer,
                                      config=deepspeed_config(train_cfg, world_size, precision))
    return engine


def set_lr(engine, lr: float) -> None:
    """Set the learning rate of every parameter group (ZeRO wrappers expose the inner groups)."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def module_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
