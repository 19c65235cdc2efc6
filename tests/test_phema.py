"""Post-hoc EMA (study.phema): a stored profile reconstructs to itself, an intermediate width matches the EMA
tracked directly at that width, and widths no power function has are refused."""

import numpy as np
import pytest
import torch

from study.phema import PowerEMA, coefficients, exponent, overlap, reconstruct, sigma_rel_of


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.10, 0.2])
def test_width_and_exponent_invert_each_other(sigma):
    assert sigma_rel_of(exponent(sigma)) == pytest.approx(sigma, rel=1e-12)


def test_overlap_is_the_integral_of_the_two_densities():
    # Midpoint-rule integral of p_a p_b against the closed form, for spans in either order.
    s = np.linspace(0, 3.0, 600_001)[1:] - 0.5 * 3.0 / 600_000
    density = lambda t, g: np.where(s <= t, (g + 1) * s ** g / t ** (g + 1), 0.0)  # noqa: E731
    for (ta, ga), (tb, gb) in [((1.0, 3.0), (3.0, 7.0)), ((2.5, 7.0), (1.5, 0.5))]:
        numeric = np.sum(density(ta, ga) * density(tb, gb)) * (3.0 / 600_000)
        assert overlap(ta, ga, tb, gb) == pytest.approx(numeric, rel=1e-4)


def _run(steps=1600, every=100, batch=64, seed=0):
    """A random-walk 'training run' of 500 weights, tracked at sigma_rel 0.05 and 0.10 (snapshots every
    `every` steps) and, directly, at 0.07."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(500)
    both, direct = PowerEMA([w], (0.05, 0.10)), PowerEMA([w], (0.07,))
    snaps, drift = [], torch.randn(500, generator=gen) * 0.02
    for i in range(1, steps + 1):
        w += torch.randn(500, generator=gen) * 0.1 + drift
        both.update(i * batch, batch)
        direct.update(i * batch, batch)
        if i % every == 0:
            snaps += [(i * batch, float(s), t) for s, t in both.state(["w"]).items()]
    return snaps, both, direct, steps * batch


def test_a_stored_profile_reconstructs_to_itself_and_an_intermediate_width_to_its_direct_ema():
    snaps, both, direct, end = _run()
    assert torch.equal(reconstruct(snaps, end, 0.05)["w"], both.averages[0][0])
    got, want, neighbour = reconstruct(snaps, end, 0.07)["w"], direct.averages[0][0], both.averages[0][0]
    # Within 2 % of how far the nearest stored width (0.05) is from the target: the reconstruction, not the
    # snapshot it happens to be near, carries the answer.
    assert (got - want).norm() < 0.02 * (neighbour - want).norm()
    # Earlier budgets reconstruct from the snapshots taken by then.
    mid = reconstruct(snaps, end // 2, 0.10)["w"]
    (stored,) = [t["w"] for i, s, t in snaps if i == end // 2 and s == 0.10]
    assert torch.allclose(mid, stored, atol=1e-5)


def test_coefficients_are_a_mean_and_bad_inputs_are_named():
    x = coefficients([100, 200, 100, 200], [0.05, 0.05, 0.10, 0.10], 200, 0.08)
    assert x.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigma_rel=0.3"):
        exponent(0.3)
    with pytest.raises(ValueError, match="each \\(images, sigma_rel\\) once"):
        coefficients([100, 100], [0.05, 0.05], 100, 0.05)
    with pytest.raises(ValueError, match="no snapshot at or before 10 images"):
        reconstruct([(100, 0.05, {"w": torch.zeros(1)})], 10, 0.05)
