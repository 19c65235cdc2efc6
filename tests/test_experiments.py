"""The experiment unit: registry order, per-experiment cell names, the results row and old tables."""

import pandas as pd
import pytest

from sweeps import experiments as ex
from sweeps.eval_grid import Chain
from study.results import COLUMNS, EXTRA, ResultRow, mark_best, row_dict
from sweeps.results import read_results, upsert_results


class _Exp(ex.Experiment):
    def __init__(self, name, after=(), on=True):
        self.name, self._after, self.on = name, after, on

    @property
    def after(self):
        return self._after

    def enabled(self, cfg):
        return self.on


def _registry(monkeypatch, *exps):
    monkeypatch.setattr(ex, "experiments", lambda: list(exps))


def test_experiments_run_after_what_they_derive_from(monkeypatch):
    _registry(monkeypatch, _Exp("distillation", after=("base",)), _Exp("base"), _Exp("off", on=False))
    assert [e.name for e in ex.enabled_experiments(None)] == ["base", "distillation"]


def test_experiments_derived_from_the_same_ones_share_a_wave(monkeypatch):
    # distillation, superres and dreambooth each start from the base: one wave after it (one training grid,
    # one evaluation grid); an experiment derived from one of them waits for the next wave.
    _registry(monkeypatch, _Exp("base"), _Exp("distillation", after=("base",)), _Exp("superres", after=("base",)),
              _Exp("dreambooth", after=("base",)), _Exp("on_distilled", after=("distillation", "base")))
    got = [[e.name for e in w] for w in ex.waves(ex.enabled_experiments(None))]
    assert got == [["base"], ["distillation", "superres", "dreambooth"], ["on_distilled"]]


def test_a_missing_dependency_or_a_cycle_is_named(monkeypatch):
    _registry(monkeypatch, _Exp("superres", after=("base",)))
    with pytest.raises(ValueError, match="'superres' derives from \\['base'\\]"):
        ex.enabled_experiments(None)
    _registry(monkeypatch, _Exp("a", after=("b",)), _Exp("b", after=("a",)))
    with pytest.raises(ValueError, match="cycle"):
        ex.enabled_experiments(None)


def test_base_keeps_its_study_names_and_others_are_prefixed():
    base = Chain(8, 0, 1000, "ck", "ddim", (2, 4), "leading")
    derived = Chain(8, 0, 1000, "ck", "ddim", (2, 4), "leading", experiment="distillation")
    # Run folders made before experiments existed hold studies under the old names: they must resume.
    assert [c.study_name for c in base.cells()] == ["w8-s0-i1000-ddim-2-leading", "w8-s0-i1000-ddim-4-leading"]
    assert [c.study_name for c in derived.cells()] == ["distillation-w8-s0-i1000-ddim-2-leading",
                                                        "distillation-w8-s0-i1000-ddim-4-leading"]
    assert ex.Experiment().subdir == "train" and _Exp("superres").subdir == "superres/train"


def _row(experiment, steps, guidance, fid, objective=None, trial=0, **metrics):
    r = ResultRow(run_id="r", trial_id="w8-s0", experiment=experiment, task="t", width=8, params=1, gflops=1.0,
                  normalized_cost=0.5, train_images=10, train_flops=1.0, train_flops_paper=1.0, sampler="ddim",
                  steps=steps, timestep_spacing="leading", guidance=guidance, sampling_cost=0.5 * steps,
                  unet_calls=2 * steps, fid=fid, kid=None, alignment=None, num_samples=4, seed=0, checkpoint="c",
                  config_hash="h", version="0", optuna_study=f"{experiment}-{steps}", optuna_trial=trial,
                  objective=objective)
    return row_dict(r, metrics)


def test_rows_carry_experiment_task_cost_and_task_metrics():
    row = _row("superres", 4, 1.0, 3.0, lpips=0.2, psnr=21.5, note="text is not a metric")
    assert list(row)[:len(COLUMNS + EXTRA)] == COLUMNS + EXTRA
    assert row["experiment"] == "superres" and row["unet_calls"] == 8 and row["lpips"] == 0.2
    assert "note" not in row


def test_best_follows_the_objective_and_cells_of_experiments_stay_apart(tmp_path):
    rows = [_row("base", 4, 2.0, fid=5.0, trial=0), _row("base", 4, 3.0, fid=4.0, trial=1),
            # DreamBooth minimises its own objective: the row with the worse FID is its best.
            _row("dreambooth", 4, 2.0, fid=9.0, objective=-0.9, trial=0),
            _row("dreambooth", 4, 3.0, fid=8.0, objective=-0.5, trial=1)]
    df = upsert_results(tmp_path, rows)
    best = df[df["best"]].set_index("experiment")["guidance"]
    assert best.to_dict() == {"base": 3.0, "dreambooth": 2.0}
    # A resume that re-reports a trial replaces its row.
    assert len(upsert_results(tmp_path, rows[:1])) == 4


def test_tables_from_before_experiments_load_as_base(tmp_path):
    old = pd.DataFrame([{k: v for k, v in _row("base", 4, 2.0, 5.0).items() if k not in ("experiment", "task")}])
    old.to_parquet(tmp_path / "results.parquet", index=False)
    df = read_results(tmp_path)
    assert (df["experiment"] == "base").all() and (df["task"] == "text2image").all()
    assert mark_best(df)["best"].tolist() == [True]
