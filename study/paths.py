"""Where a study writes, and the check that every local path it reads exists before work starts."""

from __future__ import annotations

from pathlib import Path

from study.config import ConfigError, StudyConfig


def run_dir(cfg: StudyConfig) -> Path:
    """The run folder of a study: RUNS_DIR/NAME."""
    return Path(cfg.runs_dir).expanduser() / cfg.name


def require_paths(cfg: StudyConfig) -> None:
    """Fail at once, naming the key, if a configured local path does not exist."""
    d, e = cfg.data, cfg.eval
    for key, p in (("data.root", d.root), ("data.eval_captions", d.eval_captions),
                   ("text_encoder.path", cfg.text_encoder.path), ("autoencoder.path", cfg.autoencoder.path),
                   ("eval.inception_path", e.inception_path), ("eval.clip_path", e.clip_path)):
        if p is not None and "://" in str(p):
            continue  # a URL (s3://...): study.shards.readers.check_exists checks it before prepare reads
        if p is not None and not Path(p).expanduser().exists():
            raise ConfigError(f"config key {key!r} = {p!r}: the path does not exist; point it at the local "
                              f"copy (nothing is downloaded) or override it on the command line ({key}=...)")
