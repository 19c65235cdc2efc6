"""Latent consistency distillation: the LCM sampler against diffusers' pipeline, the student, the LCD loss."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, LatentConsistencyModelPipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)

from study.experiments.distillation.student import student_from_teacher
from study.sampling import guidance_embedding, sample, unet_calls
from study.schedulers import make_sampler, training_scheduler
from study.experiments.distillation.lcd import LCD

BATCH, TOKENS, DIM, EMBED = 2, 5, 16, 32


def tiny_unet(seed: int = 0, time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    """A 52k-parameter SD-shaped UNet on 8x8x4 latents (as tests/test_sampling.py), optionally guidance-embedded."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=DIM, attention_head_dim=2, time_cond_proj_dim=time_cond_proj_dim,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def _vae():
    return AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4, layers_per_block=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(BATCH, TOKENS, DIM, generator=g), torch.randn(1, TOKENS, DIM, generator=g),
            torch.randn(BATCH, 4, 8, 8, generator=g))


@pytest.fixture(scope="module")
def lcm_unet():
    unet = tiny_unet(seed=2, time_cond_proj_dim=EMBED)
    with torch.no_grad():  # a random (not zero) guidance projection, so a wrong w embedding would show
        unet.time_embedding.cond_proj.weight.normal_(0, 0.5)
    return unet


# --- sampling ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 4, 8])
@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_lcm_matches_latent_consistency_pipeline(lcm_unet, inputs, steps, guidance):
    cond, _, latents = inputs
    scheduler = make_sampler("lcm", training_scheduler())
    pipe = LatentConsistencyModelPipeline(vae=_vae(), text_encoder=None, tokenizer=None, unet=lcm_unet,
                                          scheduler=copy.deepcopy(scheduler), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt_embeds=cond, latents=latents.clone(), num_inference_steps=steps,
                    guidance_scale=guidance, generator=torch.Generator().manual_seed(7), output_type="latent").images
    ours = sample(lcm_unet, "lcm", steps, guidance, cond, None, latents, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    assert unet_calls(lcm_unet, steps, guidance) == steps  # one UNet call per step, whatever the guidance
    if steps > 1:  # fresh noise between steps comes from the generator
        other = sample(lcm_unet, "lcm", steps, guidance, cond, None, latents, torch.Generator().manual_seed(8))
        assert not torch.allclose(other, ours)


def test_guidance_embedded_unet_matches_stable_diffusion_pipeline(lcm_unet, inputs):
    # StableDiffusionPipeline too embeds guidance - 1 and drops the unconditional half for such UNets.
    cond, uncond, latents = inputs
    scheduler = make_sampler("ddim", training_scheduler())
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=None, tokenizer=None, unet=lcm_unet,
                                   scheduler=copy.deepcopy(scheduler), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt_embeds=cond, latents=latents.clone(), num_inference_steps=4, guidance_scale=3.0,
                    output_type="latent").images
    torch.testing.assert_close(sample(lcm_unet, scheduler, 4, 3.0, cond, uncond, latents), expected,
                               rtol=1e-6, atol=1e-6)
    assert unet_calls(tiny_unet(), 4, 3.0) == 8 and unet_calls(tiny_unet(), 4, 1.0) == 4


def test_lcm_schedule_is_the_distillation_grid():
    lcm = make_sampler("lcm", training_scheduler())
    lcm.set_timesteps(4)
    assert lcm.timesteps.tolist() == [999, 759, 499, 259]  # LCM paper / diffusers' 4-step schedule


@pytest.mark.parametrize("grid", [4, 10])
def test_a_coarse_skip_grid_is_shared_by_the_teacher_step_and_the_sampler(lcm_unet, inputs, grid):
    """distill.skip_grid: the teacher steps on the grid the LCM sampler samples on, and a student that records
    the grid samples on it (study.sampling reads it off the UNet's config)."""
    from study.schedulers import LCM_GRID_KEY

    lcd, _ = _lcd(solver_steps=grid)
    k = 1000 // grid
    assert lcd.k == k and lcd.grid.tolist() == [k * i - 1 for i in range(1, grid + 1)]
    lcm = make_sampler("lcm", training_scheduler(), lcm_grid=grid)
    lcm.set_timesteps(4)
    assert set(lcm.timesteps.tolist()) <= set(lcd.grid.tolist()) and lcm.timesteps[0] == 999
    if grid == 4:
        assert lcm.timesteps.tolist() == [999, 749, 499, 249]
    cond, _, latents = inputs
    student = copy.deepcopy(lcm_unet)
    student.register_to_config(**{LCM_GRID_KEY: grid})
    ours = sample(student, "lcm", 4, 2.0, cond, None, latents, torch.Generator().manual_seed(7))
    explicit = sample(lcm_unet, lcm, 4, 2.0, cond, None, latents, torch.Generator().manual_seed(7))
    default = sample(lcm_unet, "lcm", 4, 2.0, cond, None, latents, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, explicit, rtol=0, atol=0)
    assert not torch.allclose(ours, default)  # 759/259 on the default grid: another schedule
    with pytest.raises(ValueError, match="lcm_grid"):
        make_sampler("ddim", training_scheduler(), lcm_grid=grid)


def test_skip_grid_settings_are_checked_and_named_in_the_identity():
    from study.config import ConfigError, load_config
    from trainers.recipes.distillation import lcd_options

    assert "skip_grid" not in lcd_options(load_config("tiny", ["distill.skip_grid=50"]))  # LCM-SD's: no new key
    assert lcd_options(load_config("tiny", ["distill.skip_grid=4"]))["skip_grid"] == 4
    with pytest.raises(ConfigError, match="distill.skip_grid"):
        load_config("tiny", ["distill.skip_grid=3"])
    with pytest.raises(ConfigError, match="distill.steps"):
        load_config("tiny", ["distill.skip_grid=2", "distill.steps=[1,2,4]"])
    opts = lcd_options(load_config("tiny", ["distill.ema_decay=0.9", "distill.target_decay=0"]))
    assert opts["ema_decay"] == 0  # the target network: iCT's, the student itself
    assert lcd_options(load_config("tiny", ["distill.ema_decay=0.9", "distill.target_decay=null"]))["ema_decay"] == 0.9


# --- the student ------------------------------------------------------------------------------------

def test_student_starts_at_the_teacher(inputs):
    cond, _, latents = inputs
    teacher = tiny_unet(seed=4)
    teacher.register_to_config(prediction_type="v_prediction")
    student = student_from_teacher(teacher, EMBED).eval()
    assert student.config.time_cond_proj_dim == EMBED and student.config.prediction_type == "v_prediction"
    assert torch.count_nonzero(student.time_embedding.cond_proj.weight) == 0
    t = torch.tensor([999, 10])
    with torch.no_grad():
        expected = teacher(latents, t, encoder_hidden_states=cond).sample
        for w in (0.0, 3.0, 12.0):
            emb = guidance_embedding(torch.full((BATCH,), w), EMBED)
            got = student(latents, t, encoder_hidden_states=cond, timestep_cond=emb).sample
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # Every teacher weight was copied, not just the shapes.
    assert all(torch.equal(student.state_dict()[k], v) for k, v in teacher.state_dict().items())
    with pytest.raises(ValueError, match="already takes a guidance input"):
        student_from_teacher(student)


# --- the LCD loss -----------------------------------------------------------------------------------

def _lcd(teacher=None, **kw):
    teacher = teacher or tiny_unet(seed=5)
    student = student_from_teacher(teacher, EMBED)
    uncond = torch.randn(1, TOKENS, DIM, generator=torch.Generator().manual_seed(3))
    return LCD(copy.deepcopy(teacher), student, uncond, **kw), student


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_teacher_step_is_a_guided_ddim_step(inputs, prediction_type):
    # One step of diffusers' DDIMScheduler on the 50-step trailing grid (999, 979, ..., 19) with CFG scale w + 1.
    cond, _, latents = inputs
    lcd, _ = _lcd(prediction_type=prediction_type)
    ddim = DDIMScheduler.from_config(training_scheduler(prediction_type).config, timestep_spacing="trailing",
                                     set_alpha_to_one=False, clip_sample=False)
    ddim.set_timesteps(50)
    assert ddim.timesteps.flip(0).tolist() == lcd.grid.tolist()
    w = 2.5
    for t in (999, 519, 19):  # the last one steps to t = 0 (DDIM's final alpha = alphas_cumprod[0])
        start = torch.full((BATCH,), t)
        ours = lcd.teacher_step(latents, start, cond, torch.full((BATCH,), w))
        with torch.no_grad():
            out = lcd.teacher(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat(
                [lcd.uncond.expand_as(cond), cond])).sample
        uncond_out, cond_out = out.chunk(2)
        guided = uncond_out + (w + 1) * (cond_out - uncond_out)
        expected = ddim.step(guided, t, latents, eta=0.0).prev_sample
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_loss_is_a_function_of_the_generator_and_trains(inputs):
    cond, _, latents = inputs
    for kind in ("l2", "huber"):
        lcd, student = _lcd(loss=kind, w_min=1.0, w_max=3.0)
        a = lcd.loss(student, latents, cond, torch.Generator().manual_seed(0))
        b = lcd.loss(student, latents, cond, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.item() > 0 and a.requires_grad
        assert not torch.equal(a, lcd.loss(student, latents, cond, torch.Generator().manual_seed(1)))
    # A few optimizer steps on one fixed batch of draws lower the loss (gradients reach the student).
    lcd, student = _lcd(loss="l2", w_min=1.0, w_max=3.0)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = lcd.loss(student, latents, cond, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_target_network_is_a_constant_decay_ema_and_round_trips(inputs):
    lcd, student = _lcd(target_decay=0.9)
    before = {n: p.clone() for n, p in lcd.target.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    lcd.update_target(student)  # EMAModel's first update copies the student (its decay is 0 at step 1)
    for n, p in lcd.target.named_parameters():
        torch.testing.assert_close(p, dict(student.named_parameters())[n], rtol=0, atol=0)
        before[n] = p.clone()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    lcd.update_target(student)
    for n, p in lcd.target.named_parameters():  # then 0.9 old + 0.1 new at every step (no EMA warm-up)
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * dict(student.named_parameters())[n])
    state = lcd.state()
    fresh, _ = _lcd(target_decay=0.9)
    fresh.load_state(state)
    assert fresh.ema.optimization_step == 2
    for (n, p), q in zip(lcd.target.named_parameters(), fresh.target.parameters()):
        assert torch.equal(p, q), n


def test_target_decay_zero_makes_the_target_the_student(inputs):
    lcd, student = _lcd(target_decay=0.0)
    for _ in range(2):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.5)
        lcd.update_target(student)
        for (n, p), q in zip(lcd.target.named_parameters(), student.parameters()):
            assert torch.equal(p, q), n
    assert not lcd.target.training and not any(p.requires_grad for p in lcd.target.parameters())


def test_bad_settings():
    with pytest.raises(ValueError, match="distill.loss"):
        _lcd(loss="l1")
    with pytest.raises(ValueError, match="w_min"):
        _lcd(w_min=3.0, w_max=1.0)
