"""Progress of the training grid: one bar over every trial's images seen, fed by Tune's results."""

from __future__ import annotations

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
