"""A study's run folder: RUNS_DIR/NAME, its recorded config, and the refusal to mix study definitions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from study.atomic import write_atomic, write_json
from study.config import ConfigError, StudyConfig, first_difference, to_dict
from study.identity import study_identity
from study.paths import run_dir
from study.redact import redact

if TYPE_CHECKING:
    import pandas as pd


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


def recorded_config(out: Path) -> StudyConfig:
    """The config a run folder was made with (its config.json); ConfigError naming the file when absent."""
    from study.config import from_dict

    saved = Path(out) / "config.json"
    if not saved.is_file():
        raise ConfigError(f"{saved} not found: pass a run folder written by `study run` or `study sweep`")
    # A training run's own config.json carries its recipe beside the study's sections.
    return from_dict({k: v for k, v in json.loads(saved.read_text()).items() if k != "recipe"})


def run_sizes(out: Path, widths=()) -> tuple[StudyConfig, pd.DataFrame]:
    """A run folder's config and its sizes: the ladder preset's widths, the config's and `widths`, each with
    params, forward GFLOPs and normalized cost counted on the model (study.ladder)."""
    import pandas as pd

    from study.ladder import LADDERS, geometry, ladder

    cfg = recorded_config(out)
    every = sorted(set(LADDERS[cfg.model.ladder].widths) | set(cfg.model.widths) | set(widths))
    rows = ladder(cfg.model.ladder, every, geometry(cfg), cfg.model.reference_width)
    return cfg, pd.DataFrame([{"width": r.width, "params": r.params, "normalized_cost": r.normalized_cost,
                               "gflops": r.gflops} for r in rows])
