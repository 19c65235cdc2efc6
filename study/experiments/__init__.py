"""The experiments of a study, one entry each in SPECS (study.experiments.spec.ExperimentSpec).

Every experiment is a package here, study/experiments/<name>/, whose __init__ defines SPEC; the registry is the
packages found in this folder, so a new experiment is a new package (docs/experiments.md lists the other
layers' modules, each named as the experiment). The other layers build their registries from SPECS.
"""

from __future__ import annotations

import importlib
import pkgutil

from study.experiments.spec import ExperimentSpec


SPECS: dict[str, ExperimentSpec] = {}


def discover() -> dict[str, ExperimentSpec]:
    """Fill SPECS (in place) with the SPEC of every package in this folder, base first, then by name."""
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != "base", m.name)):
        if m.ispkg:
            found = importlib.import_module(f"{__name__}.{m.name}").SPEC
            if found.name != m.name:
                raise ValueError(f"study/experiments/{m.name}/ defines SPEC.name={found.name!r}: name them the same")
            SPECS[found.name] = found
    return SPECS


discover()


def spec(name: str) -> ExperimentSpec:
    """The experiment of that name; ValueError naming the known ones otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown experiment {name!r}: expected one of {sorted(SPECS)}")
    return SPECS[name]
