"""Installing processors by name and restoring them exactly."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from hooks import CROSS_ATTENTION, install_attn_processors, select_attn_processor_names


class ScaledCountingProcessor:
    """Stock attention, its output scaled, counting calls per layer: proves which layers ran hooked."""

    def __init__(self, factor: float):
        self.factor = factor
        self.calls: dict[int, int] = {}
        self.stock = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.calls[id(attn)] = self.calls.get(id(attn), 0) + 1
        return self.factor * self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


@torch.no_grad()
def _unet_output(unet):
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    return unet(latents, 300, text).sample


def test_default_selection_is_up_block_self_attention(tiny_components):
    names = select_attn_processor_names(tiny_components.unet)
    assert names and all(name.startswith("up_blocks.") and ".attn1." in name for name in names)
    every_up_attn1 = [n for n in tiny_components.unet.attn_processors if n.startswith("up_blocks") and "attn1" in n]
    assert names == every_up_attn1
    cross = select_attn_processor_names(tiny_components.unet, CROSS_ATTENTION, cross_attention=True)
    assert cross and all(".attn2." in name for name in cross)
    assert select_attn_processor_names(tiny_components.unet, r"attn", cross_attention=False) == [
        n for n in tiny_components.unet.attn_processors if ".attn1." in n
    ]


def test_no_match_raises_with_examples(tiny_components):
    with pytest.raises(ValueError, match=r"matches none of the .* attention processors of UNet2DConditionModel"):
        select_attn_processor_names(tiny_components.unet, r"^nothing_like_this")
    with pytest.raises(ValueError, match=r"cross-attention"):
        select_attn_processor_names(tiny_components.unet, r"\.attn1\.", cross_attention=True)


def test_install_changes_only_selected_layers_and_restores_exactly(tiny_components):
    unet = tiny_components.unet
    before_processors = unet.attn_processors
    baseline = _unet_output(unet)
    processor = ScaledCountingProcessor(0.5)
    handle = install_attn_processors(unet, processor)
    hooked = _unet_output(unet)
    assert not torch.allclose(hooked, baseline)
    hooked_ids = {id(unet.get_submodule(name.removesuffix(".processor"))) for name in handle.names}
    assert set(processor.calls) == hooked_ids and all(count == 1 for count in processor.calls.values())
    handle.remove()
    assert not handle.active
    torch.testing.assert_close(_unet_output(unet), baseline, rtol=0, atol=0)
    assert unet.attn_processors == before_processors
    handle.remove()  # a second remove is harmless


def test_unity_processor_equals_never_hooked(tiny_components):
    baseline = _unet_output(tiny_components.unet)
    with install_attn_processors(tiny_components.unet, ScaledCountingProcessor(1.0), r"attn"):
        torch.testing.assert_close(_unet_output(tiny_components.unet), baseline, rtol=0, atol=0)


def test_context_manager_restores_after_an_exception(tiny_components):
    baseline = _unet_output(tiny_components.unet)
    with pytest.raises(RuntimeError, match="boom"):
        with install_attn_processors(tiny_components.unet, ScaledCountingProcessor(2.0)):
            raise RuntimeError("boom")
    torch.testing.assert_close(_unet_output(tiny_components.unet), baseline, rtol=0, atol=0)


@pytest.mark.parametrize("remove_first", ["self", "cross"])
def test_hooks_on_different_layers_compose_and_come_off_in_any_order(tiny_components, remove_first):
    unet = tiny_components.unet
    baseline = _unet_output(unet)
    self_hook = install_attn_processors(unet, ScaledCountingProcessor(0.5))
    only_self = _unet_output(unet)
    cross_hook = install_attn_processors(unet, ScaledCountingProcessor(0.25), CROSS_ATTENTION)
    both = _unet_output(unet)
    assert not torch.allclose(both, only_self)
    first, second = (self_hook, cross_hook) if remove_first == "self" else (cross_hook, self_hook)
    first.remove()
    if remove_first == "cross":
        torch.testing.assert_close(_unet_output(unet), only_self, rtol=0, atol=0)
    second.remove()
    torch.testing.assert_close(_unet_output(unet), baseline, rtol=0, atol=0)


def test_controlnet_layers_can_be_hooked(tiny_components):
    controlnet = tiny_components.controlnet
    with pytest.raises(ValueError):
        select_attn_processor_names(controlnet)  # a ControlNet has no up blocks
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 4, 8, 8, generator=generator), 10, torch.randn(1, 77, 32, generator=generator))
    pose = torch.rand(1, 3, 64, 64, generator=generator)

    @torch.no_grad()
    def mid_residual():
        return controlnet(*inputs, controlnet_cond=pose, return_dict=False)[1]

    baseline = mid_residual()
    with install_attn_processors(controlnet, ScaledCountingProcessor(3.0), r"\.attn1\."):
        assert not torch.allclose(mid_residual(), baseline)
    torch.testing.assert_close(mid_residual(), baseline, rtol=0, atol=0)
