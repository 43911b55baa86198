"""Subject-token cross-attention maps recorded while the frames are optimised, and the character masks from them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel

from hooks import CROSS_ATTENTION, CrossAttentionRecorder, attention_maps_to_masks, install_attn_processors

from .optimization import Recording

#: Cross-attention layers of at most this many query tokens (32x32) are averaged into the maps (prompt-to-prompt).
MAX_ATTENTION_TOKENS = 32 * 32


def subject_attention_recording(
    unet: UNet2DConditionModel, token_indices: Sequence[int], latent_size: tuple[int, int]
) -> Recording | None:
    """A [`Recording`] of the attention maps of `token_indices` in the UNet's cross-attention layers, or `None` when
    there are no subject tokens.

    Each use installs the recorder on the UNet's cross-attention layers for one forward pass and restores the
    previous processors afterwards (also on error).

    Args:
        unet (`UNet2DConditionModel`): the UNet.
        token_indices (`Sequence[int]`): positions of the subject's tokens in the prompt.
        latent_size (`tuple[int, int]`): `(h, w)` of the latents; maps come at this size.
    """
    if not token_indices:
        return None
    recorder = CrossAttentionRecorder(
        token_indices=list(token_indices), latent_size=latent_size, max_tokens=MAX_ATTENTION_TOKENS
    )

    @contextmanager
    def record() -> Iterator[Callable[[], torch.Tensor]]:
        with install_attn_processors(unet, recorder, CROSS_ATTENTION):
            recorder.reset()
            yield recorder.attention_maps

    return record


def character_masks(attention_maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Character masks `[..., h, w]` (float32 0 or 1) from attention maps `[..., h, w]`: each map divided by its
    maximum, then `> threshold`."""
    flat = attention_maps.reshape(-1, *attention_maps.shape[-2:])
    return attention_maps_to_masks(flat, threshold=threshold).reshape(attention_maps.shape)
