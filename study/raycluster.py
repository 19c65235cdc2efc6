"""Join the cluster the study runs on, or start a local Ray on this machine."""

from __future__ import annotations

import os


def ensure_ray(cfg, worker_logs: bool = False) -> bool:
    """Connect to resources.ray_address / RAY_ADDRESS, else start a local Ray; True if this call
    started a local instance (a fixed machine: work that does not fit would wait forever).

    worker_logs: forward the workers' output to this console (a single training run shows its
    progress bar from its rank-0 worker; the grids show their own bars instead)."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.resources.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        # On a cluster the job's runtime env carries WANDB_API_KEY (ray job submit --runtime-env-json);
        # it is never written into a config or a log by us.
        ray.init(address=address)
        return False
    # Local workers inherit this process's environment (WANDB_MODE, LDM_* paths). Unless forwarded,
    # their logs stay in Ray's session folder (/tmp/ray/session_latest/logs) so the console shows the
    # study's own progress; errors still surface through the trials and tasks that raise them.
    os.environ.setdefault("WANDB_SILENT", "true")
    ray.init(num_cpus=cfg.resources.num_cpus or os.cpu_count(), num_gpus=cfg.resources.num_gpus,
             include_dashboard=False, logging_level="WARNING",
             log_to_driver=worker_logs or bool(os.environ.get("LDM_SCALING_DEBUG")))
    return True
