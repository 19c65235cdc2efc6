"""The held-out denoising loss (study.heldout): identical work for every checkpoint, one timestep per band, and
the loss and its standard error of a known predictor."""

import pytest
import torch

from study.heldout import fixed_work, heldout_loss
from study.schedulers import training_scheduler


class _Zero(torch.nn.Module):
    """Predicts zero noise: its loss is E[eps^2] = 1 at every t."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        return (x * self.w,)


def test_the_work_is_fixed_and_each_band_gets_one_timestep():
    t1, n1 = fixed_work(6, (4, 8, 8), 8, 1000, seed=3)
    t2, n2 = fixed_work(6, (4, 8, 8), 8, 1000, seed=3)
    assert torch.equal(t1, t2) and torch.equal(n1, n2)
    band = torch.div(t1, 125, rounding_mode="floor")
    assert torch.equal(band, torch.arange(8).expand(6, 8))  # stratified: sample i, band k -> t in [125k, 125k+125)
    assert not torch.equal(fixed_work(6, (4, 8, 8), 8, 1000, seed=4)[0], t1)


def test_a_zero_predictor_scores_the_noise_power_with_its_standard_error():
    lat, ctx = torch.randn(200, 4, 8, 8), torch.randn(200, 3, 16)
    res = heldout_loss(_Zero(), training_scheduler(), lat, ctx, buckets=4, seed=0, batch=64)
    assert res["n"] == 200 and len(res["buckets"]) == 4
    assert abs(res["loss"] - 1.0) < 4 * res["loss_se"] and 0 < res["loss_se"] < 0.01
    again = heldout_loss(_Zero(), training_scheduler(), lat, ctx, buckets=4, seed=0, batch=7)
    assert again["loss"] == pytest.approx(res["loss"], rel=1e-6)  # the batch size changes no number


def test_too_few_samples_is_named():
    with pytest.raises(ValueError, match="needs >= 2"):
        heldout_loss(_Zero(), training_scheduler(), torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16))


def test_each_form_of_a_milestone_keeps_its_own_cached_loss(tmp_path):
    """The evaluation caches a checkpoint's held-out loss beside its run; the post-hoc EMA lengths of one milestone
    (phema/sigma-S/milestone-N) are different weights and must not read each other's loss (they did: the cache was
    named by the milestone alone)."""
    from study.config import load_config
    from sweeps.eval_grid import _Loaded

    cfg = load_config("smoke")
    size = tmp_path / "train" / "w8-s0"
    scored = []
    for ckpt in [size / "checkpoints" / "milestone-1", size / "phema" / "sigma-0.050" / "milestone-1",
                 size / "phema" / "sigma-0.100" / "milestone-1", size / "phema" / "sigma-0.050" / "milestone-1"]:
        loaded = object.__new__(_Loaded)  # the cache alone: no evaluator or model needed
        loaded.cfg, loaded.checkpoint, loaded.unet = cfg, str(ckpt), None
        scored.append(loaded._cached(lambda unet, c=str(ckpt): {"heldout_loss": len(c), "from": c})["from"])
    assert scored[:3] == [str(size / "checkpoints" / "milestone-1"),
                          str(size / "phema" / "sigma-0.050" / "milestone-1"),
                          str(size / "phema" / "sigma-0.100" / "milestone-1")]
    assert scored[3] == scored[1]  # the same form again reads its own cache
