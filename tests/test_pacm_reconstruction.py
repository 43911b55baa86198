"""PACM's source stages reconstruct the source: pose-aware inversion (paper mode) and direct-inversion offsets.

Reconstructions are sampled by an independent reference sampler written here: diffusers' own `DDIMScheduler.step`,
with the ControlNet and the UNet called directly, not PACM's DDIM code.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from zeroshot.pacm import DDIMSchedule, PACMSettings, run_pacm
from zeroshot.prompts import encode_prompt
from zeroshot.testing import astronaut, build_random_components

STEPS = 20


def _relative_error(estimate, reference):
    return float((estimate - reference).norm() / reference.norm())


@torch.no_grad()
def _reference_sample(components, pose, start, embeddings_at, guidance, steps, offsets=None):
    """DDIM sampling from `start` with diffusers' scheduler; `embeddings_at(i)` gives (unconditional, conditional)
    `[1, L, D]`."""
    scheduler = DDIMScheduler.from_config(components.scheduler.config)
    scheduler.set_timesteps(steps)
    latents = start
    for i, t in enumerate(scheduler.timesteps):
        text = torch.cat(embeddings_at(i))
        sample = latents.expand(2, -1, -1, -1)
        down, mid = components.controlnet(
            sample, t, text, controlnet_cond=pose.expand(2, -1, -1, -1), return_dict=False
        )
        noise = components.unet(
            sample, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        unconditional, conditional = noise.chunk(2)
        noise = unconditional + guidance * (conditional - unconditional)
        latents = scheduler.step(noise, t, latents).prev_sample
        if offsets is not None:
            latents = latents + offsets[i]
    return latents


def _source_embeddings(result):
    return lambda step: result.step_embeddings(step, [0])


def _inputs(components, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    return latent, pose, prompt


NO_FRAMES = torch.zeros(0, 3, 64, 64)


@pytest.mark.parametrize(
    "config",
    [{}, {"set_alpha_to_one": True}, {"set_alpha_to_one": True, "steps_offset": 0}],
    ids=["sd15", "alpha-to-one", "alpha-to-one-offset-0"],
)
def test_ddim_schedule_matches_diffusers_and_inverts_exactly(tiny_components, config):
    # SD 1.5 sets set_alpha_to_one=False: its last step goes to alphas_cumprod[0]. With True, the last step goes to
    # final_alpha_cumprod = 1 (the clean sample itself).
    scheduler = DDIMScheduler.from_config(tiny_components.scheduler.config, **config)
    scheduler.set_timesteps(STEPS)
    schedule = DDIMSchedule.from_scheduler(scheduler, STEPS)
    torch.testing.assert_close(schedule.timesteps, scheduler.timesteps, rtol=0, atol=0)
    assert float(schedule.alphas_prev[-1]) == (1.0 if config else float(scheduler.alphas_cumprod[0]))
    generator = torch.Generator().manual_seed(1)
    for step, t in enumerate(scheduler.timesteps):
        latents, noise = torch.randn(2, 1, 4, 8, 8, generator=generator)
        expected = scheduler.step(noise, t, latents).prev_sample
        sampled = schedule.sample_step(latents, noise, step)
        torch.testing.assert_close(sampled, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(schedule.inversion_step(sampled, noise, step), latents, rtol=1e-5, atol=1e-5)


def test_pose_aware_inversion_reconstructs_ten_times_better_than_the_prompt_embedding(tiny_components):
    latent, pose, prompt = _inputs(tiny_components)
    # The tiny random UNet needs a larger learning rate than SD 1.5's 1e-2 to converge in 20 steps.
    settings = PACMSettings(num_inference_steps=STEPS, learning_rate=5e-2)
    result = run_pacm(tiny_components, latent, prompt, pose, NO_FRAMES, settings, show_progress=False)
    torch.testing.assert_close(result.latents[0], latent[0])
    start = result.latents[-1][None]

    plain = (prompt.unconditional[None], prompt.conditional[None])
    unguided = _reference_sample(tiny_components, pose, start, lambda i: plain, 1.0, STEPS)
    unoptimized = _reference_sample(tiny_components, pose, start, lambda i: plain, 7.5, STEPS)
    optimized = _reference_sample(tiny_components, pose, start, _source_embeddings(result), 7.5, STEPS)

    # The inversion mirrors diffusers' sampler: at guidance 1 the round trip is close (3.8% measured).
    assert _relative_error(unguided, latent) < 0.08
    ratio = _relative_error(unoptimized, latent) / _relative_error(optimized, latent)
    assert ratio >= 10, f"optimised embeddings reconstruct only {ratio:.1f}x better than the prompt's"
    assert result.stats["source"].backward > 0
    # The conditional slot was optimised; the unconditional one kept the empty prompt's embedding.
    torch.testing.assert_close(result.fixed_embedding, prompt.unconditional)
    assert not torch.allclose(result.source_embeddings[0], prompt.conditional)


def _psnr(image, reference):
    mse = F.mse_loss(image.double(), reference.double()).item()
    return 10 * math.log10(4.0 / mse)  # images in [-1, 1]: peak-to-peak 2


def test_direct_inversion_reconstructs_frame_zero_exactly_whatever_the_model():
    # A raw random UNet (no conv_out scaling), on which plain DDIM inversion does not round-trip at all.
    components = build_random_components("tiny", seed=3, conv_out_scale=1.0)
    image = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 255
    image = F.interpolate(image, size=(64, 64), mode="area")
    vae = components.vae
    with torch.no_grad():
        mean = vae.encode(image * 2 - 1).latent_dist.mean
        # Scale latents to unit variance, as Stable Diffusion's scaling factor does for its own VAE.
        vae.register_to_config(scaling_factor=float(1 / mean.std()))
        latent = mean * vae.config.scaling_factor
        round_trip = vae.decode(latent / vae.config.scaling_factor).sample
    _, pose, prompt = _inputs(components)
    settings = PACMSettings(mode="direct", num_inference_steps=10)
    result = run_pacm(components, latent, prompt, pose, NO_FRAMES, settings, show_progress=False)
    assert result.stats["source"].forward == 2 * 10 and result.stats["source"].backward == 0
    start = result.latents[-1][None]

    corrected = _reference_sample(
        components, pose, start, _source_embeddings(result), 7.5, 10, offsets=result.source_offsets
    )
    plain = _reference_sample(components, pose, start, _source_embeddings(result), 1.0, 10)
    with torch.no_grad():
        decoded = vae.decode(corrected / vae.config.scaling_factor).sample
        decoded_plain = vae.decode(plain / vae.config.scaling_factor).sample
    assert _psnr(decoded, round_trip) >= 40  # the bound; measured 98 dB
    assert _relative_error(corrected, latent) < 1e-4  # exact up to float rounding (measured 3e-5)
    assert _psnr(decoded_plain, round_trip) < 25  # without the offsets, this model's round trip is poor (18 dB)
