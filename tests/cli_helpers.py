"""Running the real `study` entry point in the test process."""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch, capsys, tmp_path, *argv) -> tuple[int, list[str]]:
    """Run the real entry point in-process; (exit code, stderr lines)."""
    from cli import main as cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LDM_SCALING_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["study", *argv])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return done.value.code, capsys.readouterr().err.strip().splitlines()
