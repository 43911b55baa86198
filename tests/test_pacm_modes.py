"""Every PACM mode runs at its stated cost in UNet evaluations and reports its frame-0 reconstruction error."""

import dataclasses

import pytest
import torch

from zeroshot.pacm import PACMSettings, StageStats, reconstruct_source, relative_error, run_pacm
from zeroshot.prompts import encode_prompt

T, F, INNER = 8, 2, 2
MODES = {
    # Paper mode without early stopping: per step, the source costs the unguided branch, INNER forward+backward
    # passes and one re-sample; each frame the unguided branch and one forward+backward pass (Alg. 1).
    "paper": (
        PACMSettings(num_inference_steps=T, learning_rate=5e-2, source_inner_steps=INNER, early_stop_epsilon=0.0,
                     early_stop_slope=0.0),
        {"ddim_inversion": (T, 0), "source": (T * (INNER + 2), T * INNER), "frames": (F * T * 2, F * T)},
    ),
    "paper-unconditional-slot": (
        PACMSettings(num_inference_steps=T, learning_rate=5e-2, source_inner_steps=INNER, early_stop_epsilon=0.0,
                     early_stop_slope=0.0, optimized_slot="unconditional"),
        {"ddim_inversion": (T, 0), "source": (T * (INNER + 2), T * INNER), "frames": (F * T * 2, F * T)},
    ),
    # Negative-prompt inversion: nothing to compute for the source; one pass per frame and step, for the masks.
    "negative-prompt": (
        PACMSettings(mode="negative-prompt", num_inference_steps=T),
        {"ddim_inversion": (T, 0), "source": (0, 0), "frames": (F * T, 0)},
    ),
    # Direct inversion: one guided step (two passes) per step for the source's offsets, and per frame and step.
    "direct": (
        PACMSettings(mode="direct", num_inference_steps=T),
        {"ddim_inversion": (T, 0), "source": (2 * T, 0), "frames": (2 * F * T, 0)},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tiny_components):
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    targets = torch.rand(F, 3, 64, 64, generator=generator)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    return latent, prompt, pose, targets


@pytest.fixture(scope="module")
def prompt_only_errors(tiny_components, inputs):
    """Frame-0 reconstruction errors of sampling with the plain prompt embeddings, at guidance 1 and 7.5."""
    latent, prompt, pose, targets = inputs
    errors = {}
    for guidance in (1.0, 7.5):
        settings = PACMSettings(mode="negative-prompt", num_inference_steps=T, guidance_scale=guidance)
        result = run_pacm(tiny_components, latent, prompt, pose, targets[:0], settings, show_progress=False)
        plain = dataclasses.replace(
            result,
            optimized_slot="conditional",
            source_embeddings=prompt.conditional.expand(T, -1, -1),
            fixed_embedding=prompt.unconditional,
        )
        errors[guidance] = relative_error(reconstruct_source(tiny_components, plain, pose), latent)
    return errors


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_costs_its_stated_evaluations_and_reports_its_reconstruction_error(
    tiny_components, inputs, prompt_only_errors, mode, record_property
):
    settings, expected = MODES[mode]
    latent, prompt, pose, targets = inputs
    result = run_pacm(tiny_components, latent, prompt, pose, targets, settings, show_progress=False)
    counts = {stage: (stats.forward, stats.backward) for stage, stats in result.stats.items()}
    assert counts == expected

    error = relative_error(reconstruct_source(tiny_components, result, pose), latent)
    record_property("reconstruction_error", error)
    if settings.mode == "direct":
        assert error < 1e-4
    elif settings.mode == "negative-prompt":
        # The prompt in both slots makes guidance a no-op: exactly the guidance-1 round trip of the inversion.
        assert error == pytest.approx(prompt_only_errors[1.0], rel=1e-3)
    else:
        assert error < 0.6 * prompt_only_errors[7.5]  # two inner steps only: measured 0.43x
    assert (result.frame_embeddings is not None) == (settings.mode == "paper")
    assert result.masks.shape == (F, T, 8, 8) and set(result.masks.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode", ["negative-prompt", "direct"])
def test_fast_modes_without_a_subject_skip_the_frame_stage_entirely(tiny_components, inputs, mode, tmp_path):
    """The fast modes run the frame stage only for the masks: without a subject they never enter it (no evaluation,
    no cache file, no time), whatever the number of frames."""
    latent, _, pose, targets = inputs
    no_subject = encode_prompt(tiny_components, "a photo of an astronaut")
    settings = PACMSettings(mode=mode, num_inference_steps=T)
    steps = []
    result = run_pacm(tiny_components, latent, no_subject, pose, targets, settings, cache_dir=tmp_path,
                      callback=lambda progress: steps.append(progress.stage), show_progress=False)  # fmt: skip
    assert result.stats["frames"] == StageStats() and "frames" not in steps
    assert not list(tmp_path.glob("frames-*"))
    assert (result.frame_embeddings, result.attention_maps, result.masks, result.num_frames) == (None, None, None, F)
    # Every frame samples with the source's embeddings.
    unconditional, conditional = result.step_embeddings(T - 1, range(F + 1))
    torch.testing.assert_close(conditional, result.source_embeddings[T - 1].expand(F + 1, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(unconditional, result.fixed_embedding.expand(F + 1, -1, -1), rtol=0, atol=0)
