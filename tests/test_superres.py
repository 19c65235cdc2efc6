"""Super-resolution core: the widened model starts as the base model, the SR sampling path, the data sources."""

import json

import numpy as np
import pytest
import torch

from study.ladder import LADDERS, Geometry, build_unet
from study.experiments.superres.model import augment, lr_condition, superres_loss, upscale, widen_for_superres
from study.experiments.superres.data import SCALE, downsample, load_pair_source, upsample


def _base(width=8, channels=1, seed=0):
    torch.manual_seed(seed)
    unet = build_unet(LADDERS["tiny"], width, Geometry(channels, 8, 32, 4))
    with torch.no_grad():  # a "trained" model: no parameter left at an init value that could hide a bug
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_widened_model_equals_base_for_any_lr_input(channels):
    base = _base(channels=channels)
    sr = widen_for_superres(base, channels).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, channels, 16, 16, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    ctx = torch.randn(4, 4, 32, generator=g)
    with torch.no_grad():
        want = base(x, t, encoder_hidden_states=ctx).sample
        for trial in range(3):  # LR inputs of any scale, and any noise level: the output must not move
            lr = torch.randn(4, channels, 16, 16, generator=g) * 10 ** trial
            level = torch.randint(0, 1000, (4,), generator=g)
            got = sr(torch.cat([x, lr], 1), t, encoder_hidden_states=ctx, class_labels=level).sample
            assert torch.equal(got, want)
    assert torch.equal(sr.conv_in.bias, base.conv_in.bias)  # the bias instruct-pix2pix forgets
    assert torch.equal(sr.conv_in.weight[:, :channels], base.conv_in.weight)
    assert not sr.conv_in.weight[:, channels:].any() and not sr.class_embedding.weight.any()


def test_widened_model_survives_its_saved_config():
    sr = widen_for_superres(_base(), 1)
    from diffusers import UNet2DConditionModel

    again = UNet2DConditionModel.from_config(json.loads(json.dumps(dict(sr.config), default=list)))
    again.load_state_dict(sr.state_dict())  # strict: the class embedding and wide conv_in are in the config
    assert again.config.in_channels == 2 and again.config.num_class_embeds == 1000


def test_widening_refuses_a_class_conditioned_base():
    sr = widen_for_superres(_base(), 1)
    with pytest.raises(ValueError, match="class embedding"):
        widen_for_superres(sr, 1)


def test_loss_trains_the_new_input_weights_and_noise_embedding():
    from study.schedulers import training_scheduler

    sr = widen_for_superres(_base(), 1)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 1, 16, 16) * 2 - 1
    loss = superres_loss(sr, training_scheduler(), hr, torch.rand(4, 1, 16, 16) * 2 - 1, torch.zeros(4, 4, 32),
                         350, g, torch.float32)
    loss.backward()
    assert torch.isfinite(loss)
    assert sr.conv_in.weight.grad[:, 1:].abs().sum() > 0  # zero weights, non-zero gradients: they learn
    assert sr.class_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmsolver++"])
def test_upscale_conditions_every_step_on_the_lr_image(sampler):
    base = _base()
    sr = widen_for_superres(base, 1)
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = torch.zeros(1, 4, 32)
    lr_a, lr_b = (lr_condition(torch.rand(2, 1, 4, 4) * 255, 16) for _ in range(2))

    def run(model, lr):
        return upscale(model, sampler, 3, lr, ctx, noise, torch.Generator().manual_seed(5),
                       aug_generator=torch.Generator().manual_seed(6))

    # zero-initialised: the LR image cannot matter yet, and the result is the base model's own sampling
    assert torch.equal(run(sr, lr_a), run(sr, lr_b))
    with torch.no_grad():
        sr.conv_in.weight[:, 1:].normal_()
    assert not torch.allclose(run(sr, lr_a), run(sr, lr_b))


def test_augment_is_the_upscalers_noise_schedule():
    lr = torch.ones(2, 1, 4, 4)
    same = augment(lr, torch.tensor([0, 0]), torch.Generator().manual_seed(0))
    noisy = augment(lr, torch.tensor([350, 350]), torch.Generator().manual_seed(0))
    assert (same - lr).abs().max() < 0.05 < (noisy - lr).abs().mean()


def test_lr_condition_resizes_to_the_latent_grid():
    lr = torch.rand(3, 3, 32, 32) * 255
    assert lr_condition(lr, 128).shape == (3, 3, 128, 128)  # pixel space: the bicubic upsampling
    assert lr_condition(lr, 16).shape == (3, 3, 16, 16)  # SD's VAE (1/8): the 4x-smaller image is shrunk
    assert lr_condition(lr, 32).min() >= -1 and lr_condition(lr, 32).max() <= 1


def test_embedded_pairs_are_held_out_by_photograph_and_pure_in_position():
    src = load_pair_source("embedded", None, 16, 1, 0, 64, photo_shrink=2)
    assert not {p.name for p in src.train} & {p.name for p in src.valid}
    hr, lr = src.train_pairs(1000, 40)  # across the 1024-position block boundary
    hr2, lr2 = src.train_pairs(1010, 10)
    assert torch.equal(hr[10:20], hr2) and torch.equal(lr[10:20], lr2)
    assert hr.shape == (40, 1, 16, 16) and lr.shape == (40, 1, 4, 4)
    assert torch.equal(lr, downsample(hr))
    e_hr, e_lr = src.eval_pairs()
    assert e_hr.shape == (64, 1, 16, 16) and e_hr.std() > 10  # photographs, not flat patches
    assert upsample(e_lr, 16).shape == e_hr.shape


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_div2k_layout_uses_the_lr_files_where_present(tmp_path):
    rng = np.random.default_rng(0)
    for split, names in (("train", ["0001", "0002"]), ("valid", ["0801"])):
        for n in names:
            _png(tmp_path / f"DIV2K_{split}_HR" / f"{n}.png", rng.integers(0, 256, (48, 64, 3)))
    # train LR files: a constant 77, so we can tell they were read rather than computed
    for n in ("0001", "0002"):
        _png(tmp_path / "DIV2K_train_LR_bicubic" / f"X{SCALE}" / f"{n}x{SCALE}.png", np.full((12, 16, 3), 77))
    src = load_pair_source("div2k", str(tmp_path), 16, 3, 0, 4)
    hr, lr = src.train_pairs(0, 6)
    assert hr.shape == (6, 3, 16, 16) and lr.shape == (6, 3, 4, 4) and (lr == 77).all()
    e_hr, e_lr = src.eval_pairs()  # no valid LR folder: bicubic downsampling of the HR crops
    assert len(e_hr) == 4 and torch.equal(e_lr, downsample(e_hr))

    (tmp_path / "DIV2K_train_LR_bicubic" / f"X{SCALE}" / "0002x4.png").unlink()
    with pytest.raises(ValueError, match="lacks 0002x4.png"):
        load_pair_source("div2k", str(tmp_path), 16, 3, 0, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="DIV2K_train_HR"):
        load_pair_source("div2k", str(tmp_path / "empty"), 16, 3, 0, 4)


def test_imagefolder_holds_out_whole_files(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        _png(tmp_path / f"img{i}.png", rng.integers(0, 256, (32, 32)))
    src = load_pair_source("imagefolder", str(tmp_path), 16, 1, 0, 8, eval_fraction=0.2)
    assert len(src.valid) == 2 and not set(src.train) & set(src.valid)
    hr, lr = src.eval_pairs()
    assert hr.shape == (8, 1, 16, 16) and lr.shape == (8, 1, 4, 4)


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="superres.root"):
        load_pair_source("div2k", None, 16, 3, 0, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        load_pair_source("embedded", None, 18, 1, 0, 4)


def test_residual_round_trip_and_zero_residual_is_bicubic():
    from study.autoencoder import LatentSpace
    from study.experiments.superres.model import bicubic_latents, from_residual, to_residual

    space = LatentSpace()  # pixel space: latents are the images in [-1, 1]
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 1, 16, 16, generator=g) * 255
    lr = downsample(hr)
    bic = bicubic_latents(space, lr, 16)
    assert bic.shape == (3, 1, 16, 16)
    assert torch.allclose(bic, space.encode(upsample(lr, 16)))
    hr_lat = space.encode(hr)
    res = to_residual(hr_lat, bic, 4.0)
    assert res.shape == hr_lat.shape
    assert torch.allclose(res, (hr_lat - bic) * 4.0)
    assert torch.allclose(from_residual(res, bic, 4.0), hr_lat, atol=1e-6)  # the inverse
    # a model that samples a zero residual outputs the bicubic upsample: the baseline, exactly
    assert torch.allclose(space.decode(from_residual(torch.zeros_like(res), bic, 4.0)), upsample(lr, 16), atol=1e-4)


def test_the_residual_scale_travels_with_the_checkpoint():
    from diffusers import UNet2DConditionModel

    from study.experiments.superres.model import residual_scale

    assert residual_scale(widen_for_superres(_base(), 1)) is None  # concat: the SD x4 upscaler's recipe
    sr = widen_for_superres(_base(), 1, residual_scale=4.0)
    again = UNet2DConditionModel.from_config(json.loads(json.dumps(dict(sr.config), default=list)))
    assert residual_scale(again) == 4.0
    with pytest.raises(ValueError, match="residual_scale"):
        widen_for_superres(_base(), 1, residual_scale=0.0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmsolver++"])
def test_a_residual_model_predicting_the_sample_starts_at_bicubic_and_learns(sampler):
    # superres.prediction_type=sample with the residual formulation (ResShift predicts x0): the output layer starts
    # at zero, so before training every sampler returns a zero residual (the bicubic upsample); the loss then
    # regresses the residual itself and reaches the output layer.
    from diffusers import UNet2DConditionModel

    from study.schedulers import training_scheduler

    sr = widen_for_superres(_base(), 1, residual_scale=4.0, prediction_type="sample")
    assert sr.config.prediction_type == "sample" and not sr.conv_out.weight.any()
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    lr = lr_condition(torch.rand(2, 1, 4, 4) * 255, 16)
    out = upscale(sr, sampler, 3, lr, torch.zeros(1, 4, 32), noise, torch.Generator().manual_seed(5),
                  prediction_type="sample", aug_generator=torch.Generator().manual_seed(6))
    # (DDIM as SD configures it, set_alpha_to_one=False, ends at abar_0 = 0.99915, not 1: sqrt(1 - abar_0) = 0.03 of
    # the noise stays, about one grey level of 255 after the residual's scale; DDPM and DPM-Solver++ end at zero.)
    assert out.std() < (0.04 if sampler == "ddim" else 1e-6) * noise.std(), out.std()
    target = torch.rand(4, 1, 16, 16) - 0.5
    loss = superres_loss(sr, training_scheduler("sample"), target, torch.rand(4, 1, 16, 16) * 2 - 1,
                         torch.zeros(4, 4, 32), 350, torch.Generator().manual_seed(0), torch.float32)
    assert loss.item() == pytest.approx(float((target ** 2).mean()), rel=1e-5)  # a zero prediction's error
    loss.backward()
    assert sr.conv_out.weight.grad.abs().sum() > 0
    again = UNet2DConditionModel.from_config(json.loads(json.dumps(dict(sr.config), default=list)))
    assert again.config.prediction_type == "sample"  # the evaluation samples with what it was trained for
    # Without the residual formulation nothing is zeroed: the concat model keeps the base's output layer.
    assert widen_for_superres(_base(), 1, prediction_type="sample").conv_out.weight.any()


def test_the_formulation_is_part_of_the_runs_identity():
    from study.config import ConfigError, load_config
    from sweeps.experiments.superres import SuperResExperiment

    exp = SuperResExperiment()
    concat = exp.options(load_config("tiny", ["superres.formulation=concat"]))
    residual = exp.options(load_config("tiny", ["superres.formulation=residual", "superres.prediction_type=''"]))
    scaled = exp.options(load_config("tiny", ["superres.formulation=residual", "superres.residual_scale=2.0",
                                              "superres.prediction_type=''"]))
    assert concat["formulation"] == "concat" and "residual_scale" not in concat
    sample = exp.options(load_config("tiny", ["superres.formulation=residual", "superres.prediction_type=sample"]))
    assert "prediction_type" not in residual  # the base's, as before the key existed
    assert len({json.dumps(o, sort_keys=True) for o in (concat, residual, scaled, sample)}) == 4
    with pytest.raises(ConfigError, match="superres.prediction_type"):
        load_config("tiny", ["superres.prediction_type=x0"])
    with pytest.raises(ConfigError, match="superres.formulation"):
        load_config("tiny", ["superres.formulation=shift"])
