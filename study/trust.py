"""What a resume may unpickle. Ray Tune restores an experiment from its tuner.pkl (and trial pickles), and
unpickling runs code: a run folder is only as safe to resume as its writer. This refuses the cases a file
system can tell apart (files owned by another user, or writable by other users); it cannot tell whether a
folder you copied from someone else is safe. Never resume a run folder you did not write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from study.errors import UserError

PICKLED = ("*.pkl", "*.pickle")


def check_restorable(experiment_dir) -> None:
    """Raise UserError unless every pickle of a Tune experiment folder (and the folder) is owned by the
    current user and writable by nobody else; remote storage (s3://...) is left to its access control."""
    if "://" in str(experiment_dir):
        return
    root = Path(experiment_dir)
    uid = os.getuid()
    for path in [root, *(p for pat in PICKLED for p in root.rglob(pat))]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            problem = "is a symbolic link"
        elif st.st_uid != uid:
            problem = f"is owned by uid {st.st_uid}, not by you (uid {uid})"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = "is writable by other users"
        else:
            continue
        raise UserError(f"{path} {problem}: resuming unpickles it (Ray Tune's tuner.pkl), which runs code; "
                        f"resume only run folders you wrote, or start over with --fresh (or a new name=...)")
