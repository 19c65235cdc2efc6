"""A study's run folder: RUNS_DIR/NAME, its recorded config, and the refusal to mix study definitions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from omegaconf import OmegaConf

from study.atomic import write_atomic, write_json
from study.config import ConfigError, StudyConfig, first_difference, to_dict
from study.identity import study_identity
from study.paths import run_dir
from study.redact import redact


def check_run_folder(cfg: StudyConfig, out: Path | None = None) -> Path:
    """Refuse to resume a run folder made with a different study definition; record the config."""
    out = run_dir(cfg) if out is None else Path(out)
    saved = out / "config.json"
    now = redact(to_dict(cfg))  # what is written and compared: no credential reaches a file
    if saved.exists():
        old = redact(json.loads(saved.read_text()))  # folders written before redaction too
        diff = first_difference(study_identity(old), study_identity(now))
        if diff:
            where, was, now_value = diff
            raise ConfigError(f"{out} holds a study with a different {where} (was {was!r}, now {now_value!r}): "
                              f"rerun with --fresh to start over (the old folder is archived), or set name=... "
                              f"for a new run")
    out.mkdir(parents=True, exist_ok=True)
    ident = out / "run.json"
    if not ident.exists():  # a fresh folder is a new experiment, even on external Tune storage
        write_json(ident, {"run_uuid": uuid.uuid4().hex[:12], "created": time.ctime()})
    write_json(saved, now, indent=2)
    write_atomic(out / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(now))), binary=False)
    return out


def run_uuid(out: Path) -> str:
    """The random id of a run folder (empty before check_run_folder made it)."""
    ident = Path(out) / "run.json"
    return json.loads(ident.read_text())["run_uuid"] if ident.exists() else ""
