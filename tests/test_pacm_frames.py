"""Per-frame pose-aware embeddings (Alg. 1): batching changes nothing, and the character maps are the subject token's
cross-attention in the pass that produced each frame's step."""

import dataclasses

import pytest
import torch
from diffusers import DDIMScheduler

from hooks import CROSS_ATTENTION, CrossAttentionRecorder, install_attn_processors
from zeroshot.pacm import (
    ControlledDenoiser,
    DDIMSchedule,
    PACMSettings,
    run_pacm,
)
from zeroshot.pacm.optimization import optimize_step
from zeroshot.prompts import encode_prompt, subject_token_indices
from zeroshot.testing import build_tokenizer


def _inputs(components, frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    targets = torch.rand(frames, 3, 64, 64, generator=generator)
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    return latent, pose, targets, prompt


def test_batched_frames_equal_frames_one_at_a_time(tiny_components):
    latent, pose, _, prompt = _inputs(tiny_components, 0)
    targets = torch.cat([pose, 1 - pose, torch.zeros_like(pose)])
    common = dict(num_inference_steps=10, learning_rate=5e-2, source_inner_steps=2, frame_inner_steps=2)
    batched = run_pacm(
        tiny_components, latent, prompt, pose, targets, PACMSettings(frame_chunk_size=3, **common), show_progress=False
    )
    single = run_pacm(
        tiny_components, latent, prompt, pose, targets, PACMSettings(frame_chunk_size=1, **common), show_progress=False
    )
    for name in ("forward", "backward"):
        assert getattr(batched.stats["frames"], name) == getattr(single.stats["frames"], name)
    moved = batched.frame_embeddings - batched.source_embeddings[None]
    # Tolerance: batched convolutions round differently from single ones; with the gradient step the difference is
    # proportional to the gradients' and stays far under 0.1% of how far the embeddings moved.
    difference = (batched.frame_embeddings - single.frame_embeddings).norm() / moved.norm()
    assert difference < 1e-3, f"batched and sequential embeddings differ by {difference:.2e} of their update"
    # The frames' embeddings differ from each other far more, so frames mixed up in the batch would show.
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (moved[i] - moved[j]).norm() / moved.norm() > 10 * difference
    torch.testing.assert_close(batched.attention_maps, single.attention_maps, rtol=1e-4, atol=1e-6)


def test_optimization_step_stops_each_latent_on_its_own_loss_in_a_batch(tiny_components):
    """The core of Alg. 1: a batch where some latents stop early and others go on equals each latent alone."""
    schedule = DDIMSchedule.from_scheduler(tiny_components.scheduler, 10)
    denoiser = ControlledDenoiser(tiny_components)
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(3, 4, 8, 8, generator=generator) * torch.tensor([1.0, 1.3, 1.6]).view(3, 1, 1, 1)
    poses = torch.rand(3, 3, 64, 64, generator=generator)
    target = torch.randn(1, 4, 8, 8, generator=generator) * 0.5
    prompt = encode_prompt(tiny_components, "a photo of an astronaut")
    start = prompt.conditional.expand(3, -1, -1)

    def run(settings, rows, inner_steps):
        return optimize_step(
            denoiser, schedule, 3, latents[rows], poses[rows], start[rows], prompt.unconditional, target,
            settings, inner_steps, optimizer="adam", learning_rate=5e-2, resample=False, stage="frames",
        )  # fmt: skip

    first = run(PACMSettings(learning_rate=5e-2), [0, 1, 2], 0)
    losses = (first.samples - target).pow(2).flatten(1).mean(1)
    ordered = losses.sort().values
    # Stop the latent of smallest loss at once; the others take their gradient steps.
    threshold = float((ordered[0] * ordered[1]).sqrt())
    settings = PACMSettings(learning_rate=5e-2, early_stop_epsilon=threshold, early_stop_slope=0.0)
    batched = run(settings, [0, 1, 2], 3)
    stopped = int(losses.argmin())
    torch.testing.assert_close(batched.embeddings[stopped], start[stopped], rtol=0, atol=0)
    for row in range(3):
        alone = run(settings, [row], 3)
        update = (alone.embeddings[0] - start[row]).norm()
        if row != stopped:
            assert update > 0.1
        assert (batched.embeddings[row] - alone.embeddings[0]).norm() <= 1e-3 * max(float(update), 1.0)
        torch.testing.assert_close(batched.samples[row], alone.samples[0], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def _reference_maps(components, result, targets, token_indices, steps):
    """Each frame sampled alone with diffusers' scheduler, its conditioning (and offsets) from `result`, and the hooks
    recorder on the conditional half of each classifier-free-guidance batch."""
    scheduler = DDIMScheduler.from_config(components.scheduler.config)
    scheduler.set_timesteps(steps)
    recorder = CrossAttentionRecorder(token_indices=token_indices, latent_size=(8, 8))
    maps = torch.zeros(len(targets), steps, 8, 8)
    for frame, pose in enumerate(targets):
        latents = result.latents[-1][None]
        for i, t in enumerate(scheduler.timesteps):
            text = torch.cat(result.step_embeddings(i, [frame + 1]))
            sample, poses = latents.expand(2, -1, -1, -1), pose[None].expand(2, -1, -1, -1)
            with install_attn_processors(components.unet, recorder, CROSS_ATTENTION):
                recorder.reset()
                down, mid = components.controlnet(sample, t, text, controlnet_cond=poses, return_dict=False)
                noise = components.unet(
                    sample, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
                ).sample
                maps[frame, i] = recorder.attention_maps()[1]
            unconditional, conditional = noise.chunk(2)
            noise = unconditional + 7.5 * (conditional - unconditional)
            latents = scheduler.step(noise, t, latents).prev_sample
            if result.source_offsets is not None:
                latents = latents + result.source_offsets[i]
    return maps


@pytest.mark.parametrize(
    "settings",
    [
        PACMSettings(mode="negative-prompt", num_inference_steps=8),
        PACMSettings(mode="direct", num_inference_steps=8),
        # With no inner step, paper mode samples with the source embeddings: the same trajectory a reference can run.
        PACMSettings(num_inference_steps=8, learning_rate=5e-2, source_inner_steps=2, frame_inner_steps=0),
    ],
    ids=["negative-prompt", "direct", "paper-without-frame-steps"],
)
def test_attention_maps_are_the_subject_tokens_in_each_frames_conditional_pass(tiny_components, settings):
    latent, pose, targets, prompt = _inputs(tiny_components, 2, seed=1)
    result = run_pacm(tiny_components, latent, prompt, pose, targets, settings, show_progress=False)
    expected = _reference_maps(tiny_components, result, targets, list(prompt.subject_token_indices), 8)
    assert result.attention_maps.shape == (2, 8, 8, 8)
    torch.testing.assert_close(result.attention_maps, expected, rtol=1e-4, atol=1e-6)
    peak = expected.amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(result.masks, (expected / peak > settings.mask_threshold).float())


def test_subject_token_indices_cover_every_token_of_the_subject_at_word_boundaries():
    tokenizer = build_tokenizer()
    assert subject_token_indices(tokenizer, "a photo of an astronaut", "astronaut") == (5,)
    # "superman" is four tokens ending in "man": "man" must not match inside it, only as its own word.
    prompt = "a superman and a man"
    pieces = tokenizer.tokenize(prompt)
    assert pieces[-1] == "man</w>" and "man</w>" in pieces[:-1]
    assert subject_token_indices(tokenizer, prompt, "man") == (len(pieces),)
    # A subject of several tokens returns all of them, at every occurrence.
    ironman = subject_token_indices(tokenizer, "ironman, then ironman", "ironman")
    assert len(ironman) == 2 * len(tokenizer.tokenize("ironman"))
    with pytest.raises(Exception, match="does not occur in the prompt"):
        subject_token_indices(tokenizer, "a photo of a dancer", "astronaut")


def test_alg_1_gradient_step_moves_each_frame_in_proportion_to_how_far_its_pose_is_from_the_source(
    tiny_components, tmp_path
):
    """Alg. 1 line 7 is a plain gradient step: a frame posed as the source samples the source's own trajectory, where
    the source stage already minimised the loss, so it barely moves; the further its pose (blended towards the
    mirror), the further it moves. One step of a fresh Adam moves every frame about as far (lr per coordinate)."""
    latent, pose, _, prompt = _inputs(tiny_components, 0)
    blends = (0.0, 0.25, 0.5, 1.0)
    targets = torch.cat([(1 - blend) * pose + blend * pose.flip(-1) for blend in blends])
    settings = PACMSettings(
        num_inference_steps=10, learning_rate=5e-2, source_inner_steps=10, early_stop_epsilon=0.0, early_stop_slope=0.0
    )

    def update_norms(frame_optimizer):
        result = run_pacm(
            tiny_components, latent, prompt, pose, targets,
            dataclasses.replace(settings, frame_optimizer=frame_optimizer), cache_dir=tmp_path, show_progress=False,
        )  # fmt: skip
        return (result.frame_embeddings - result.source_embeddings[None]).flatten(1).norm(dim=1)

    gradient = update_norms("gradient")
    assert gradient[0] < 0.25 * gradient[-1], gradient.tolist()  # measured 0.17
    assert all(gradient[i] < gradient[i + 1] for i in range(len(blends) - 1)), gradient.tolist()
    adam = update_norms("adam")
    assert adam[0] > 0.8 * adam[-1], adam.tolist()  # measured 0.84: Adam ignores the pose's distance
