"""A fifth experiment added by the steps of docs/experiments.md alone, in a folder of its own: every layer's
registry finds it (spec, evaluator, recipe, stage, analysis, claim) without an edit anywhere else."""

from __future__ import annotations

import importlib
import sys

import pandas as pd
import pytest

# The files docs/experiments.md says to write, for an experiment named "toy" (one module per layer).
TOY = {
    "study/experiments/toy/__init__.py": '''
from study.experiments.spec import ExperimentSpec


class ToyEvaluator:
    def evaluate(self, unet, sampler, steps, guidance):
        return {"fid": 1.0, "num_samples": 1, "unet_calls": steps}


SPEC = ExperimentSpec(name="toy", task="toy_task", after=("base",), evaluator=lambda cfg, prepared: ToyEvaluator())
''',
    "trainers/recipes/toy.py": '''
from trainers.recipes.base import BaseRecipe


class ToyRecipe(BaseRecipe):
    name = "toy"


RECIPE = ToyRecipe
''',
    "sweeps/experiments/toy.py": '''
from sweeps.experiments import Experiment, final_milestones


class ToyExperiment(Experiment):
    name = "toy"

    def sources(self, ctx):
        return final_milestones(ctx, "base")

    def chains(self, ctx, sizes):
        return self.final_chains(ctx, sizes, ["ddim"], {"ddim": [2]})


EXPERIMENT = ToyExperiment
''',
    "analysis/experiments/toy.py": '''
from analysis.verdicts import REPRODUCED, UNRESOLVED, claim


def analyze(table, out, n_boot, seed):
    rows = table[table["experiment"] == "toy"]
    return {"title": "Toy", "figures": {}, "tables": {"rows": rows}}


@claim("toy_claim", "toy", "Toy", "The toy's FID is below 2.", "toy")
def toy_claim(ev):
    a = ev.analyses.get("toy")
    if a is None:
        return None
    fid = float(a["tables"]["rows"]["fid"].min())
    return f"best FID {fid:g}", REPRODUCED if fid < 2 else UNRESOLVED, ""
''',
}
PACKAGES = ["study.experiments", "trainers.recipes", "sweeps.experiments", "analysis.experiments"]


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy experiment's files in tmp_path, their folders on the packages' search paths; undone after."""
    for rel, text in TOY.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        monkeypatch.setattr(module, "__path__", [*module.__path__, str(tmp_path / pkg.replace(".", "/"))])
    from analysis import verdicts
    from study import experiments

    monkeypatch.setattr(verdicts, "CLAIMS", list(verdicts.CLAIMS))
    before = dict(experiments.SPECS)
    experiments.discover()
    yield
    experiments.SPECS.clear()
    experiments.SPECS.update(before)
    for name in [m for m in sys.modules if m.endswith(".toy")]:
        del sys.modules[name]


def test_every_layer_finds_a_new_experiment_from_its_own_files(toy, tmp_path):
    from study.config import load_config
    from study.experiments import SPECS
    from study.tasks import make_evaluator
    from sweeps.experiments import enabled_experiments, waves
    from trainers.recipes import get_recipe

    assert list(SPECS)[-1] == "toy" and SPECS["toy"].after == ("base",)
    assert make_evaluator("toy_task", None, tmp_path).evaluate(None, "ddim", 2, 1.0)["fid"] == 1.0
    assert get_recipe("toy").name == "toy"
    cfg = load_config("tiny")
    stages = [[e.name for e in w] for w in waves(enabled_experiments(cfg))]
    assert stages[0] == ["base"] and "toy" in stages[1]  # after what it derives from, beside its siblings
    toy_exp = next(e for e in enabled_experiments(cfg) if e.name == "toy")
    assert (toy_exp.task, toy_exp.recipe, toy_exp.subdir) == ("toy_task", "toy", "toy/train")

    from analysis.claims import judge_experiment

    table = pd.DataFrame({"experiment": ["base", "toy", "toy"], "fid": [3.0, 1.5, 2.5]})
    _, claims = judge_experiment("toy", table, tmp_path / "out")
    assert claims["toy_claim"]["verdict"] == "reproduced" and claims["toy_claim"]["found"] == "best FID 1.5"


def test_an_experiment_missing_on_a_layer_is_named(toy, tmp_path):
    (tmp_path / "trainers/recipes/toy.py").unlink()
    from trainers.recipes import get_recipe

    with pytest.raises(ValueError, match="experiment 'toy' has no trainers/recipes/toy.py: add its training recipe"):
        get_recipe("toy")
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        get_recipe("nope")
