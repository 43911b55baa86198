"""Dual consistency attention and mask-guided decoupling on single attention layers, against independent references."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

from hooks import AllFrameAttnProcessor, CrossFrameState, DualConsistencyAttnProcessor

# (chunks, frames, grid, channels, heads): several shapes, odd head dims and a non-square grid included.
SHAPES = [(2, 4, (4, 4), 32, 2), (1, 3, (3, 5), 24, 3), (2, 5, (2, 3), 40, 4)]


def _layer(channels, heads, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, **kwargs).eval()
    with torch.no_grad():  # random output bias too, so that nothing cancels by accident
        layer.to_out[0].bias.normal_()
    return layer


def _hidden(chunks, frames, grid, channels, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(chunks * frames, grid[0] * grid[1], channels, generator=generator)


@torch.no_grad()
def _reference(layer, hidden, chunks, lambdas, masks=None, decoupling="exclusive"):
    """Float64 dual consistency attention written out term by term, frame by frame, query by query where masked."""
    layer = _layer_copy_double(layer)
    hidden = hidden.double()
    heads = layer.heads
    frames = hidden.shape[0] // chunks
    query, key, value = (
        projection(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)
        for projection in (layer.to_q, layer.to_k, layer.to_v)
    )  # [batch, heads, tokens, d]
    scale = layer.scale

    def attention(q, k, v, key_weights=None):
        scores = (q @ k.transpose(-1, -2)) * scale
        weights = scores.exp() if key_weights is None else scores.exp() * key_weights
        return (weights / weights.sum(-1, keepdim=True)) @ v

    out = torch.zeros_like(query)
    for chunk in range(chunks):
        for i in range(frames):
            row = chunk * frames + i
            terms = [(0, 1.0)] if i == 0 else list(zip((0, i - 1, i), lambdas, strict=True))
            for j, weight in terms:
                q, k, v = query[row], key[chunk * frames + j], value[chunk * frames + j]
                if masks is None or i == 0:
                    out[row] += weight * attention(q, k, v)
                    continue
                m_i, m_j = masks[i].double(), masks[j].double()
                if decoupling == "literal":
                    character = attention(q, k * m_j[:, None], v * m_j[:, None])
                    background = attention(q, k * (1 - m_j)[:, None], v * (1 - m_j)[:, None])
                else:
                    character = attention(q, k, v, m_j if m_j.sum() > 0 else None)
                    background = attention(q, k, v, (1 - m_j) if (1 - m_j).sum() > 0 else None)
                out[row] += weight * (m_i[:, None] * character + (1 - m_i)[:, None] * background)
    out = out.transpose(1, 2).flatten(2)
    return layer.to_out[0](out).float()


def _layer_copy_double(layer):
    copy = Attention(query_dim=layer.query_dim, heads=layer.heads, dim_head=layer.inner_dim // layer.heads)
    copy.load_state_dict(layer.state_dict())
    return copy.double().eval()


def _run(processor, layer, hidden):
    with torch.no_grad():
        return processor(layer, hidden)


@pytest.mark.parametrize("shape", SHAPES)
def test_current_frame_only_equals_stock_attention(shape):
    chunks, frames, grid, channels, heads = shape
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    processor = DualConsistencyAttnProcessor(lambdas=(0, 0, 1), cfg_chunks=chunks)
    torch.testing.assert_close(
        _run(processor, layer, hidden), _run(AttnProcessor2_0(), layer, hidden), rtol=0, atol=1e-5
    )


def test_current_frame_only_equals_stock_attention_on_a_spatial_layer_with_norms():
    layer = _layer(16, 2, norm_num_groups=4, residual_connection=True, rescale_output_factor=2.0, bias=True)
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(6, 16, 3, 5, generator=generator)  # 4-D input, as VAE-style attention gets it
    processor = DualConsistencyAttnProcessor(lambdas=(0, 0, 1), cfg_chunks=2)
    torch.testing.assert_close(
        _run(processor, layer, hidden), _run(AttnProcessor2_0(), layer, hidden), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_frame_zero_only_equals_text2video_zero_cross_frame_attention(shape):
    chunks, frames, grid, channels, heads = shape
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    processor = DualConsistencyAttnProcessor(lambdas=(1, 0, 0), cfg_chunks=chunks)
    expected = _run(CrossFrameAttnProcessor2_0(batch_size=chunks), layer, hidden)
    torch.testing.assert_close(_run(processor, layer, hidden), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lambdas", [(0.7, 0.15, 0.15), (0.2, 0.5, 0.3), (0.0, 0.6, 0.4)])
@pytest.mark.parametrize("shape", SHAPES)
def test_general_weights_equal_float64_reference(shape, lambdas):
    chunks, frames, grid, channels, heads = shape
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    processor = DualConsistencyAttnProcessor(lambdas=lambdas, cfg_chunks=chunks)
    expected = _reference(layer, hidden, chunks, lambdas)
    torch.testing.assert_close(_run(processor, layer, hidden), expected, rtol=0, atol=1e-5)


def _hard_masks(frames, grid, seed=2):
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(frames, *grid, generator=generator) > 0.5).float()
    masks[1] = 0  # frame 1 has no character: its character region is empty as a key source
    masks[2] = 1  # frame 2 is all character: empty background region
    return masks


@pytest.mark.parametrize("decoupling", ["exclusive", "literal"])
@pytest.mark.parametrize("shape", SHAPES[::2])
def test_decoupling_with_hard_masks_equals_float64_reference(shape, decoupling):
    chunks, frames, grid, channels, heads = shape
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    masks = _hard_masks(frames, grid)
    lambdas = (0.5, 0.3, 0.2)
    state = CrossFrameState(masks=masks, latent_size=grid)
    processor = DualConsistencyAttnProcessor(lambdas=lambdas, cfg_chunks=chunks, state=state, decoupling=decoupling)
    expected = _reference(layer, hidden, chunks, lambdas, masks.flatten(1), decoupling)
    torch.testing.assert_close(_run(processor, layer, hidden), expected, rtol=0, atol=1e-5)
    undecoupled = _reference(layer, hidden, chunks, lambdas)
    assert (expected - undecoupled).abs().max() > 1e-2  # the masks matter in this case


def test_a_region_without_keys_in_the_source_falls_back_to_unmasked_attention_exactly():
    chunks, frames, grid, channels, heads = 2, 3, (4, 4), 32, 2
    layer, hidden = _layer(channels, heads), 3 * _hidden(chunks, frames, grid, channels)
    masks = torch.zeros(frames, *grid)
    masks[2] = 1  # frame 2 is all character and attends only to frame 1, which has no character
    state = CrossFrameState(masks=masks, latent_size=grid)
    decoupled = _run(DualConsistencyAttnProcessor(lambdas=(0, 1, 0), cfg_chunks=chunks, state=state), layer, hidden)
    plain = _run(DualConsistencyAttnProcessor(lambdas=(0, 1, 0), cfg_chunks=chunks), layer, hidden)
    torch.testing.assert_close(decoupled, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("decoupling", ["exclusive", "literal"])
def test_decoupling_with_soft_masks_equals_float64_reference(decoupling):
    chunks, frames, grid, channels, heads = SHAPES[0]
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    generator = torch.Generator().manual_seed(4)
    masks = torch.rand(frames, *grid, generator=generator)
    masks[1] = 0  # an empty character region, soft masks elsewhere
    state = CrossFrameState(masks=masks, latent_size=grid)
    processor = DualConsistencyAttnProcessor(cfg_chunks=chunks, state=state, decoupling=decoupling)
    expected = _reference(layer, hidden, chunks, processor.lambdas, masks.flatten(1), decoupling)
    torch.testing.assert_close(_run(processor, layer, hidden), expected, rtol=0, atol=1e-5)


def test_masks_at_another_resolution_are_resized_to_each_layer():
    chunks, frames, grid, channels, heads = 2, 4, (3, 5), 24, 2
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    masks = _hard_masks(frames, grid)
    upsampled = masks.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # [frames, 12, 20], same regions
    outputs = []
    for given in (masks, upsampled):
        state = CrossFrameState(masks=given, latent_size=grid)
        outputs.append(_run(DualConsistencyAttnProcessor(cfg_chunks=chunks, state=state), layer, hidden))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)


def test_frame_order_in_the_batch_does_not_matter():
    chunks, frames, grid, channels, heads = 2, 4, (4, 4), 32, 2
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    masks = _hard_masks(frames, grid)
    default = _run(
        DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(masks=masks, latent_size=grid)), layer, hidden
    )
    order = [2, 0, 3, 1]
    rows = [chunk * frames + frame for chunk in range(chunks) for frame in order]
    state = CrossFrameState(frame_ids=order, masks=masks, latent_size=grid)
    shuffled = _run(DualConsistencyAttnProcessor(cfg_chunks=2, state=state), layer, hidden[rows])
    torch.testing.assert_close(shuffled, default[rows], rtol=0, atol=1e-6)


def test_state_chunks_override_the_processor_default():
    frames, grid, channels, heads = 3, (4, 4), 32, 2
    layer, hidden = _layer(channels, heads), _hidden(2, frames, grid, channels)
    processor = DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(chunks=1))
    per_chunk = torch.cat([_run(processor, layer, hidden[:frames]), _run(processor, layer, hidden[frames:])])
    torch.testing.assert_close(
        per_chunk, _run(DualConsistencyAttnProcessor(cfg_chunks=2), layer, hidden), atol=1e-6, rtol=0
    )


def test_all_frame_attention_equals_float64_reference():
    chunks, frames, grid, channels, heads = 2, 3, (2, 3), 24, 2
    layer, hidden = _layer(channels, heads), _hidden(chunks, frames, grid, channels)
    double = _layer_copy_double(layer)
    with torch.no_grad():
        expected = []
        for chunk in hidden.double().split(frames):
            tokens = chunk.reshape(1, -1, channels)  # every frame's tokens in one sequence
            expected.append(AttnProcessor2_0()(double, tokens).view(frames, -1, channels))
    torch.testing.assert_close(
        _run(AllFrameAttnProcessor(cfg_chunks=chunks), layer, hidden), torch.cat(expected).float(), rtol=0, atol=1e-5
    )


def test_bad_settings_and_layouts_are_refused():
    with pytest.raises(ValueError, match="summing to 1"):
        DualConsistencyAttnProcessor(lambdas=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="decoupling"):
        DualConsistencyAttnProcessor(decoupling="soft")
    with pytest.raises(ValueError, match="mode"):
        CrossFrameState(mode="stream")
    layer, hidden = _layer(32, 2), _hidden(2, 3, (4, 4), 32)
    with pytest.raises(ValueError, match="does not split into 4 guidance chunks"):
        _run(DualConsistencyAttnProcessor(cfg_chunks=4), layer, hidden)
    with pytest.raises(ValueError, match=r"Frames \[0, 4\] are attended to but not in the batch"):
        _run(DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(frame_ids=[5, 6, 7])), layer, hidden)
    with pytest.raises(ValueError, match="is not 2 guidance chunks of 2 frames"):
        _run(DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(frame_ids=[0, 1])), layer, hidden)
    with pytest.raises(ValueError, match="must list distinct non-negative frame ids"):
        _run(DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(frame_ids=[0, 1, 1])), layer, hidden)
    with pytest.raises(ValueError, match="latent_size"):
        _run(
            DualConsistencyAttnProcessor(cfg_chunks=2, state=CrossFrameState(masks=torch.ones(3, 4, 4))), layer, hidden
        )
    with pytest.raises(ValueError, match="holds 2 frames but frame 2"):
        state = CrossFrameState(num_frames=3, masks=torch.ones(2, 4, 4), latent_size=(4, 4))
        _run(DualConsistencyAttnProcessor(state=state), layer, hidden)
    with pytest.raises(ValueError, match="attn1"):
        DualConsistencyAttnProcessor()(layer, hidden, encoder_hidden_states=hidden)
