"""Character masks made inside each UNet call, for the up blocks of that same call, from the subject word's
cross-attention in its down and mid blocks.

Mask-guided decoupling at step `t` needs each frame's mask `M_i,t`, and the masks come from the cross-attention maps
of the subject word (prompt-to-prompt style). A UNet call runs its down and mid blocks before its up blocks, where
dual-consistency attention and decoupling live, and those blocks hold the coarse cross-attention layers (32x32 and
below on Stable Diffusion 1.5 at 512x512: two at 32x32, two at 16x16, one at 8x8). So the masks of step `t` can be
taken from the same call that uses them: no separate sampling pass of every frame just to record its maps, and no
lag of one step.

Each frame's maps depend on that frame's row of the batch only (the down and mid blocks mix no frames), so windowed
calls give every frame the mask a full-batch call gives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .install import HookHandle, install_attn_processors
from .recorder import CrossAttentionRecorder, attention_maps_to_masks
from .state import CrossFrameState

#: Cross-attention layers that run before the up blocks: those of the down blocks and of the mid block.
DOWN_AND_MID_CROSS_ATTENTION = r"^(down_blocks|mid_block)\..*\.attn2\.processor$"


class InCallSubjectMasks:
    """Sets `state.masks` in every UNet call, before its up blocks run, from the subject's maps of its down and mid
    blocks.

    For each call, a [`CrossAttentionRecorder`] on the cross-attention layers of the down and mid blocks (those with
    at most `max_tokens` queries) records the softmax mass on `token_indices`; before the first up block, each frame's
    map in guidance chunk `chunk` is divided by its maximum and thresholded at `threshold`
    ([`attention_maps_to_masks`]), and written at its global frame id into the masks of the step, which become
    `state.masks`. Frames in `fixed_masks` (frame 0, the source, whose mask comes from segmentation) keep their
    given mask. The masks of the step start empty at each new `state.step` (or at every call when `state.step` is
    unset) and fill up as the windows of the step run, so a frame attended from a later window (the last frame of
    the window before) keeps the mask it was given in its own call.

    Args:
        state ([`CrossFrameState`]): the state the cross-frame processors read; its `latent_size` and layout fields
            (`frame_ids`, `num_frames`, `chunks`) must be set before each call.
        token_indices (`Sequence[int]`): positions of the subject's tokens in the prompt.
        num_frames (`int`): frames of the whole sequence; the masks are `[num_frames, h, w]`, indexed by global id.
        threshold (`float`, *optional*, defaults to 0.3): fraction of each map's maximum above which a pixel is in.
        chunk (`int`, *optional*, defaults to -1): the guidance chunk whose maps give the masks (-1: the last, which
            is the conditional one in diffusers' `[unconditional, conditional]` layout).
        cfg_chunks (`int`, *optional*): guidance chunks in the batch when `state.chunks` is unset (as the processor's
            `cfg_chunks`).
        fixed_masks (`Mapping[int, torch.Tensor]`, *optional*): masks `[h, w]` (floats in [0, 1], or bools) of frames
            that keep them.
        max_tokens (`int`, *optional*, defaults to 1024): record only layers with at most this many queries.

    Example:

    ```py
    >>> state = CrossFrameState(mode="windows", latent_size=(64, 64))
    >>> masks = InCallSubjectMasks(state, token_indices=[5], num_frames=16, fixed_masks={0: source_mask})
    >>> processor = DualConsistencyAttnProcessor(cfg_chunks=2, state=state)
    >>> with install_attn_processors(unet, processor), masks.install(unet):
    ...     ...  # each UNet call decouples with the masks of its own frames at its own step
    >>> masks.masks  # [16, 64, 64], the last step's
    ```
    """

    def __init__(
        self,
        state: CrossFrameState,
        token_indices: Sequence[int],
        num_frames: int,
        *,
        threshold: float = 0.3,
        chunk: int = -1,
        cfg_chunks: int | None = None,
        fixed_masks: Mapping[int, torch.Tensor] | None = None,
        max_tokens: int = 32 * 32,
    ):
        if state.latent_size is None:
            raise ValueError("Set `state.latent_size` (the UNet's latent height and width) before making masks.")
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}.")
        latent_size = tuple(int(side) for side in state.latent_size)
        fixed = dict(fixed_masks or {})
        for frame, mask in fixed.items():
            if not 0 <= frame < num_frames or tuple(mask.shape) != latent_size:
                raise ValueError(
                    f"fixed_masks must map frame ids in [0, {num_frames}) to masks of the latent size {latent_size}; "
                    f"got frame {frame} with shape {tuple(mask.shape)}."
                )
        self.state = state
        self.num_frames = int(num_frames)
        self.threshold = float(threshold)
        self.chunk = int(chunk)
        self.cfg_chunks = cfg_chunks
        self.fixed_masks = fixed
        self.recorder = CrossAttentionRecorder(token_indices, latent_size, max_tokens=max_tokens)
        self.masks: torch.Tensor | None = None
        self._step: int | None = None

    def install(self, unet: torch.nn.Module) -> HookHandle:
        """Installs the recorder on the down and mid blocks' cross-attention of `unet` and the hooks that reset it at
        each call and turn its maps into `state.masks` before the first up block; the handle removes all of them."""
        processors = install_attn_processors(unet, self.recorder, DOWN_AND_MID_CROSS_ATTENTION)
        hooks = [
            unet.register_forward_pre_hook(lambda module, args: self.recorder.reset()),
            unet.up_blocks[0].register_forward_pre_hook(lambda module, args: self._set_masks()),
        ]

        def remove() -> None:
            for hook in hooks:
                hook.remove()
            processors.remove()

        return HookHandle(remove, processors.names)

    def _set_masks(self) -> None:
        maps = self.recorder.attention_maps()  # [batch, h, w]
        layout = self.state.layout(maps.shape[0], self.cfg_chunks)
        chunk = self.chunk % layout.chunks
        rows = [layout.row(chunk, position) for position in range(len(layout.frame_ids))]
        if max(layout.frame_ids) >= self.num_frames:
            raise ValueError(f"Frame {max(layout.frame_ids)} is past the {self.num_frames} frames of the masks.")
        frame_masks = attention_maps_to_masks(maps[rows], threshold=self.threshold)
        if self.masks is None or self.state.step is None or self.state.step != self._step:
            masks = frame_masks.new_zeros(self.num_frames, *frame_masks.shape[1:])
        else:
            masks = self.masks.clone()  # a new tensor each call: the state then resizes it afresh
        masks[list(layout.frame_ids)] = frame_masks
        for frame, mask in self.fixed_masks.items():
            masks[frame] = mask.to(masks.device, masks.dtype)
        self.masks, self._step = masks, self.state.step
        self.state.masks = masks
