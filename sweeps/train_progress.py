"""Progress of the training grid: one bar over every trial's images seen, fed by Tune's results."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ray.tune import Callback


class GridProgress(Callback):
    """A tqdm bar of images seen across all (experiment, size, seed) trials of the grid.

    Tune pickles its callbacks with the experiment and restores them on a rerun, so the bar itself is
    made lazily and left out of the pickle."""

    desc = "train grid"  # a class default: a bar pickled by an older version has no desc of its own

    def __init__(self, total: int, n_trials: int, enabled: bool = True, desc: str = "train grid"):
        """total: images of every trial together (the runs of a grid's experiments may differ in budget)."""
        self.total, self.n_trials, self.enabled, self.desc = total, n_trials, enabled, desc
        self.seen: dict[str, int] = {}
        self._bar = None

    def __getstate__(self):
        return {**self.__dict__, "_bar": None, "seen": {}}

    @property
    def bar(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="img", unit_scale=True, disable=not self.enabled,
                             desc=self.desc)
        return self._bar

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "train_images" not in result:
            return
        images, prev = int(result["train_images"]), self.seen.get(trial.trial_id, 0)
        if images > prev:
            self.bar.update(images - prev)
            self.seen[trial.trial_id] = images
        loss = f" loss {result['loss']:.3f}" if "loss" in result else ""
        size = trial.config.get("size") or trial.config
        exp = f"{size['experiment']} " if "experiment" in size else ""
        self.bar.set_postfix_str(f"{exp}w{size.get('width')}-s{size.get('seed')}{loss}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = sum(t.status == "TERMINATED" for t in trials)
        self.bar.set_description(f"{self.desc} ({done}/{self.n_trials} trials done)")

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()


class StopOnFullDisk(Callback):
    """The first trial to fail on a full disk stops the grid with that one line: every retry and every other size
    would fail on the same disk, each with its own traceback. Raised from here, the grid stops as after a crash:
    the running trials stay unfinished in Tune's state, and a rerun resumes them."""

    def _check(self, trial) -> None:
        from study.errors import DiskFullError, is_disk_full

        try:
            text = Path(trial.error_file).read_text() if trial.error_file else ""
        except OSError:
            text = ""
        if is_disk_full(Exception(text)):
            from study.raycluster import hush_unread_failures

            hush_unread_failures()
            lines = [ln for ln in text.splitlines() if "DiskFullError: " in ln]  # our line, when a write named it
            raise DiskFullError(lines[-1].split("DiskFullError: ", 1)[1] if lines else
                                f"trial {trial.trial_id} failed on a full disk: {text.strip().splitlines()[-1]}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)


# Tune logs each trial's failure with its whole traceback (the worker's, wrapped in Ray's) on the driver's
# console before any callback sees it, and a failed save of its state likewise: on a full disk every running
# trial fails so, and a user reads the study's one line among tracebacks that look like a crash. Ray's
# libraries log through the "ray" logger's own console handler (it does not propagate to the root).
RAY_LOGGER = "ray"
DIVERTED = ("ray.tune", "ray.train")  # the loggers whose tracebacks go to the run's errors.log


class _TracebacksToLog(logging.Filter):
    """Moves Tune's and Ray Train's records that carry a traceback from the console to the run's errors.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        from study.errors import write_log

        if not (record.exc_info and record.exc_info[1] is not None and record.name.startswith(DIVERTED)):
            return True
        try:
            # The grid names each failed size in one line at its end (or the study stops with one line); the
            # traceback stays for bug reports (a failed trial's also in its own error.txt, where Tune writes it).
            return write_log(record.exc_info[1], title=f"{record.name}: {record.getMessage()}") is None
        except Exception:  # never lose the record to a failing log: let it through to the console
            return True


@contextlib.contextmanager
def tracebacks_to_log():
    """Within the block, Tune's and Ray Train's tracebacks go to the run's errors.log instead of the console."""
    handlers, kept = logging.getLogger(RAY_LOGGER).handlers, _TracebacksToLog()
    for h in handlers:
        h.addFilter(kept)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(kept)
