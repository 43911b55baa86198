"""Cross-attention map recording: a drop-in for AttnProcessor2_0 whose maps match diffusers' own attention scores."""

import pytest
import torch
import torch.nn.functional as F

from hooks import CROSS_ATTENTION, CrossAttentionRecorder, attention_maps_to_masks, install_attn_processors, token_grid

# A UNet with cross-attention at three resolutions, run at an odd, non-square latent size: 5x7 -> 3x4 -> 2x2.
LATENT_SIZE = (5, 7)
GRIDS = {35: (5, 7), 12: (3, 4), 4: (2, 2)}  # queries of a layer -> its grid, worked out by hand


class ReferenceProbabilities:
    """diffusers' classic attention path (get_attention_scores), keeping every cross-attention probability map."""

    def __init__(self):
        self.probabilities: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probabilities = attn.get_attention_scores(query, key)
        self.probabilities.append(probabilities.view(hidden_states.shape[0], attn.heads, *probabilities.shape[1:]))
        out = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        return attn.to_out[1](attn.to_out[0](out))


def _inputs(seed, batch=3, text_dim=24):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, *LATENT_SIZE, generator=generator)
    text = torch.randn(batch, 10, text_dim, generator=generator)
    return latents, text


def test_token_grid_walks_the_unet_ladder():
    assert [token_grid(n, LATENT_SIZE) for n in GRIDS] == list(GRIDS.values())
    assert token_grid(64 * 64, (64, 64)) == (64, 64) and token_grid(8 * 12, (16, 24)) == (8, 12)
    with pytest.raises(ValueError, match=r"10 tokens does not fit latents of size \(5, 7\)"):
        token_grid(10, LATENT_SIZE)


def test_output_and_gradients_equal_stock_attention(tiny_components):
    unet = tiny_components.unet
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)

    def output_and_gradient():
        embedding = text.clone().requires_grad_(True)
        out = unet(latents, 500, embedding).sample
        out.square().sum().backward()
        return out.detach(), embedding.grad

    unet.requires_grad_(False)
    try:
        expected_out, expected_grad = output_and_gradient()
        recorder = CrossAttentionRecorder(token_indices=[3, 4], latent_size=(8, 8))
        with install_attn_processors(unet, recorder, CROSS_ATTENTION):
            out, grad = output_and_gradient()
    finally:
        unet.requires_grad_(True)
    assert recorder.num_recorded == 6  # every attn2 layer of the tiny UNet: five at 8x8, the mid block at 4x4
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("max_tokens", [35, 12])
def test_maps_average_heads_layers_and_calls_of_small_layers(ladder_unet, max_tokens):
    token_indices = [2, 7]
    reference = ReferenceProbabilities()
    recorder = CrossAttentionRecorder(token_indices, latent_size=LATENT_SIZE, max_tokens=max_tokens)
    calls = [(seed, _inputs(seed)) for seed in (1, 2)]
    outputs = {}
    with torch.no_grad():
        for name, processor in [("reference", reference), ("recorder", recorder)]:
            with install_attn_processors(ladder_unet, processor, CROSS_ATTENTION):
                outputs[name] = [ladder_unet(latents, 100 * seed, text).sample for seed, (latents, text) in calls]
    for out, expected in zip(outputs["recorder"], outputs["reference"], strict=True):
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)

    expected_maps = []
    for probabilities in reference.probabilities:  # [batch, heads, queries, text]
        queries = probabilities.shape[2]
        if queries > max_tokens:
            continue
        mass = probabilities[..., token_indices].sum(-1).mean(1).view(-1, 1, *GRIDS[queries])
        expected_maps.append(F.interpolate(mass, size=LATENT_SIZE, mode="bilinear", align_corners=False)[:, 0])
    assert len(expected_maps) == recorder.num_recorded
    assert (len(expected_maps) < len(reference.probabilities)) == (max_tokens < 35)
    maps = recorder.attention_maps()
    assert maps.shape == (3, *LATENT_SIZE) and maps.dtype == torch.float32 and not maps.requires_grad
    torch.testing.assert_close(maps, torch.stack(expected_maps).mean(0), rtol=1e-5, atol=1e-6)

    recorder.reset()
    with pytest.raises(RuntimeError, match="No cross-attention map was recorded"):
        recorder.attention_maps()


def test_layers_above_max_tokens_are_not_recorded(tiny_components):
    recorder = CrossAttentionRecorder(token_indices=[1], latent_size=(8, 8), max_tokens=15)
    with install_attn_processors(tiny_components.unet, recorder, CROSS_ATTENTION), torch.no_grad():
        tiny_components.unet(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 77, 32))
    with pytest.raises(RuntimeError, match="max_tokens=15"):
        recorder.attention_maps()


def test_attention_maps_to_masks_normalises_each_map_by_its_maximum():
    maps = torch.tensor(
        [
            [[0.0, 1.0], [2.0, 4.0]],  # max 4: 0.25 is below 0.3, 0.5 and 1 are above
            [[0.1, 0.1], [0.05, 0.2]],  # max 0.2: 0.5 and 1 above, 0.25 below
            [[0.0, 0.0], [0.0, 0.0]],  # nothing attended: empty mask
        ]
    )
    expected = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(attention_maps_to_masks(maps, threshold=0.3), expected, rtol=0, atol=0)
    upsampled = attention_maps_to_masks(maps, threshold=0.3, size=(4, 4))
    assert upsampled.shape == (3, 4, 4) and set(upsampled.unique().tolist()) <= {0.0, 1.0}
    assert upsampled[0, -1, -1] == 1 and upsampled[0, 0, 0] == 0
    with pytest.raises(ValueError, match="threshold"):
        attention_maps_to_masks(maps, threshold=1.5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="token_indices"):
        CrossAttentionRecorder(token_indices=[], latent_size=(8, 8))
    with pytest.raises(ValueError, match="latent_size"):
        CrossAttentionRecorder(token_indices=[1], latent_size=(0, 8))


def test_recording_self_attention_or_missing_tokens_is_refused(tiny_components):
    unet = tiny_components.unet
    with install_attn_processors(unet, CrossAttentionRecorder([1], (8, 8)), r"\.attn1\."), torch.no_grad():
        with pytest.raises(ValueError, match="install it on attn2 layers"):
            unet(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 77, 32))
    with install_attn_processors(unet, CrossAttentionRecorder([80], (8, 8)), CROSS_ATTENTION), torch.no_grad():
        with pytest.raises(ValueError, match="reach past the 77 encoder tokens"):
            unet(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 77, 32))
