"""Join the cluster the study runs on, or start a local Ray on this machine."""

from __future__ import annotations

import contextlib
import os
import time


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
    _start_local(lambda: ray.init(address="local", num_cpus=cfg.resources.num_cpus or os.cpu_count(),
                                  num_gpus=cfg.resources.num_gpus, include_dashboard=False, logging_level="WARNING",
                                  log_to_driver=worker_logs or bool(os.environ.get("LDM_SCALING_DEBUG"))))
    _started_local = ray.get_runtime_context().gcs_address
    return True


START_TRIES = 3
_START_TIMEOUT = "timed out during startup"  # Ray's words when its raylet does not come up


def _start_local(init, tries: int = START_TRIES, pause_s: float = 2.0) -> None:
    """Start the local Ray, trying again when it times out starting. A raylet waits a fixed 15 s for its
    dashboard agent's port file and exits when the agent (a Python process importing much of Ray) is slower, as it
    is on a loaded machine (ray-project/ray#65983); the failed try's processes are stopped before the next."""
    import psutil
    import ray

    me = psutil.Process()
    for attempt in range(1, tries + 1):
        before = {p.pid for p in me.children(recursive=True)}
        try:
            init()
            return
        except Exception as err:
            if _START_TIMEOUT not in str(err):
                raise
            _stop_new_children(me, before)
            ray.shutdown()
            if attempt == tries:
                from study.errors import UserError

                raise UserError(f"the local Ray did not start in {tries} tries (its raylet gave up waiting for its "
                                f"dashboard agent, which starts slowly on a loaded machine): let other heavy jobs "
                                f"finish and rerun the same command; Ray's own log: "
                                f"/tmp/ray/session_latest/logs/raylet.err") from err
            time.sleep(pause_s * attempt)


def _stop_new_children(me, before: set[int]) -> None:
    """Stop the processes a failed start left (the children that were not there before it)."""
    import psutil

    left = [p for p in me.children(recursive=True) if p.pid not in before]
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=10)


def hush_unread_failures() -> None:
    """The study stops on an error every running task or trial shares (a full disk): Ray would print each one's
    unread failure as an "Unhandled error" traceback as they are torn down. Ray reads this at each print."""
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"


_started_local: str | None = None  # the GCS address of the local Ray this module started, if any
