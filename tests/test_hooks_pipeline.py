"""The processors inside real diffusers models and pipelines: exactness, windows, install/restore, composition."""

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from hooks import (
    CROSS_ATTENTION,
    CrossAttentionRecorder,
    CrossFrameState,
    DualConsistencyAttnProcessor,
    install_attn_processors,
    select_attn_processor_names,
)

FRAMES = 7
GUIDANCE = 7.5


def _pipeline(components):
    pipe = StableDiffusionControlNetPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        controlnet=components.controlnet,
        scheduler=DDIMScheduler.from_config(components.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_inside_the_diffusers_controlnet_pipeline(tiny_components):
    pipe = _pipeline(tiny_components)
    frames = 3
    generator = torch.Generator().manual_seed(0)
    poses = torch.rand(frames, 3, 64, 64, generator=generator)
    latents = torch.randn(frames, 4, 8, 8, generator=generator)

    def generate():
        return pipe(
            ["a person dancing"] * frames,
            image=poses,
            num_inference_steps=2,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            output_type="latent",
        ).images

    unhooked = generate()
    with install_attn_processors(pipe.unet, DualConsistencyAttnProcessor(cfg_chunks=2, lambdas=(0, 0, 1))):
        current_only = generate()
    with install_attn_processors(pipe.unet, DualConsistencyAttnProcessor(cfg_chunks=2)):
        dual = generate()
    torch.testing.assert_close(current_only, unhooked, rtol=0, atol=1e-5)
    torch.testing.assert_close(dual[0], unhooked[0], rtol=0, atol=1e-5)  # frame 0 keeps plain self-attention
    assert all((dual[i] - unhooked[i]).abs().max() > 1e-3 for i in range(1, frames))


def _lock_step_generation(unet, scheduler_config, start, embeddings, masks, windows, mode):
    """Lock-step DDIM with guidance: at every step each window runs in frame order, one UNet call per window.

    Returns the final latents and, for every UNet call, its window and the cache's frames and bytes after it.
    """
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(3)
    state = CrossFrameState(mode=mode, latent_size=tuple(start.shape[-2:]))
    processor = DualConsistencyAttnProcessor(state=state, cfg_chunks=2)
    uncond, cond = embeddings
    latents = start.clone()
    cache_after_calls = []
    with install_attn_processors(unet, processor), torch.no_grad():
        for step, t in enumerate(scheduler.timesteps):
            state.step, state.masks = step, masks[step]
            following = torch.empty_like(latents)
            for window in windows:
                state.frame_ids = window
                x = latents[window]
                noise = unet(torch.cat([x, x]), t, torch.cat([uncond[window], cond[window]])).sample
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + GUIDANCE * (noise_cond - noise_uncond)
                following[window] = scheduler.step(noise, t, x).prev_sample
                cache_after_calls.append((window, set(state.cached_frames), state.cached_bytes))
            latents = following
    return latents, cache_after_calls


def _sequence(frames, seed=0):
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(1, 4, 8, 8, generator=generator).expand(frames, -1, -1, -1)
    embeddings = torch.randn(2, frames, 77, 32, generator=generator)  # per-frame unconditional and conditional
    masks = (torch.rand(3, frames, 16, 16, generator=generator) > 0.5).float()  # per step, at 2x the latent size
    return start, embeddings, masks


def _windows(frames, size):
    return [list(range(start, min(start + size, frames))) for start in range(0, frames, size)]


def _bytes_per_cached_frame(unet, tokens):
    """Keys and values of one frame in both guidance chunks, summed over the hooked layers (float32)."""
    layers = [unet.get_submodule(name.removesuffix(".processor")) for name in select_attn_processor_names(unet)]
    return sum(2 * tokens * (layer.to_k.out_features + layer.to_v.out_features) * 4 for layer in layers)


@pytest.fixture(scope="module")
def sequence():
    return _sequence(FRAMES)


@pytest.mark.parametrize("window_size", [1, 3, 4, FRAMES])
def test_windowed_generation_equals_the_full_batch(tiny_components, sequence, window_size):
    unet, config = tiny_components.unet, tiny_components.scheduler.config
    full, _ = _lock_step_generation(unet, config, *sequence, windows=[list(range(FRAMES))], mode="batch")
    windows = _windows(FRAMES, window_size)
    windowed, cache_after_calls = _lock_step_generation(unet, config, *sequence, windows=windows, mode="windows")
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-5)
    for window, cached, _ in cache_after_calls:  # frame 0 and the window's last frame, for the current step only
        assert cached == {0, window[-1]}

    plain, _ = _lock_step_generation(unet, config, *sequence[:2], masks=[None] * 3, windows=windows, mode="windows")
    assert (plain - full).abs().max() > 1e-3  # the masks matter, so windows must carry them exactly


def test_the_window_cache_holds_two_frames_per_layer_over_a_long_sequence(tiny_components):
    unet, config, frames = tiny_components.unet, tiny_components.scheduler.config, 26
    sequence = _sequence(frames, seed=1)
    full, _ = _lock_step_generation(unet, config, *sequence, windows=[list(range(frames))], mode="batch")
    windows = _windows(frames, 3)  # nine windows per step
    windowed, cache_after_calls = _lock_step_generation(unet, config, *sequence, windows=windows, mode="windows")
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-5)
    two_frames = 2 * _bytes_per_cached_frame(unet, tokens=8 * 8)  # the hooked layers all run at the 8x8 latent size
    assert len(cache_after_calls) == 3 * len(windows)
    for window, cached, cached_bytes in cache_after_calls:
        assert cached == {0, window[-1]} and cached_bytes == two_frames


def test_windows_out_of_lock_step_are_refused(tiny_components, sequence):
    start, embeddings, _ = sequence
    window_major = [[0, 1, 2], [3, 4, 5]]
    state = CrossFrameState(mode="windows")
    with (
        install_attn_processors(tiny_components.unet, DualConsistencyAttnProcessor(cfg_chunks=2, state=state)),
        torch.no_grad(),
    ):
        state.step, state.frame_ids = 0, window_major[0]
        tiny_components.unet(torch.cat([start[:3]] * 2), 900, torch.cat([embeddings[0, :3], embeddings[1, :3]]))
        state.step, state.frame_ids = 1, window_major[1]  # window [3, 4, 5] at step 1 before [0, 1, 2] at step 1
        with pytest.raises(ValueError, match=r"Frame 0 is needed at step 1 .* Run windows in lock-step"):
            tiny_components.unet(torch.cat([start[3:6]] * 2), 800, torch.cat([embeddings[0, 3:6], embeddings[1, 3:6]]))


@torch.no_grad()
def _unet_output(unet, frames=3):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(frames, 4, 8, 8, generator=generator)
    text = torch.randn(2 * frames, 77, unet.config.cross_attention_dim, generator=generator)
    return unet(torch.cat([latents, latents]), 300, text).sample


def test_install_and_restore_round_trip_is_exact(tiny_components):
    unet = tiny_components.unet
    before = unet.attn_processors
    baseline = _unet_output(unet)
    handle = install_attn_processors(unet, DualConsistencyAttnProcessor(cfg_chunks=2))
    assert (_unet_output(unet) - baseline).abs().max() > 1e-4
    handle.remove()
    torch.testing.assert_close(_unet_output(unet), baseline, rtol=0, atol=0)
    assert unet.attn_processors == before


def test_capture_and_dual_consistency_together(tiny_components):
    unet, frames = tiny_components.unet, 3
    dca, recorder = (
        DualConsistencyAttnProcessor(cfg_chunks=2),
        CrossAttentionRecorder(token_indices=[1, 2], latent_size=(8, 8)),
    )
    with install_attn_processors(unet, recorder, CROSS_ATTENTION):
        alone = _unet_output(unet, frames)
        maps_alone = recorder.attention_maps()
    with install_attn_processors(unet, dca):
        dca_only = _unet_output(unet, frames)
        with install_attn_processors(unet, recorder, CROSS_ATTENTION):
            recorder.reset()
            both = _unet_output(unet, frames)
            maps = recorder.attention_maps()
    torch.testing.assert_close(both, dca_only, rtol=0, atol=1e-5)  # the recorder changes nothing
    assert (both - alone).abs().max() > 1e-4
    anchor = [0, frames]  # frame 0 in both guidance chunks: undisturbed by dual consistency attention
    torch.testing.assert_close(maps[anchor], maps_alone[anchor], rtol=0, atol=1e-6)
    assert (maps[1:frames] - maps_alone[1:frames]).abs().max() > 1e-5


def test_controlnet_self_attention_can_be_hooked_exactly(tiny_components):
    controlnet = tiny_components.controlnet
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(4, 4, 8, 8, generator=generator), 10, torch.randn(4, 77, 32, generator=generator))
    pose = torch.rand(4, 3, 64, 64, generator=generator)

    @torch.no_grad()
    def residuals():
        down, mid = controlnet(*inputs, controlnet_cond=pose, return_dict=False)
        return torch.cat([residual.flatten(1) for residual in (*down, mid)], dim=1)

    baseline = residuals()
    with install_attn_processors(
        controlnet, DualConsistencyAttnProcessor(cfg_chunks=2, lambdas=(0, 0, 1)), r"\.attn1\."
    ):
        torch.testing.assert_close(residuals(), baseline, rtol=0, atol=1e-5)
    with install_attn_processors(controlnet, DualConsistencyAttnProcessor(cfg_chunks=2), r"\.attn1\."):
        assert (residuals() - baseline).abs().max() > 1e-5
    torch.testing.assert_close(residuals(), baseline, rtol=0, atol=0)


def test_default_selection_on_the_stable_diffusion_15_layout():
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # SD-1.5's architecture, no weights
    names = select_attn_processor_names(unet)
    assert len(names) == 9 and all(name.startswith("up_blocks.") and ".attn1." in name for name in names)
    with install_attn_processors(unet, DualConsistencyAttnProcessor(cfg_chunks=2)):
        assert {type(unet.attn_processors[name]) for name in names} == {DualConsistencyAttnProcessor}
    assert {type(processor) for processor in unet.attn_processors.values()} == {AttnProcessor2_0}
