"""One writer per folder: an exclusive lock (fcntl.flock on PARENT/.NAME.lock) plus a JSON record of its holder.

The lock file sits beside the folder, not in it, so that `--fresh` can move the folder aside while the
lock is held and a folder that does not exist yet can be locked before it is created.

The kernel releases a flock when its process dies, however it dies, so a lock left by a killed run is
simply taken over; the record only serves to name the holder (host, pid, command) in the refusal. On NFS
(EFS) Linux maps flock to NFSv4 byte-range locks, which the server drops when the client's lease lapses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from study.errors import UserError


_held: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant within one process
_guard = threading.Lock()


class FolderLockedError(UserError):
    """Another live process holds the folder's lock."""


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(h: dict) -> str:
    if not h:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("time", 0)))
    return f"pid {h.get('pid')} on host {h.get('host')} (since {since}: {h.get('command', '?')})"


def _acquire(path: Path, folder: Path, what: str, wait_s: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise FolderLockedError(
                    f"{what} {folder} is in use by {_describe(holder)}: wait for it to finish or stop "
                    f"it; one study writes a folder at a time") from None
            time.sleep(0.2)
    stale = _holder(fd)
    if stale and (stale.get("pid"), stale.get("host")) != (os.getpid(), socket.gethostname()):
        # A record with no lock behind it: its process died without releasing (kill -9, lost node).
        print(f"note: took over the lock of {what} {folder} from {_describe(stale)}, which is no longer "
              f"running", file=sys.stderr)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
              "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    return fd


@contextlib.contextmanager
def folder_lock(folder, what: str = "run folder", wait_s: float = 0.0):
    """Hold the folder's lock for the block; refuse at once (or after wait_s) if a live process holds it.

    Re-entrant in one process, so the CLI and the stage runner may both take the run folder's lock."""
    path = lock_path(folder)
    key = str(path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(path, Path(folder), what, wait_s), 1]
    try:
        yield path
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.ftruncate(entry[0], 0)  # an empty record: released cleanly, nothing to take over
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])


def lock_path(folder) -> Path:
    """The lock file of a folder: PARENT/.NAME.lock."""
    folder = Path(folder).expanduser().resolve()
    return folder.parent / f".{folder.name}.lock"


def holder(folder) -> dict:
    """The recorded holder of a folder's lock ({} if none or released)."""
    path = lock_path(folder)
    if not path.exists():
        return {}
    fd = os.open(path, os.O_RDONLY)
    try:
        return _holder(fd)
    finally:
        os.close(fd)
