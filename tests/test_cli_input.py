"""Bad options and files on the analysis and training commands: one line, exit code 2, checked before any fit
or model is built, with the traceback logged in the run folder the command was given."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli as _cli
from study.config import load_config, to_dict


@pytest.fixture()
def run_folder(tmp_path):
    """A run folder with its config.json and no results yet."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(load_config("tiny"))))
    return run


def test_a_width_the_ladder_cannot_build_is_one_line(monkeypatch, capsys, tmp_path, run_folder):
    code, err = _cli(monkeypatch, capsys, tmp_path, "train", "tiny", "width=999", f"runs_dir={tmp_path}")
    assert code == 2 and len(err) == 1 and "width=999" in err[0] and "8 norm groups" in err[0], err
    code, err = _cli(monkeypatch, capsys, tmp_path, "predict", str(run_folder), "--width", "12")
    assert code == 2 and len(err) == 1 and "--width 12" in err[0] and "8 norm groups" in err[0], err
    code, err = _cli(monkeypatch, capsys, tmp_path, "plan", str(run_folder), "--target", "crossover:16-999")
    assert code == 2 and len(err) == 1 and "names width 999" in err[0], err


@pytest.mark.parametrize("argv, expect", [
    (["predict", "RUN", "--width", "abc"], "Invalid value for '--width'"),
    (["recommend", "RUN", "--fid", "nan", "--images", "1e6"], "--fid nan: expected a finite FID"),
    (["recommend", "RUN", "--fid", "5", "--images", "inf"], "--images inf: expected a finite number"),
    (["recommend", "RUN", "--fid", "-1", "--images", "10"], "--fid -1.0"),
    (["plan", "RUN", "--target", "fid:abc"], "--target unknown target 'fid:abc'"),
    (["plan", "RUN", "--target", "alpha", "--top", "0"], "--top 0"),
    (["ladder", "tiny", "--bogus"], "No such option: --bogus"),
])
def test_options_are_checked_before_the_run_folder_is_read(monkeypatch, capsys, tmp_path, argv, expect):
    # The folder holds no results: a command that read it first would complain about the fit, not the option.
    run = tmp_path / "empty"
    run.mkdir()
    argv = [str(run) if a == "RUN" else a for a in argv]
    code, err = _cli(monkeypatch, capsys, tmp_path, *argv)
    assert code == 2 and len(err) == 1 and expect in err[0], err


@pytest.mark.parametrize("argv", [["predict", "RUN", "--width", "16"], ["plan", "RUN", "--target", "alpha"],
                                  ["recommend", "RUN", "--fid", "5", "--images", "100"]])
def test_the_error_log_goes_to_the_run_folder(monkeypatch, capsys, tmp_path, run_folder, argv):
    code, err = _cli(monkeypatch, capsys, tmp_path, *[str(run_folder) if a == "RUN" else a for a in argv])
    log = run_folder / "errors.log"
    assert code == 2 and len(err) == 1 and f"traceback in {log}" in err[0], err  # (it has no results yet)
    assert log.is_file() and not (tmp_path / "xdg" / "ldm-scaling" / "logs" / "errors.log").exists()


def _table(tmp_path, bad_rows: int, column: str):
    """A power law FID = 80 * params^-0.3 over 30 rows, `bad_rows` of them with a text in `column`."""
    params = np.geomspace(1e5, 1e8, 30)
    df = pd.DataFrame({"params": params, "fid": 80 * params ** -0.3}).astype(object)
    df.loc[: bad_rows - 1, column] = "pending"
    path = tmp_path / "fits.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("column", ["fid", "params"])
def test_fit_refuses_a_csv_with_many_corrupt_rows_as_analyze_does(monkeypatch, capsys, tmp_path, column):
    path = _table(tmp_path, 10, column)
    code, err = _cli(monkeypatch, capsys, tmp_path, "fit", str(path), "--law", "power", "--x", "N=params",
                     "--y", "fid", "--bootstrap", "0")
    assert code == 2 and len(err) == 1, err
    assert "10 of 30 rows are corrupt" in err[0] and f"{column}='pending'" in err[0], err


def test_fit_names_the_few_corrupt_rows_it_skips(tmp_path):
    from analysis.api import fit_csv

    named = r"skipping 2 corrupt row\(s\) \(row 0: fid='pending'; row 1: fid='pending'\)"
    with pytest.warns(UserWarning, match=named):
        res = fit_csv(_table(tmp_path, 2, "fid"), "power", {"N": "params"}, "fid", bootstrap=0)
    assert res["dropped_rows"] == 2
