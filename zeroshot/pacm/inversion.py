"""Stage 1 of PACM: DDIM inversion of the source latent, with the ControlNet on the source pose, at guidance 1."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .ddim import DDIMSchedule
from .denoiser import ControlledDenoiser
from .finite import ensure_finite


@torch.no_grad()
def ddim_inversion(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    latent: torch.Tensor,
    embedding: torch.Tensor,
    pose: torch.Tensor,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Inverts `latent` step by step from `Z_0` to `Z_T` with the conditional text embedding and the source pose.

    Args:
        denoiser ([`ControlledDenoiser`]): UNet and ControlNet.
        schedule ([`DDIMSchedule`]): the sampling schedule this inversion mirrors.
        latent (`torch.Tensor`): `[1, 4, h, w]` float32 source latent `Z_0` (VAE mean times its scaling factor).
        embedding (`torch.Tensor`): `[L, D]` prompt embedding.
        pose (`torch.Tensor`): `[1, 3, 8h, 8w]` source pose condition image in [0, 1].
        on_step (`Callable[[int], None]`, *optional*): called with the 0-based step after each step.

    Returns:
        `torch.Tensor`: `[T + 1, 4, h, w]` float32, `Z_0` (the input) to `Z_T`.
    """
    num_steps = len(schedule)
    latents = [latent[0]]
    current = latent
    text = embedding[None]
    for inversion_step in range(num_steps):
        step = num_steps - 1 - inversion_step  # the sampling step that will undo this one
        noise = denoiser(current, int(schedule.timesteps[step]), text, pose)
        current = schedule.inversion_step(current, noise, step)
        ensure_finite(current, "latents", "ddim_inversion", inversion_step, num_steps)
        latents.append(current[0])
        if on_step is not None:
            on_step(inversion_step)
    return torch.stack(latents)
