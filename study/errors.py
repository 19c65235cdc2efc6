"""One error path for users: a failure the user can fix becomes one line naming the file or key and the
fix (exit code 2), with the traceback kept in a log file for bug reports; a bug keeps its traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import traceback
from pathlib import Path

LOG_NAME = "errors.log"
# Our own packages: a ValueError raised in their code is a message we wrote for the user; one raised
# inside a library is treated as a bug (its traceback is printed).
OWN_PACKAGES = ("study", "trainers", "sweeps", "analysis")

_run_dir: Path | None = None


class UserError(ValueError):
    """A failure the user can fix: printed as one line naming the file or key and the fix, no traceback."""


class ConfigError(UserError):
    """A user error in the configuration: one line naming the key and what is expected."""


def check(cond: bool, key: str, expected: str, value) -> None:
    """A config value check: ConfigError naming the key, its value and what is expected."""
    if not cond:
        raise ConfigError(f"config key {key!r} = {value!r}: expected {expected}")


@contextlib.contextmanager
def reading(path, what: str, fix: str):
    """Within the block, any failure to read a user's file (other than a full disk) becomes one UserError
    naming the file, what it should be and the fix: `with reading(p, "the Inception file", "set ..."):`."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{what} {path} cannot be read ({type(err).__name__}: {first}): {fix}") from err


def note_run_dir(path) -> None:
    """Where this command's error log goes once the run folder is known (used only if it exists)."""
    global _run_dir
    _run_dir = Path(path).expanduser() if path is not None else None


def log_dir() -> Path:
    """The run folder if known and present, else ~/.cache/ldm-scaling/logs, else the working folder."""
    if _run_dir is not None and _run_dir.is_dir():
        return _run_dir
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ldm-scaling" / "logs"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        return cache
    except OSError:
        return Path.cwd()


def _chain(exc: BaseException):
    """The exception and its causes: explicit, implicit and Ray's wrapped task errors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        nxt = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the worker's exception here
        exc = nxt if isinstance(nxt, BaseException) else (exc.__cause__ or exc.__context__)


def _raised_by_us(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return True  # re-raised in a Ray worker: the class and message are all that is left
    parts = Path(frames[-1].filename).parts
    return any(p in OWN_PACKAGES for p in parts[-3:-1])


# A full disk as libraries word it when they lose the errno: pyarrow's OSError, safetensors' Rust "os error 28",
# the text of an error a Ray worker or a Tune trial sent back.
_DISK_FULL_TEXT = ("[Errno 28]", "os error 28", "No space left on device", "DiskFullError")


class DiskFullError(UserError):
    """A write failed for want of space: one line naming the folder and, where known, the space it needed."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether a failure (or any cause of it, a Ray worker's included) is a full disk or an exceeded quota."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if any(t in str(e) for t in _DISK_FULL_TEXT):
            return True
    return False


def disk_full_error(folder, needed: int | None = None) -> DiskFullError:
    """The one-line error for a write into `folder` that found the disk full; `needed`: bytes it needed."""
    import shutil

    try:
        free = f", {shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError:
        free = ""
    need = f" (the write needs about {needed / 1e6:.1f} MB{free})" if needed else ""
    return DiskFullError(_disk_full(f"{folder}{need}"))


def _disk_full(where) -> str:
    place = f" holding {where}" if where else ""
    return (f"no space left on the disk{place}: free space there, or point runs_dir / cache_dir at a "
            f"larger disk, then rerun the same command to resume")


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can fix, or None for a bug (keep its traceback)."""
    from study.redact import redact_text

    for e in _chain(exc):
        if isinstance(getattr(e, "cause", None), BaseException):
            continue  # Ray's wrapper (an instance of the cause's class too): judge the worker's exception itself
        msg = redact_text(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        name = type(e).__name__
        if isinstance(e, UserError):  # ours: one line, or one line per item where it lists several (missing paths)
            return redact_text(str(e).strip())
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _disk_full(e.filename or _run_dir)
        if any(t in str(e) for t in _DISK_FULL_TEXT):  # a library's or a worker's wording, errno lost
            return _disk_full(getattr(e, "filename", None) or _run_dir)
        if "database or disk is full" in str(e):
            return _disk_full(_run_dir) + " (the Optuna database could not be written)"
        if name == "OperationalError" and ("unable to open database file" in str(e) or "no such table" in str(e)):
            return (f"the Optuna database is missing or unreadable ({msg}): it was deleted or moved while the "
                    f"study ran, or sweep.optuna_storage points at a folder that does not exist; fix it and "
                    f"rerun (cells lost with it are evaluated again)")
        if name == "OperationalError" and any(k in str(e) for k in (
                "could not connect", "Connection refused", "timeout expired", "could not translate host name")):
            return (f"cannot reach the Optuna storage (sweep.optuna_storage): {msg}; start the database or "
                    f"fix the URL, then rerun")
        if name == "UnidentifiedImageError":
            return f"{msg}: the file is not an image PIL can read; remove or replace it, then rerun"
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) \
                and e.filename:
            return f"{e.strerror}: {e.filename}: check the path (or its permissions) in the config or command"
        if isinstance(e, ValueError) and _raised_by_us(e):
            return msg
    return None


def write_log(exc: BaseException, title: str = "") -> Path | None:
    """Append the traceback (and the command line, and `title`: what failed) to the error log; its path, or
    None if unwritable."""
    from study.redact import redact_text

    global _run_dir
    text = (f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {redact_text(' '.join(sys.argv))}\n"
            + (f"{redact_text(title)}\n" if title else "")
            + redact_text("".join(traceback.format_exception(exc))))
    for _ in range(2):
        path = log_dir() / LOG_NAME
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:  # the run folder's disk may be the very thing that is full: try the cache folder
            if _run_dir is None:
                return None
            _run_dir = None
    return None


def report_user_error(exc: BaseException) -> str | None:
    """For a user-caused failure: log the traceback and return the line to print; None for a bug."""
    msg = user_message(exc)
    if msg is None:
        return None
    log = write_log(exc)
    return f"{msg} (traceback in {log})" if log else msg
