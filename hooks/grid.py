"""Mapping an attention layer's tokens back to a 2-D grid, and masks onto that grid.

A UNet attention layer sees `height * width` tokens of its own resolution. Stable Diffusion's UNet halves each side
with a stride-2 convolution (padding 1), so a latent of `(h, w)` gives grids `(h, w)`, `(ceil(h/2), ceil(w/2))`, ...;
[`token_grid`] walks that ladder, which is what makes non-square and odd latent sizes work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def token_grid(num_tokens: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The `(height, width)` grid of an attention layer with `num_tokens` queries in a UNet run at `latent_size`.

    Args:
        num_tokens (`int`): the layer's number of query tokens.
        latent_size (`tuple[int, int]`): `(height, width)` of the UNet's input latents.

    Raises:
        `ValueError`: no level of the UNet's resolution ladder has `num_tokens` tokens.

    Example:

    ```py
    >>> token_grid(12, (5, 7))  # (5, 7) -> (3, 4)
    (3, 4)
    ```
    """
    height, width = latent_size
    ladder = [(height, width)]
    while height * width > num_tokens and (height, width) != (1, 1):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        ladder.append((height, width))
    if height * width != num_tokens:
        raise ValueError(
            f"An attention layer with {num_tokens} tokens does not fit latents of size {tuple(latent_size)}: "
            f"the UNet's grids would be {ladder}. Set the latent size (height, width) the UNet actually runs at."
        )
    return height, width


def resize_masks(masks: torch.Tensor, size: tuple[int, int], *, hard: bool) -> torch.Tensor:
    """Resizes masks `[n, H, W]` to `size`, antialiased; hard masks come back hard (`>= 0.5`).

    Args:
        masks (`torch.Tensor`): float masks `[n, H, W]` with values in `[0, 1]`.
        size (`tuple[int, int]`): target `(height, width)`.
        hard (`bool`): whether the masks hold only 0 and 1; the result is then thresholded at 0.5.
    """
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", antialias=True)[:, 0]
        if hard:
            masks = (masks >= 0.5).float()
    return masks.float()
