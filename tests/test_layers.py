"""The layers' imports point one way: entry points -> sweeps -> trainers -> core; analysis imports none of them.

Walks every module's imports with ast (top-level and function-local alike), so a lazy import cannot hide
an arrow that points the wrong way.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Modules of the entry layer: the command line and the `study run` stage runner. Everything else in study/
# is the core library.
ENTRY = {"study.cli", "study.runner"}
# Lower number = lower layer. A module may import its own layer and any layer below it.
RANK = {"core": 0, "trainers": 1, "sweeps": 2, "entry": 3}


def layer(module: str) -> str | None:
    top = module.split(".")[0]
    if module in ENTRY or any(module.startswith(e + ".") for e in ENTRY):
        return "entry"
    return {"study": "core", "trainers": "trainers", "sweeps": "sweeps", "analysis": "analysis"}.get(top)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wrong_arrows() -> list[str]:
    bad = []
    for pkg in ("study", "trainers", "sweeps", "analysis"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            src = module_name(path)
            here = layer(src)
            for lineno, target in imports(path):
                there = layer(target)
                if there is None or there == here:
                    continue
                if here == "analysis" or there == "analysis" and here != "entry":
                    bad.append(f"{path.relative_to(REPO)}:{lineno}: {src} ({here}) imports {target} ({there})")
                elif there != "analysis" and RANK[there] > RANK[here]:
                    bad.append(f"{path.relative_to(REPO)}:{lineno}: {src} ({here}) imports {target} ({there})")
    return bad


def test_imports_point_one_way():
    bad = wrong_arrows()
    assert not bad, "imports against the layers (entry -> sweeps -> trainers -> core; analysis alone):\n" + "\n".join(bad)


def test_the_walk_sees_lazy_imports(tmp_path):
    # The check must catch an upward import inside a function body, not only at the top of a file.
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from sweeps.sweep import run_sweep\n    import trainers.loop\n")
    assert [t for _, t in imports(path)] == ["sweeps.sweep", "trainers.loop"]
    assert layer("study.config") == "core" and layer("study.runner") == "entry" and layer("sweeps.sweep") == "sweeps"
