"""Subject-token cross-attention maps recorded while the frames are optimised, and the character masks from them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from hooks import (
    CROSS_ATTENTION,
    CrossAttentionRecorder,
    attention_maps_to_masks,
    install_attn_processors,
    select_attn_processor_names,
)

from .optimization import Recording

#: Cross-attention layers of at most this many query tokens (32x32) are averaged into the maps (prompt-to-prompt).
MAX_ATTENTION_TOKENS = 32 * 32


class _SwitchedRecorder:
    """On every cross-attention layer for a whole stage: inside [`record`] a layer runs the recorder, outside it the
    processor the layer had before, so passes that are not recorded compute exactly what they would without it.

    Args:
        recorder ([`~hooks.CrossAttentionRecorder`]): records the subject tokens' maps.
        previous (`dict[Attention, object]`): each hooked layer's processor before installation.
    """

    def __init__(self, recorder: CrossAttentionRecorder, previous: dict[Attention, object]):
        self.recorder = recorder
        self.previous = previous
        self.recording = False

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        processor = self.recorder if self.recording else self.previous[attn]
        if temb is not None:
            kwargs["temb"] = temb
        return processor(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )

    @contextmanager
    def record(self) -> Iterator[Callable[[], torch.Tensor]]:
        """Records the passes inside the block (the recorder starts empty); yields the function that reads the maps."""
        self.recorder.reset()
        self.recording = True
        try:
            yield self.recorder.attention_maps
        finally:
            self.recording = False


@contextmanager
def subject_attention_recording(
    unet: UNet2DConditionModel, token_indices: Sequence[int], latent_size: tuple[int, int]
) -> Iterator[Recording | None]:
    """Installs a recorder of the attention maps of `token_indices` on the UNet's cross-attention layers for the
    block, and yields a [`Recording`] (`None` when there are no subject tokens, and nothing is installed).

    The layers' processors are replaced once, not around every pass (replacing them walks the whole UNet, about 8 ms
    on Stable Diffusion 1.5); each use of the recording records one pass, and passes outside a recording run the
    layers' previous processors. The previous processors are restored when the block ends, also on error.

    Args:
        unet (`UNet2DConditionModel`): the UNet.
        token_indices (`Sequence[int]`): positions of the subject's tokens in the prompt.
        latent_size (`tuple[int, int]`): `(h, w)` of the latents; maps come at this size.

    Example:

    ```py
    >>> with subject_attention_recording(unet, [5], (64, 64)) as recording:
    ...     with recording() as read_maps:
    ...         noise = unet(latents, t, text).sample
    ...     maps = read_maps()  # [batch, 64, 64]
    ```
    """
    if not token_indices:
        yield None
        return
    recorder = CrossAttentionRecorder(
        token_indices=list(token_indices), latent_size=latent_size, max_tokens=MAX_ATTENTION_TOKENS
    )
    processors = unet.attn_processors
    previous = {
        unet.get_submodule(name.removesuffix(".processor")): processors[name]
        for name in select_attn_processor_names(unet, CROSS_ATTENTION)
    }
    switched = _SwitchedRecorder(recorder, previous)
    with install_attn_processors(unet, switched, CROSS_ATTENTION):
        yield switched.record


def character_masks(attention_maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Character masks `[..., h, w]` (float32 0 or 1) from attention maps `[..., h, w]`: each map divided by its
    maximum, then `> threshold`."""
    flat = attention_maps.reshape(-1, *attention_maps.shape[-2:])
    return attention_maps_to_masks(flat, threshold=threshold).reshape(attention_maps.shape)
