"""Progress of the training grid: one bar over every trial's images seen, fed by Tune's results."""

from __future__ import annotations

from ray.tune import Callback


class GridProgress(Callback):
    """A tqdm bar of images seen across all (size, seed) trials of the grid.

    Tune pickles its callbacks with the experiment and restores them on a rerun, so the bar itself is
    made lazily and left out of the pickle."""

    def __init__(self, total_images: int, n_trials: int, enabled: bool = True):
        self.total, self.n_trials, self.enabled = total_images * n_trials, n_trials, enabled
        self.seen: dict[str, int] = {}
        self._bar = None

    def __getstate__(self):
        return {**self.__dict__, "_bar": None, "seen": {}}

    @property
    def bar(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="img", unit_scale=True, disable=not self.enabled,
                             desc="train grid")
        return self._bar

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "train_images" not in result:
            return
        images, prev = int(result["train_images"]), self.seen.get(trial.trial_id, 0)
        if images > prev:
            self.bar.update(images - prev)
            self.seen[trial.trial_id] = images
        loss = f" loss {result['loss']:.3f}" if "loss" in result else ""
        self.bar.set_postfix_str(f"w{trial.config.get('width')}-s{trial.config.get('seed')}{loss}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = sum(t.status == "TERMINATED" for t in trials)
        self.bar.set_description(f"train grid ({done}/{self.n_trials} trials done)")

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._bar.close()
