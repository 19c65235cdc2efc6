"""What an experiment is: one row of the experiment registry (study.experiments.SPECS).

An experiment lives in the same shape on every layer, each module named as the experiment (the results table's
`experiment`):

    study/experiments/<name>/       core: its config section, data, model surgery, loss and evaluator (no Ray)
    trainers/recipes/<name>.py      its training recipe (RECIPE)
    sweeps/experiments/<name>.py    what it trains and evaluates in a study (EXPERIMENT)
    analysis/experiments/<name>.py  its figures, tables and claims

Each layer builds its registry from SPECS by that name; docs/experiments.md lists the steps to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from study.errors import check as _check


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: its name, task, what it derives from, its config section and its task's evaluator."""

    name: str  # the results table's `experiment`, and its module's name on every layer
    task: str  # the results table's `task`: which evaluator scores its checkpoints
    after: tuple[str, ...] = ()  # experiments whose checkpoints it starts from
    section: str | None = None  # its StudyConfig attribute (e.g. "distill"), None: no options of its own
    validate: Callable[[Any], None] | None = None  # validate(cfg): checks its section (ConfigError naming the key)
    # factory(cfg, prepared_dir) of its task's evaluator; None where another experiment's task serves it.
    evaluator: Callable[[Any, Path], Any] | None = None
    # TrainConfig overrides of its runs (budget, batch, lr, ...), from the config; None: the train section's.
    train: Callable[[Any], dict] | None = None
    trains: bool = True  # False: it evaluates an earlier experiment's checkpoints in another form (no training)
    # The local files its stages read: (config key, path or None), checked before the first training step.
    inputs: Callable[[Any], list[tuple[str, Any]]] | None = None

    def options(self, cfg):
        """Its config section of a StudyConfig (None without one)."""
        return getattr(cfg, self.section) if self.section else None

    def enabled(self, cfg) -> bool:
        """Whether a config runs it: its section's `enabled` (an experiment without a section always runs)."""
        section = self.options(cfg)
        return section is None or bool(getattr(section, "enabled", True))


def layer_module(package: str, name: str, what: str):
    """An experiment's module on one layer (package.name); ValueError naming the file to write when missing."""
    import importlib

    try:
        return importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{package}.{name}":
            raise
        raise ValueError(f"experiment {name!r} has no {package.replace('.', '/')}/{name}.py: add its {what} "
                         "(docs/experiments.md, 'Adding an experiment')") from None


def check_cells(section: str, samplers, steps) -> None:
    """An experiment's evaluation cells: a non-empty list of known samplers and of positive step counts."""
    from study.schedulers import SAMPLERS

    _check(len(samplers) > 0 and all(x in SAMPLERS for x in samplers), f"{section}.samplers",
           f"a non-empty list from {list(SAMPLERS)}", list(samplers))
    _check(len(steps) > 0 and all(isinstance(x, int) and x > 0 for x in steps), f"{section}.steps",
           "a non-empty list of positive step counts", list(steps))
