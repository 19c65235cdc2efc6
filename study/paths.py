"""Where a study writes, and the check that every local path it reads exists before work starts."""

from __future__ import annotations

from pathlib import Path

from study.config import HELDOUT, ConfigError, StudyConfig


def run_dir(cfg: StudyConfig) -> Path:
    """The run folder of a study: RUNS_DIR/NAME, absolute (from this process's working directory).

    Absolute because paths under it travel to Ray Tune trials, which run in their own working directories:
    a relative `runs/tiny/...` milestone given to a derived experiment's trial would not be found there."""
    return (Path(cfg.runs_dir).expanduser() / cfg.name).absolute()


def require_paths(cfg: StudyConfig, evaluation: bool = True) -> None:
    """Fail at once, one line per missing path and naming its key, if a configured local path does not exist:
    the base study's and every enabled experiment's (study.experiments: ExperimentSpec.inputs).

    evaluation=False (training, sampling) leaves out the evaluation models, which those stages never load.
    """
    from study.experiments import SPECS

    d, e = cfg.data, cfg.eval
    paths = [("data.root", d.root), ("data.eval_captions", d.eval_captions),
             ("text_encoder.path", cfg.text_encoder.path), ("autoencoder.path", cfg.autoencoder.path)]
    if evaluation:
        require_evaluator(cfg)
        paths += [("eval.inception_path", e.inception_path), ("eval.clip_path", e.clip_path)]
        if reference_folder(cfg) and "*" not in reference_folder(cfg):  # a glob is checked for matches below
            paths.append(("eval.reference", reference_folder(cfg)))
    for exp in SPECS.values():
        if exp.inputs is not None and exp.enabled(cfg):
            paths += exp.inputs(cfg)
    missing = [f"config key {key!r} = {p!r}: the path does not exist" for key, p in paths
               if p is not None and "://" not in str(p)  # a URL (s3://...): checked before prepare reads it
               and not Path(p).expanduser().exists()]
    folder = reference_folder(cfg) if evaluation else None
    if folder and not any("'eval.reference'" in line for line in missing):
        from study.metrics.reference_set import ReferenceSetError, check_reference

        try:
            check_reference(folder)  # holds images or .tar files (stops at the first one)
        except ReferenceSetError as err:
            missing.append(f"config key 'eval.reference' = {folder!r}: {str(err).split(': ', 1)[1]}")
    if missing:
        raise ConfigError("\n".join(missing) + "\npoint each at its local copy (nothing is downloaded) or override "
                          "it on the command line (KEY=...)")


def reference_folder(cfg: StudyConfig) -> str | None:
    """The FID reference images eval.reference names (COCO val2014 for the paper), or None: the held-out split."""
    ref = cfg.eval.reference
    return None if not ref or ref == HELDOUT else ref


def require_evaluator(cfg: StudyConfig) -> None:
    """Fail in one line, before any work, if the evaluation features cannot be loaded."""
    e = cfg.eval
    if e.feature_extractor == "inception" and not e.inception_path:
        from study.metrics.extractors import inception_url

        raise ConfigError(f"eval.feature_extractor=inception needs clean-fid's Inception file to evaluate: fetch "
                          f"inception-2015-12-05.pt once on a machine with network ({inception_url}) and set "
                          f"eval.inception_path to its local path (training and sampling do not need it)")
