"""What the hooks work out once instead of on every layer call: no host-device transfer in a layer call once the
call's plan and masks are known, masks resized once per token grid and step, and caches that never go stale."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch.overrides import TorchFunctionMode

from hooks import (
    CROSS_ATTENTION,
    CrossAttentionRecorder,
    CrossFrameState,
    DualConsistencyAttnProcessor,
    install_attn_processors,
)

LATENT_SIZE = (5, 7)  # the UNet below attends at 5x7 and 3x4 in its up blocks (and 2x2 in between)
MASK_SIZE = (10, 14)  # masks at another resolution than every layer, so each grid needs its own resize
FRAMES = 7
WINDOWS = [[0, 1, 2], [3, 4, 5], [6]]

# Calls that, with tensors on a GPU, copy host data to the device or read device data back: each makes the host wait.
_TRANSFERS = {
    torch.tensor,
    torch.as_tensor,
    torch.nonzero,
    torch.masked_select,
    torch.equal,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.nonzero,
    torch.Tensor.masked_select,
}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def _host_index(index):
    """Whether an index is Python data (copied to the device) or a boolean mask (a data-dependent shape)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(
        isinstance(part, list) or (isinstance(part, torch.Tensor) and part.dtype == torch.bool) for part in parts
    )


class HostTransferCounter(TorchFunctionMode):
    """Records, while active, every torch call that would make the host wait for a GPU, and every resize."""

    def __init__(self):
        super().__init__()
        self.transfers: list[str] = []
        self.resizes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _TRANSFERS or (func in _INDEXING and _host_index(args[1])):
            self.transfers.append(func.__name__)
        if func is F.interpolate:
            self.resizes += 1
        return func(*args, **(kwargs or {}))


class Counting:
    """Wraps a processor and keeps, for each layer call, what it transferred and resized."""

    def __init__(self, processor):
        self.processor = processor
        self.calls: list[HostTransferCounter] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        with HostTransferCounter() as counter:
            out = self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        self.calls.append(counter)
        return out


def _masks(kind, seed):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(FRAMES, *MASK_SIZE, generator=generator)
    return (masks > 0.5).float() if kind == "hard" else masks


@pytest.mark.parametrize(("kind", "decoupling"), [("hard", "exclusive"), ("soft", "exclusive"), ("hard", "literal")])
@torch.no_grad()
def test_layer_calls_transfer_nothing_once_the_call_is_planned(ladder_unet, kind, decoupling):
    state = CrossFrameState(mode="windows", latent_size=LATENT_SIZE)
    counting = Counting(DualConsistencyAttnProcessor(cfg_chunks=2, state=state, decoupling=decoupling))
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(FRAMES, 4, *LATENT_SIZE, generator=generator)
    text = torch.randn(2 * FRAMES, 10, 24, generator=generator)
    steps = []  # per step: per UNet call, the counters of its layer calls
    with install_attn_processors(ladder_unet, counting):
        for step in range(3):
            state.step, state.masks = step, _masks(kind, seed=step)
            steps.append([])
            for window in WINDOWS:
                state.frame_ids = window
                first = len(counting.calls)
                x = latents[window]
                ladder_unet(torch.cat([x, x]), 900 - 100 * step, torch.cat([text[window], text[FRAMES:][window]]))
                steps[-1].append(counting.calls[first:])
    assert all(len(layer_calls) == 4 for calls in steps for layer_calls in calls)  # two layers at each of two grids
    # Only a UNet call's first layer may plan it (index tensors to the device, the masks' hard/soft decision) ...
    assert all(not layer.transfers for calls in steps for layer_calls in calls for layer in layer_calls[1:])
    # ... and once every window's plan is known, a step transfers only for its new masks' hard/soft decision.
    assert [sum(len(layer_calls[0].transfers) for layer_calls in calls) for calls in steps[1:]] == [1, 1]
    # The masks are resized once per step to each of the two grids, not once per layer call.
    assert [sum(layer.resizes for layer_calls in calls for layer in layer_calls) for calls in steps] == [2, 2, 2]


def _layer(channels=24, heads=2):
    torch.manual_seed(0)
    return Attention(query_dim=channels, heads=heads, dim_head=channels // heads).eval()


@torch.no_grad()
def test_cached_plans_and_masks_follow_every_change_of_the_state():
    chunks, frames, grid = 2, 4, (4, 4)
    layer = _layer()
    hidden = torch.randn(chunks * frames, grid[0] * grid[1], 24, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    hard = (torch.rand(frames, 8, 8, generator=generator) > 0.5).float()
    soft = torch.rand(frames, *grid, generator=generator)
    order = [2, 0, 3, 1]
    shuffled = hidden[[chunk * frames + frame for chunk in range(chunks) for frame in order]]
    state = CrossFrameState(latent_size=grid)
    processor = DualConsistencyAttnProcessor(cfg_chunks=2, state=state)

    def check(batch):
        """The long-lived processor equals a fresh one (nothing cached) given the same fields."""
        fresh_state = CrossFrameState(frame_ids=state.frame_ids, masks=state.masks, latent_size=state.latent_size)
        expected = DualConsistencyAttnProcessor(cfg_chunks=2, state=fresh_state)(layer, batch)
        torch.testing.assert_close(processor(layer, batch), expected, rtol=0, atol=0)
        return expected

    state.masks = hard
    with_hard = check(hidden)
    state.frame_ids = order
    check(shuffled)
    state.frame_ids, state.masks = None, soft
    with_soft = check(hidden)
    soft[1] = 1 - soft[1]  # changed in place
    with_edited = check(hidden)
    state.masks = None
    plain = check(hidden)
    state.masks = hard
    torch.testing.assert_close(check(hidden), with_hard, rtol=0, atol=0)
    state.latent_size = (2, 2)  # the same masks for latents of another size, where 16 tokens fit no grid
    with pytest.raises(ValueError, match="16 tokens does not fit latents of size"):
        processor(layer, hidden)
    outputs = [with_hard, with_soft, with_edited, plain]
    assert all((a - b).abs().max() > 1e-4 for i, a in enumerate(outputs) for b in outputs[i + 1 :])


@torch.no_grad()
def test_recording_transfers_and_resizes_nothing_per_layer(ladder_unet):
    recorder = CrossAttentionRecorder(token_indices=[2, 7], latent_size=LATENT_SIZE)
    counting = Counting(recorder)
    generator = torch.Generator().manual_seed(4)
    with install_attn_processors(ladder_unet, counting, CROSS_ATTENTION):
        for seed in range(2):
            latents = torch.randn(3, 4, *LATENT_SIZE, generator=generator)
            ladder_unet(latents, 100 * seed, torch.randn(3, 10, 24, generator=generator))
    assert len(counting.calls) == recorder.num_recorded == 2 * 7
    assert all(not layer.transfers and not layer.resizes for layer in counting.calls[1:])
    with HostTransferCounter() as reading:
        recorder.attention_maps()
    assert reading.resizes == 2  # once per grid: 3x4 and 2x2 (the 5x7 maps are at the latent size already)
