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


def own_clipping(train_cfg, precision: str) -> bool:
    """Whether we clip (fp32 without ZeRO) rather than DeepSpeed.

    DeepSpeed clips that case with a Python loop over every tensor (about 3 % of a small CPU step);
    torch's clip_grad_norm_ is the same global-norm clip in a few fused ops. The wrappers used
    for ZeRO and bf16/fp16 clip flat buffers and stay with DeepSpeed.
    """
    return train_cfg.zero_stage == 0 and precision == "fp32" and train_cfg.grad_clip > 0


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
        "gradient_clipping": 0.0 if own_clipping(train_cfg, precision) else float(train_cfg.grad_clip),
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
    if world_size == 1 and train_cfg.zero_stage == 0:
        # One rank has nothing to all-reduce; DeepSpeed would still copy every gradient through a buffer.
        # (ZeRO needs this path even alone: it moves gradients into its partitions there.)
        engine.enable_backward_allreduce = False
    return engine


def optimizer_step(engine, params, train_cfg, precision: str, boundary: bool) -> None:
    """DeepSpeed's step (an update only at the accumulation boundary), clipping first where it is ours."""
    if boundary and own_clipping(train_cfg, precision):
        torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)  # gradients are all-reduced by now
    engine.step()


def set_lr(engine, lr: float) -> None:
    """Set the learning rate of every parameter group (ZeRO wrappers expose the inner groups)."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def module_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
