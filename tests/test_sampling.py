"""Our sampling loop against diffusers' own StableDiffusionPipeline on a tiny UNet, plus its contract."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

from study.sampling import sample
from study.schedulers import make_sampler, training_scheduler

BATCH, TOKENS, DIM = 2, 5, 16
STEPS = 4


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    """A 52k-parameter SD-shaped UNet on 8x8x4 latents, randomly initialised from a fixed seed."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=DIM,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    return unet.eval()


def tiny_pipeline(unet: UNet2DConditionModel, scheduler) -> StableDiffusionPipeline:
    """The real pipeline around our UNet; text encoder and tokenizer are unused when embeddings are given."""
    vae = AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        # The pipeline's __init__ may rewrite its scheduler's config: give it its own copy.
        scheduler=copy.deepcopy(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(pipe, steps, guidance, cond, uncond, latents, seed=None):
    """Latents from StableDiffusionPipeline.__call__ with precomputed embeddings and noise."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        latents=latents.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generator,
        output_type="latent",
    ).images


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(BATCH, TOKENS, DIM, generator=g)
    uncond = torch.randn(1, TOKENS, DIM, generator=g)
    latents = torch.randn(BATCH, 4, 8, 8, generator=g)
    return cond, uncond, latents


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++"])
@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("spacing", [None, "trailing"])
def test_matches_stable_diffusion_pipeline(unet, inputs, name, guidance, spacing):
    cond, uncond, latents = inputs
    scheduler = make_sampler(name, training_scheduler(), timestep_spacing=spacing)
    pipe = tiny_pipeline(unet, scheduler)
    expected = run_pipeline(pipe, STEPS, guidance, cond, uncond.expand(BATCH, -1, -1), latents, seed=7)
    ours = sample(unet, scheduler, STEPS, guidance, cond, uncond, latents, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    # Naming the sampler builds the same scheduler from SD1.5's training schedule.
    by_name = sample(unet, name, STEPS, guidance, cond, uncond, latents, torch.Generator().manual_seed(7),
                     timestep_spacing=spacing)
    torch.testing.assert_close(by_name, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++"])
def test_v_prediction_matches_pipeline(inputs, name):
    cond, uncond, latents = inputs
    unet = tiny_unet(seed=3)
    scheduler = make_sampler(name, training_scheduler("v_prediction"))
    assert scheduler.config.prediction_type == "v_prediction"
    expected = run_pipeline(tiny_pipeline(unet, scheduler), STEPS, 3.0, cond, uncond.expand(BATCH, -1, -1), latents)
    ours = sample(unet, name, STEPS, 3.0, cond, uncond, latents, prediction_type="v_prediction")
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    # A UNet that records its prediction type is sampled with it when the sampler is named.
    unet.register_to_config(prediction_type="v_prediction")
    torch.testing.assert_close(sample(unet, name, STEPS, 3.0, cond, uncond, latents), expected, rtol=1e-6, atol=1e-6)
    eps = sample(unet, name, STEPS, 3.0, cond, uncond, latents, prediction_type="epsilon")
    assert not torch.allclose(eps, expected)


def test_ddpm_seed_drives_noise(unet, inputs):
    cond, uncond, latents = inputs

    def run(seed):
        return sample(unet, "ddpm", STEPS, 3.0, cond, uncond, latents, torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++"])
def test_deterministic_samplers_repeat_and_batch(unet, inputs, name):
    cond, uncond, latents = inputs
    batched = sample(unet, name, STEPS, 3.0, cond, uncond, latents)
    torch.testing.assert_close(sample(unet, name, STEPS, 3.0, cond, uncond, latents), batched, rtol=0, atol=0)
    for i in range(BATCH):
        single = sample(unet, name, STEPS, 3.0, cond[i : i + 1], uncond, latents[i : i + 1])
        torch.testing.assert_close(single, batched[i : i + 1], rtol=1e-4, atol=1e-4)


def test_uncond_broadcasts_over_batch(unet, inputs):
    cond, uncond, latents = inputs
    broadcast = sample(unet, "ddim", STEPS, 5.0, cond, uncond, latents)
    explicit = sample(unet, "ddim", STEPS, 5.0, cond, uncond.expand(BATCH, -1, -1).clone(), latents)
    torch.testing.assert_close(broadcast, explicit, rtol=0, atol=0)


def test_guidance_one_ignores_uncond(unet, inputs):
    cond, uncond, latents = inputs
    with_uncond = sample(unet, "ddim", STEPS, 1.0, cond, uncond, latents)
    torch.testing.assert_close(sample(unet, "ddim", STEPS, 1.0, cond, None, latents), with_uncond, rtol=0, atol=0)
    with pytest.raises(ValueError, match="uncond"):
        sample(unet, "ddim", STEPS, 2.0, cond, None, latents)


def test_caller_scheduler_is_not_mutated(unet, inputs):
    cond, uncond, latents = inputs
    scheduler = make_sampler("dpmsolver++", training_scheduler())
    before = scheduler.timesteps.clone()
    sample(unet, scheduler, STEPS, 3.0, cond, uncond, latents)
    assert scheduler.num_inference_steps is None
    torch.testing.assert_close(scheduler.timesteps, before, rtol=0, atol=0)


def test_errors(unet, inputs):
    cond, uncond, latents = inputs
    with pytest.raises(ValueError, match="'ddpm', 'ddim', 'dpmsolver\\+\\+'"):
        sample(unet, "euler", STEPS, 3.0, cond, uncond, latents)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            sample(unet, "ddim", steps, 3.0, cond, uncond, latents)
    with pytest.raises(ValueError, match="timestep_spacing"):
        sample(unet, "ddim", STEPS, 3.0, cond, uncond, latents, timestep_spacing="uniform")
    with pytest.raises(ValueError, match="contradicts"):
        sample(unet, make_sampler("ddim", training_scheduler()), STEPS, 3.0, cond, uncond, latents,
               prediction_type="v_prediction")
