"""Join the cluster the study runs on, or start a local Ray on this machine."""

from __future__ import annotations

import os


def ensure_ray(cfg, worker_logs: bool = False) -> bool:
    """Connect to resources.ray_address / RAY_ADDRESS, else start a local Ray; True if the Ray this process
    uses is a local instance this module started, by this call or an earlier one (a fixed machine: work
    that does not fit would wait forever, so callers check it first).

    worker_logs: forward the workers' output to this console (a single training run shows its
    progress bar from its rank-0 worker; the grids show their own bars instead)."""
    import ray

    global _started_local
    if ray.is_initialized():
        return _started_local is not None and _started_local == ray.get_runtime_context().gcs_address
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
    # address="local": a new instance even if another Ray runs on this machine (ray.init() would join it).
    ray.init(address="local", num_cpus=cfg.resources.num_cpus or os.cpu_count(), num_gpus=cfg.resources.num_gpus,
             include_dashboard=False, logging_level="WARNING",
             log_to_driver=worker_logs or bool(os.environ.get("LDM_SCALING_DEBUG")))
    _started_local = ray.get_runtime_context().gcs_address
    return True


def hush_unread_failures() -> None:
    """The study stops on an error every running task or trial shares (a full disk): Ray would print each one's
    unread failure as an "Unhandled error" traceback as they are torn down. Ray reads this at each print."""
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"


_started_local: str | None = None  # the GCS address of the local Ray this module started, if any
