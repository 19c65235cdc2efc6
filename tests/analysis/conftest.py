"""Fixtures of the analysis tests: the public Chinchilla points and synthetic run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis.synthetic import SyntheticSpec, write_run

REPO = Path(__file__).resolve().parents[2]
REFERENCE_NAME = "chinchilla_fig4_points.csv"


def find_reference() -> Path | None:
    """$LDM_SCALING_REFERENCE (the file or its folder), then <repo>/../shared/reference/."""
    candidates = []
    env = os.environ.get("LDM_SCALING_REFERENCE")
    if env:
        p = Path(env)
        candidates.append(p if p.suffix == ".csv" else p / REFERENCE_NAME)
    candidates.append(REPO.parent / "shared" / "reference" / REFERENCE_NAME)
    return next((c for c in candidates if c.is_file()), None)


@pytest.fixture(scope="session")
def chinchilla_points() -> Path:
    """Path of the Chinchilla figure-4 points; skip only when no copy exists anywhere."""
    path = find_reference()
    if path is None:
        pytest.skip(f"{REFERENCE_NAME} not found: set LDM_SCALING_REFERENCE to its folder or "
                    f"place it in {REPO.parent / 'shared' / 'reference'}")
    return path


# A small but complete sweep: 3 sizes, 3 budgets, 2 samplers, 7 step counts, 4 guidances.
SMALL = SyntheticSpec(train_images=(2e6, 4e6, 8e6, 16e6), steps=(4, 6, 10, 20, 50, 100, 250),
                      guidances=(1.5, 3.0, 5.0, 7.0))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder holding a synthetic results.parquet."""
    run = tmp_path_factory.mktemp("run")
    write_run(run, SMALL, seed=1)
    return run


@pytest.fixture(scope="module")
def analyzed(synthetic_run, tmp_path_factory) -> tuple[Path, dict]:
    """analyze_run on the synthetic run once per module, W&B offline and hermetic."""
    from analysis.api import analyze_run

    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        # W&B's config and caches stay under the test's folder; no key, so nothing uploads.
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                    "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        summary = analyze_run(synthetic_run, bootstrap=50, seed=0, wandb_mode="offline",
                              progress=False)
    return synthetic_run, summary


def with_experiments(seed: int = 1):
    """SMALL's table plus rows of the paper's derived experiments (distillation to few steps, 4x
    super-resolution, DreamBooth), each from a known law, tagged by the `experiment` column."""
    import numpy as np
    import pandas as pd

    from analysis.synthetic import make_results

    final = (SMALL.train_images[-1],)
    base = make_results(SMALL, seed).assign(experiment="base")
    # A distilled student: the few-step penalty cut to 15 % of DDIM's, so it wins at 4 steps.
    dist = make_results(SyntheticSpec(samplers={"lcm": 0.15}, steps=(1, 2, 4, 8), train_images=final,
                                      guidances=(1.5, 3.0)), seed + 1).assign(experiment="distillation", unet_calls=lambda d: d["steps"])
    # Super-resolution fine-tunes: no guidance (1.0), the same shape of law.
    sr = make_results(SyntheticSpec(steps=(4, 10, 20, 50, 100), train_images=final, guidances=(1.0,)),
                      seed + 2).assign(experiment="superres")
    db = make_results(SyntheticSpec(samplers={"ddim": 1.0}, steps=(10, 25), train_images=final,
                                    guidances=(3.0, 5.0)), seed + 3).assign(experiment="dreambooth")
    rng = np.random.default_rng(seed)
    # Subject fidelity grows with size by 0.05 per decade of parameters, std 0.01 per number.
    db["subject_fidelity"] = 0.5 + 0.05 * np.log10(db["params"] / 1e7) + rng.normal(0, 0.01, len(db))
    db["subject_fidelity_std"] = 0.01
    db["prompt_fidelity"] = 0.9
    return pd.concat([base, dist, sr, db], ignore_index=True)


@pytest.fixture(scope="session")
def analyzed_experiments(tmp_path_factory) -> tuple[Path, dict]:
    """analyze_run on a run with every experiment of the paper, W&B off."""
    from analysis.api import analyze_run

    run = tmp_path_factory.mktemp("run_all")
    with_experiments().to_parquet(run / "results.parquet", index=False)
    return run, analyze_run(run, bootstrap=30, seed=0, wandb_mode=None, progress=False)
