"""The hooks refuse what they would get wrong: masks outside [0, 1], an ambiguous guidance layout, a chunk count that
changes within a windows step; and they notice what they must recompute: a mask edited in place and assigned again,
hard masks resized exactly at one half."""

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline
from diffusers.models.attention_processor import Attention

from hooks import CrossFrameState, DualConsistencyAttnProcessor, install_attn_processors

GRID = (4, 4)


def _layer(channels=24, heads=2):
    torch.manual_seed(0)
    return Attention(query_dim=channels, heads=heads, dim_head=channels // heads).eval()


def _hidden(rows, seed=1):
    return torch.randn(rows, GRID[0] * GRID[1], 24, generator=torch.Generator().manual_seed(seed))


def _hard_masks(frames, seed=2):
    return (torch.rand(frames, *GRID, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def _soft_masks(frames, seed=3):
    return torch.rand(frames, *GRID, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _call(state, hidden, **kwargs):
    return DualConsistencyAttnProcessor(state=state, **kwargs)(_layer(), hidden)


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ((_hard_masks(3) * 255).to(torch.uint8), r"floating point in \[0, 1\] or bool, got torch.uint8"),
        (_hard_masks(3) * 255, r"values in \[0, 1\], got values from 0 to 255"),
        (_soft_masks(3) / _soft_masks(3).max() * (1 + 1e-6), r"values in \[0, 1\], got values from .* to 1.00000095"),
        (_hard_masks(3).nextafter(torch.tensor(2.0)), r"values in \[0, 1\], got values from .* to 1.00000012"),
        (_hard_masks(3) - 1e-3, r"values in \[0, 1\], got values from -0.001"),
        (_hard_masks(3).index_fill(1, torch.tensor([2]), float("nan")), r"values in \[0, 1\], got values from nan"),
        (_hard_masks(3) * 5, r"values in \[0, 1\], got values from 0 to 5"),
    ],
    ids=["uint8-0-255", "float-0-255", "soft-above-1", "one-ulp-above-1", "below-0", "nan", "five"],
)
def test_masks_outside_zero_one_are_refused(masks, message):
    # Each of these gave NaN in every frame but frame 0 (keys weighted by log of a negative or beyond-one amount).
    state = CrossFrameState(num_frames=3, masks=masks, latent_size=GRID)
    with pytest.raises(ValueError, match=message):
        _call(state, _hidden(6))


def test_bool_masks_equal_their_float_values_and_stay_finite():
    masks = _hard_masks(3)
    as_bool = _call(CrossFrameState(num_frames=3, masks=masks.bool(), latent_size=GRID), _hidden(6))
    as_float = _call(CrossFrameState(num_frames=3, masks=masks, latent_size=GRID), _hidden(6))
    assert torch.isfinite(as_bool).all()
    torch.testing.assert_close(as_bool, as_float, rtol=0, atol=0)


def test_a_mask_edited_in_place_and_assigned_again_is_seen():
    masks = _hard_masks(3)
    state = CrossFrameState(num_frames=3, masks=masks, latent_size=GRID)
    processor = DualConsistencyAttnProcessor(state=state)
    layer, hidden = _layer(), _hidden(6)
    with torch.no_grad():
        before = processor(layer, hidden)
        masks[1:] = 1 - masks[1:]  # the same tensor, edited in place
        state.masks = masks  # ... and assigned again
        after = processor(layer, hidden)
        fresh = DualConsistencyAttnProcessor(
            state=CrossFrameState(num_frames=3, masks=masks.clone(), latent_size=GRID)
        )
        expected = fresh(layer, hidden)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert (after - before).abs().max() > 1e-3  # the edit matters, so a stale mask would show


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ([[1, 0], [0, 1]], 1.0),  # exactly half the area is character: counts as character (>= 0.5)
        ([[0, 1], [1, 0]], 1.0),
        ([[1, 1], [0, 0]], 1.0),
        ([[1, 1], [1, 0]], 1.0),
        ([[1, 0], [0, 0]], 0.0),
        ([[0, 0], [0, 0]], 0.0),
    ],
)
def test_hard_masks_are_resized_by_their_area_with_one_half_counting_as_character(pattern, expected):
    # A 2x2 latent's attention layer at the next level of the UNet's ladder has a single token, which covers the four
    # pixels equally: its mask is character when at least half of them are.
    state = CrossFrameState(masks=torch.tensor([pattern] * 2, dtype=torch.float32), latent_size=(2, 2))
    on_grid = state.masks_on_grid(1, torch.device("cpu"), torch.float32)
    assert on_grid.hard
    assert on_grid.masks.tolist() == [[expected], [expected]]


def test_an_ambiguous_guidance_layout_is_refused_and_num_frames_resolves_it():
    hidden = _hidden(4)
    with pytest.raises(ValueError, match=r"A batch of 4 rows is ambiguous: set `state\.num_frames`"):
        _call(CrossFrameState(), hidden)
    one_chunk = _call(CrossFrameState(num_frames=4), hidden)
    torch.testing.assert_close(one_chunk, _call(CrossFrameState(), hidden, cfg_chunks=1), rtol=0, atol=0)
    assert (one_chunk - _call(CrossFrameState(), hidden, cfg_chunks=2)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="A batch of 4 does not hold whole guidance chunks of 3 frames"):
        _call(CrossFrameState(num_frames=3), hidden)
    with pytest.raises(ValueError, match="A batch of 4 is not 2 guidance chunks of 4 frames"):
        _call(CrossFrameState(num_frames=4), hidden, cfg_chunks=2)
    with pytest.raises(ValueError, match=r"state.num_frames=2 but state.frame_ids lists 4 frames"):
        _call(CrossFrameState(num_frames=2, frame_ids=[0, 1, 2, 3]), hidden)


def test_guidance_off_in_the_diffusers_pipeline_keeps_every_frame_in_one_chunk(tiny_components):
    """Without guidance, 4 frames are one chunk: only frame 0 keeps plain self-attention. Read as two chunks of two
    (the old default), frame 2 would be a chunk's anchor and be left untouched too."""
    pipe = StableDiffusionControlNetPipeline(
        **{
            name: getattr(tiny_components, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "controlnet")
        },
        scheduler=DDIMScheduler.from_config(tiny_components.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    poses = torch.rand(4, 3, 64, 64, generator=generator)
    latents = torch.randn(4, 4, 8, 8, generator=generator)

    def generate():
        prompts = ["a person dancing"] * 4
        kwargs = dict(num_inference_steps=2, guidance_scale=1.0, latents=latents.clone(), output_type="latent")
        return pipe(prompts, image=poses, **kwargs).images

    plain = generate()
    with install_attn_processors(pipe.unet, DualConsistencyAttnProcessor()):
        with pytest.raises(ValueError, match="A batch of 4 rows is ambiguous"):
            generate()
    with install_attn_processors(pipe.unet, DualConsistencyAttnProcessor(state=CrossFrameState(num_frames=4))):
        dual = generate()
    torch.testing.assert_close(dual[0], plain[0], rtol=0, atol=1e-5)
    for frame in (1, 2, 3):
        assert (dual[frame] - plain[frame]).abs().max() > 1e-4, frame


def test_windows_refuse_a_chunk_count_change_within_a_step_before_reading_the_cache():
    layer, hidden = _layer(), _hidden(4)
    state = CrossFrameState(mode="windows", chunks=2, step=0, frame_ids=[0, 1])
    processor = DualConsistencyAttnProcessor(state=state)
    with torch.no_grad():
        processor(layer, hidden)  # frames 0 and 1, two guidance chunks: their keys and values are cached
        state.chunks, state.frame_ids = 1, [2, 3, 4, 5]
        with pytest.raises(ValueError, match="has 1 guidance chunks but earlier calls of step 0 had 2"):
            processor(layer, hidden)
        assert state.cached_frames == [0, 1]  # refused before anything was read or dropped
        state.step, state.frame_ids = 1, [0, 1, 2, 3]  # a new step may change it
        assert torch.isfinite(processor(layer, hidden)).all()
