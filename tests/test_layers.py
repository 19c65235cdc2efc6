"""The layers' imports point one way, and no module imports itself back through another.

Each top-level package is one layer: cli (the `study` command and the stage runner) -> sweeps -> trainers ->
study (the core library). The analysis stands apart: it reads only the results table, through the one core
module that owns the table's contract (study.results), which itself imports nothing of this project.

Walks every module's imports with ast (top-level and function-local alike), so a lazy import cannot hide
an arrow that points the wrong way.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "sweeps", "trainers", "study", "analysis")
# Which packages a package may import (besides itself).
MAY_IMPORT = {
    "cli": {"sweeps", "trainers", "study", "analysis"},
    "sweeps": {"trainers", "study"},
    "trainers": {"study"},
    "study": set(),
    "analysis": set(),
}
CONTRACT = "study.results"  # the results table's contract: the one core module the analysis may import


def imports(path: Path, names: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file, at any depth; names=True adds module.name for each
    name of a `from module import name` (which may itself be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if names:
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under root."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def wrong_arrows(root: Path = REPO) -> list[str]:
    """Every import against the layers, as 'file:line: importer imports imported (why)'."""
    bad = []
    for src, path in modules(root).items():
        here = src.split(".")[0]
        for lineno, target in imports(path):
            there = target.split(".")[0]
            if there not in PACKAGES:
                continue
            where = f"{path.relative_to(root)}:{lineno}: {src} imports {target}"
            if src == CONTRACT:
                bad.append(f"{where} (the results contract must import nothing of this project)")
            elif here == "analysis" and there != "analysis" and target != CONTRACT:
                bad.append(f"{where} (the analysis may import only {CONTRACT})")
            elif there != here and here != "analysis" and there not in MAY_IMPORT[here]:
                bad.append(f"{where} ({here} may import only {', '.join(sorted(MAY_IMPORT[here])) or 'itself'})")
    return bad


def cycles(root: Path = REPO) -> list[list[str]]:
    """Import circles between the project's modules (a module importing a package counts as its __init__)."""
    mods = modules(root)
    graph = {m: set() for m in mods}
    for src, path in mods.items():
        for _, target in imports(path, names=True):
            # `from a.b import c` may name a module a.b.c or a name in a.b: take the longest module that exists.
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != src and not src.startswith(target + "."):
                graph[src].add(target)
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return found


def test_imports_point_one_way():
    bad = wrong_arrows()
    assert not bad, "imports against the layers (cli -> sweeps -> trainers -> study; analysis reads study.results " \
                    "only):\n" + "\n".join(bad)


def test_no_import_circles():
    found = cycles()
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


PLANTED = {
    "study/x.py": "import trainers.loop\n",                                 # core imports a layer above it
    "trainers/y.py": "def f():\n    from sweeps.sweep import run_sweep\n",  # lazily, inside a function
    "sweeps/z.py": "from cli.main import app\n",                            # sweeps imports the entry layer
    "trainers/w.py": "import analysis.fitting\n",                           # a training module reads the analysis
    "analysis/a.py": "from study.config import load_config\n",              # the analysis reaches past the contract
    "study/results.py": "from study.atomic import write_atomic\n",          # the contract stops being a leaf
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_each_kind_of_violation_is_caught(tmp_path, planted):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / planted).write_text(PLANTED[planted])
    bad = wrong_arrows(tmp_path)
    assert len(bad) == 1 and bad[0].startswith(planted), bad


def test_allowed_imports_pass_and_a_planted_circle_is_caught(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "analysis/ok.py").write_text("from study.results import CELL\nimport analysis.b\n")
    (tmp_path / "analysis/b.py").write_text("def f():\n    from analysis.ok import g\n")
    (tmp_path / "cli/m.py").write_text("import sweeps, trainers, study, analysis\n")
    assert wrong_arrows(tmp_path) == []
    assert cycles(tmp_path) == [["analysis.b", "analysis.ok", "analysis.b"]]
