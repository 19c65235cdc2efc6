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
