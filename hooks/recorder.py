"""Recording cross-attention maps of chosen prompt tokens, and turning them into masks (prompt-to-prompt style).

PoseAnimate takes each generated frame's character mask from the cross-attention of the subject word: the softmax
mass that each image token puts on that word, averaged over heads and over the layers of coarse resolution,
normalised by its maximum and thresholded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from .grid import token_grid
from .projection import finish, project


class CrossAttentionRecorder:
    """A drop-in for `AttnProcessor2_0` on cross-attention layers that also records where chosen tokens are attended.

    On layers with at most `max_tokens` queries it computes the attention probabilities once, explicitly, and uses
    them both for its output (equal to `AttnProcessor2_0`'s to float tolerance, gradients included) and for the
    record; other layers run `AttnProcessor2_0` itself. For each batch item the recorded map is the softmax mass on
    `token_indices`, averaged over heads, upsampled from the layer's grid to `latent_size`, and averaged over every
    recorded layer and UNet call since the last [`reset`]. Maps are summed per grid as they come and upsampled only
    when read (upsampling is linear), so a layer call neither resizes nor copies anything between host and device.

    Args:
        token_indices (`Sequence[int]`): positions in the encoder sequence (the tokenizer's ids, counting the
            start token at 0) whose attention mass is recorded; their masses are summed.
        latent_size (`tuple[int, int]`): `(height, width)` of the latents the model runs at, which maps each layer's
            tokens to a grid (non-square and odd sizes work).
        max_tokens (`int`, *optional*, defaults to 1024): record only layers with at most this many queries (32x32,
            as prompt-to-prompt does for 64x64 latents).

    Example:

    ```py
    >>> recorder = CrossAttentionRecorder(token_indices=[5], latent_size=(64, 64))
    >>> with install_attn_processors(unet, recorder, CROSS_ATTENTION):
    ...     recorder.reset()
    ...     noise = unet(latents, t, text_embeddings).sample
    ...     maps = recorder.attention_maps()  # [batch, 64, 64]
    >>> masks = attention_maps_to_masks(maps, threshold=0.3)
    ```
    """

    def __init__(self, token_indices: Sequence[int], latent_size: tuple[int, int], max_tokens: int = 32 * 32):
        self.token_indices = [int(index) for index in token_indices]
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        self.max_tokens = int(max_tokens)
        if not self.token_indices or min(self.token_indices) < 0:
            raise ValueError(f"token_indices must be a non-empty list of non-negative positions, got {token_indices}.")
        if min(self.latent_size) < 1:
            raise ValueError(f"latent_size must be (height, width) with positive sides, got {latent_size}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        self._stock = AttnProcessor2_0()
        self._token_index: torch.Tensor | None = None
        self._sums: dict[tuple[int, int], torch.Tensor] = {}
        self._count = 0

    @property
    def num_recorded(self) -> int:
        """How many maps (one per recorded layer per UNet call) were averaged since the last [`reset`]."""
        return self._count

    def reset(self) -> None:
        """Forgets everything recorded."""
        self._sums = {}
        self._count = 0

    def attention_maps(self) -> torch.Tensor:
        """The average recorded map per batch item, float32 `[batch, height, width]` at `latent_size`, detached.

        Raises:
            `RuntimeError`: nothing was recorded (the model did not run, or every layer has more than `max_tokens`
                queries).
        """
        if not self._sums:
            raise RuntimeError(
                "No cross-attention map was recorded: run the model with the recorder installed on its attn2 layers "
                f"after reset(), and make sure some layer has at most max_tokens={self.max_tokens} queries."
            )
        upsampled = [
            grid_sum
            if grid == self.latent_size
            else F.interpolate(grid_sum[:, None], size=self.latent_size, mode="bilinear", align_corners=False)[:, 0]
            for grid, grid_sum in self._sums.items()
        ]
        return torch.stack(upsampled).sum(dim=0) / self._count

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("CrossAttentionRecorder records cross-attention: install it on attn2 layers only.")
        num_queries = hidden_states.shape[-2] if hidden_states.ndim == 3 else hidden_states[0, 0].numel()
        if num_queries > self.max_tokens:
            return self._stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        projected = project(attn, hidden_states, encoder_hidden_states, temb)
        query, key = projected.query, projected.key
        if max(self.token_indices) >= key.shape[-2]:
            raise ValueError(
                f"token_indices {self.token_indices} reach past the {key.shape[-2]} encoder tokens of this layer."
            )
        scores = (query @ key.transpose(-1, -2)).float() * attn.scale
        if attention_mask is not None:
            batch, heads = query.shape[:2]
            mask = attn.prepare_attention_mask(attention_mask, key.shape[-2], batch)
            mask = mask.view(batch, heads, -1, mask.shape[-1])
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        probabilities = scores.softmax(dim=-1)
        self._record(probabilities.detach(), num_queries)
        attended = probabilities.to(projected.value.dtype) @ projected.value
        return finish(attn, attended, projected)

    def _record(self, probabilities: torch.Tensor, num_queries: int) -> None:
        if self._token_index is None or self._token_index.device != probabilities.device:
            self._token_index = torch.tensor(self.token_indices, device=probabilities.device)
        mass = probabilities.index_select(-1, self._token_index).sum(dim=-1).mean(dim=1)  # [batch, queries]
        grid = token_grid(num_queries, self.latent_size)
        recorded = next(iter(self._sums.values()), mass)
        if recorded.shape[0] != mass.shape[0]:
            raise ValueError(
                f"The batch changed from {recorded.shape[0]} to {mass.shape[0]} items since the last reset(): "
                "call reset() between runs with different batch sizes."
            )
        mass = mass.view(mass.shape[0], *grid)
        if grid in self._sums:
            self._sums[grid] += mass
        else:
            self._sums[grid] = mass
        self._count += 1


def attention_maps_to_masks(
    maps: torch.Tensor, threshold: float = 0.3, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Turns attention maps `[n, H, W]` into hard masks: each map divided by its maximum, then `> threshold`.

    Args:
        maps (`torch.Tensor`): non-negative maps `[n, H, W]`, for example [`CrossAttentionRecorder.attention_maps`].
        threshold (`float`, *optional*, defaults to 0.3): fraction of each map's maximum above which a pixel is in.
        size (`tuple[int, int]`, *optional*): resize the maps (bilinear) to `(height, width)` before thresholding.

    Returns:
        `torch.Tensor`: float32 masks `[n, height, width]` of 0s and 1s. A map that is zero everywhere gives an
        empty mask.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}.")
    if maps.ndim != 3:
        raise ValueError(f"maps must be [n, height, width], got shape {tuple(maps.shape)}.")
    maps = maps.float()
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = maps.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps / peak > threshold).float()
