"""The experiments of a study (docs/experiments.md): each says what it trains or derives, which cells it
evaluates and with which metrics; the stage runner runs the enabled ones in dependency order.

Each experiment of study.experiments.SPECS has its module here, named as the experiment and exporting its class
as EXPERIMENT; its name, task, dependencies and recipe come from its spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StageContext:
    """What an experiment may read while it plans its runs and cells."""

    cfg: object  # study.config.StudyConfig
    run_dir: Path
    prepared_dir: Path  # the base data's prepared folder (study prepare)
    rungs: dict  # width -> ladder row (params, gflops, normalized_cost)
    storage_url: str  # the Optuna storage
    progress: bool = True
    # (width, seed) -> milestone rows of every experiment trained so far, by experiment name
    trained: dict = field(default_factory=dict)


class Experiment:
    """The base of every experiment; the defaults are the base experiment's."""

    name = "base"  # its study.experiments.SPECS entry: the results table's `experiment`
    objective = "fid"  # the evaluator's key the guidance search minimises
    search = True  # False: one evaluation per cell at guidance 1 (tasks without guidance)

    @property
    def spec(self):
        from study.experiments import spec

        return spec(self.name)

    @property
    def task(self) -> str:
        """The results table's `task`: which evaluator scores its checkpoints (study.tasks)."""
        return self.spec.task

    @property
    def after(self) -> tuple[str, ...]:
        """The experiments whose checkpoints this one derives from."""
        return self.spec.after

    @property
    def trains(self) -> bool:
        """False: its checkpoints are an earlier experiment's (sources), in another form."""
        return self.spec.trains

    @property
    def recipe(self) -> str:
        """The trainer recipe of its runs: trainers/recipes/<name>.py."""
        return self.name

    @property
    def subdir(self) -> str:
        """Its training runs' folder under the run folder."""
        return "train" if self.name == "base" else f"{self.name}/train"

    def enabled(self, cfg) -> bool:
        """Run when its config section says enabled (an experiment without a section always runs)."""
        return self.spec.enabled(cfg)

    def options(self, cfg) -> dict | None:
        """Its config section as a dict (given to its recipe; part of its runs' identity)."""
        return None

    def train_overrides(self, cfg) -> dict | None:
        """TrainConfig overrides for its runs (budget, lr, batch...): its spec's; None: the base train section."""
        return self.spec.train(cfg) if self.spec.train else None

    def prepared(self, ctx: StageContext) -> Path:
        """The prepared folder its runs train on and its evaluator reads (default: the base data's)."""
        return ctx.prepared_dir

    def sources(self, ctx: StageContext) -> dict[tuple[int, int], str] | None:
        """(width, seed) -> the base milestone folder each derived run starts from; None: fresh models."""
        return None

    def chains(self, ctx: StageContext, sizes: dict) -> list:
        """Its evaluation chains (sweeps.eval_grid.Chain) for the milestones of its trained sizes."""
        raise NotImplementedError

    def final_chains(self, ctx: StageContext, sizes: dict, samplers, steps: dict, **chain) -> list:
        """One chain per sampler on each run's final milestone; steps: sampler -> its step counts (a sampler
        with none is skipped); chain: further Chain fields (e.g. fixed_guidance)."""
        from study.schedulers import default_timestep_spacing
        from sweeps.eval_grid import Chain

        out = []
        for (width, seed), milestones in sorted(sizes.items()):
            m = milestones[-1]
            for sampler in samplers:
                if not steps[sampler]:
                    continue
                spacing = ctx.cfg.eval.timestep_spacing or default_timestep_spacing(sampler)
                out.append(Chain(width, seed, int(m["train_images"]), str(m["path"]), sampler,
                                 tuple(sorted(steps[sampler])), spacing, milestone=m, experiment=self.name,
                                 task=self.task, objective=self.objective, **chain))
        return out


def final_milestones(ctx: StageContext, experiment: str = "base") -> dict[tuple[int, int], str]:
    """(width, seed) -> the final milestone folder of each finished run of an experiment: a derived
    experiment's teachers or starting points."""
    return {k: rows[-1]["path"] for k, rows in ctx.trained.get(experiment, {}).items()
            if rows and not rows[-1].get("partial")}  # a run that stopped early is no teacher


def experiments() -> list[Experiment]:
    """One fresh Experiment per entry of study.experiments.SPECS (sweeps/experiments/<name>.py: EXPERIMENT)."""
    from study.experiments import SPECS
    from study.experiments.spec import layer_module

    return [layer_module(__name__, name, "stage (what it trains and evaluates)").EXPERIMENT() for name in SPECS]


def enabled_experiments(cfg) -> list[Experiment]:
    """The experiments a config enables, each after the ones it derives from."""
    todo = [e for e in experiments() if e.enabled(cfg)]
    names = {e.name for e in todo}
    for e in todo:
        missing = [a for a in e.after if a not in names]
        if missing:
            raise ValueError(f"experiment {e.name!r} derives from {missing}, which this config does not run")
    return [e for wave in _rounds(todo) for e in wave]


def _rounds(todo: list[Experiment]) -> list[list[Experiment]]:
    """Experiments in rounds: each round depends only on earlier ones (registry order within a round)."""
    rounds, done = [], set()
    while todo:
        ready = [e for e in todo if all(a in done for a in e.after)]
        if not ready:
            raise ValueError(f"experiments {[e.name for e in todo]} depend on each other in a cycle")
        rounds.append(ready)
        done |= {e.name for e in ready}
        todo = [e for e in todo if e not in ready]
    return rounds


def waves(experiments: list[Experiment]) -> list[list[Experiment]]:
    """The experiments (in dependency order, enabled_experiments) grouped into waves: each wave depends only on
    earlier ones, so its experiments train together in one grid and evaluate together in one grid."""
    return _rounds(list(experiments))
