"""Each experiment's analysis, one module per experiment, named as its rows' `experiment` in the results table
(the same name as its modules on every other layer: study/experiments/<name>/, trainers/recipes/<name>.py,
sweeps/experiments/<name>.py).

A module holds the experiment's claims, one `@claim` checker each (analysis.verdicts): the one verdict of that
claim, shown in the findings and in the experiment's report section alike. A derived experiment's module also
has `analyze(table, out, n_boot, seed) -> dict` (title, figures, captions, tables) whose result its checkers
read from `Evidence.analyses[name]`.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def analyses() -> dict[str, ModuleType]:
    """Every experiment's analysis module by experiment name (importing one registers its claims)."""
    return {m.name: importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)}
