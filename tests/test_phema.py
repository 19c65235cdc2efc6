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


def _size_dir(tmp_path, snaps, ranks: int = 2):
    """A training run's folder as the trainer leaves it: snapshots split over `ranks` files (each rank its share
    of the tensors), a milestone whose ema.safetensors holds the parameters and a buffer, milestones.json."""
    import json

    from safetensors.torch import save_file

    from study.phema import snapshot_path
    from study.weights import FILES, STATE, manifest

    (tmp_path / "phema").mkdir(parents=True)
    names = sorted(snaps[0][2])
    for images in sorted({i for i, _, _ in snaps}):
        for r in range(ranks):
            mine = names[r::ranks]
            flat = {f"{s:.3f}/{n}": d[n] for i, s, d in snaps if i == images for n in mine}
            save_file(flat, snapshot_path(tmp_path, images, f"-rank{r}of{ranks}"))
    end = max(i for i, _, _ in snaps)
    ckpt = tmp_path / "checkpoints" / f"images-{end}"
    ckpt.mkdir(parents=True)
    last = {n: t.clone() for n, t in snaps[-1][2].items()}
    save_file({**last, "buffer.running": torch.arange(3, dtype=torch.int64)}, ckpt / "ema.safetensors")
    (ckpt / "unet.json").write_text("{}")
    (ckpt / STATE).write_text(json.dumps({"train_images": end, FILES: manifest(ckpt)}))
    (tmp_path / "milestones.json").write_text(json.dumps([{"train_images": end, "path": f"checkpoints/images-{end}"}]))
    return end


def test_a_streamed_checkpoint_equals_the_all_at_once_reconstruction(tmp_path):
    """reconstruct_checkpoint reads one tensor at a time from each snapshot file (lazy snapshots, a streamed
    safetensors file): its weights equal, bit for bit, the reconstruction from every snapshot loaded at once."""
    from safetensors.torch import load_file

    from study.phema import load_snapshots, reconstruct_checkpoint

    gen = torch.Generator().manual_seed(1)
    shapes = {"a.weight": (4, 3), "a.bias": (4,), "b.weight": (2, 2, 3, 3), "c.scale": ()}
    ws = {n: torch.zeros(s) for n, s in shapes.items()}
    ema, snaps = PowerEMA(list(ws.values()), (0.05, 0.10)), []
    for i in range(1, 401):
        for w in ws.values():
            w += torch.randn(w.shape, generator=gen) * 0.1
        ema.update(i * 16, 16)
        if i % 50 == 0:
            snaps += [(i * 16, float(s), d) for s, d in ema.state(list(ws)).items()]
    end = _size_dir(tmp_path, snaps)
    lazy = load_snapshots(tmp_path)
    assert [(i, s) for i, s, _ in lazy] == [(i, s) for i, s, _ in snaps]
    out = reconstruct_checkpoint(tmp_path, 0.07)
    got = load_file(out / "ema.safetensors")
    want = reconstruct(snaps, end, 0.07)  # every snapshot in memory at once
    assert set(got) == set(shapes) | {"buffer.running"}
    for n in shapes:
        assert got[n].dtype == torch.float32 and torch.equal(got[n], want[n]), n
    assert torch.equal(got["buffer.running"], torch.arange(3))  # the milestone's buffers as they were
    # The lazy snapshots read a tensor only when asked: a reconstruction from them is the same too.
    assert all(torch.equal(a, want[n]) for n, a in reconstruct(lazy, end, 0.07).items())
