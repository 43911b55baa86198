"""Sampling frame 0 back from `Z_T` with PACM's source conditioning, to measure how well it reconstructs the source."""

from __future__ import annotations

import torch

from ..components import ModelComponents
from .ddim import DDIMSchedule, guided_noise
from .denoiser import ControlledDenoiser
from .run import PACMResult


@torch.no_grad()
def reconstruct_source(components: ModelComponents, result: PACMResult, source_pose: torch.Tensor) -> torch.Tensor:
    """Samples from `Z_T` with the source's per-step embeddings (and offsets, in direct mode), the ControlNet on the
    source pose and the run's guidance, as generation does for frame 0 without any attention hook.

    Args:
        components ([`~zeroshot.components.ModelComponents`]): the models PACM ran with.
        result ([`PACMResult`]): the output of [`run_pacm`].
        source_pose (`torch.Tensor`): `[1, 3, 8h, 8w]` or `[3, 8h, 8w]` the source pose image.

    Returns:
        `torch.Tensor`: `[1, 4, h, w]` float32, the reconstructed `Z_0` (compare with `result.latents[0]`).
    """
    settings = result.settings
    schedule = DDIMSchedule.from_scheduler(components.scheduler, settings.num_inference_steps)
    denoiser = ControlledDenoiser(components, conditioning_scale=settings.controlnet_conditioning_scale)
    pose = (source_pose[None] if source_pose.ndim == 3 else source_pose).to(denoiser.device, torch.float32)
    latents = result.latents[-1][None]
    for step in range(len(schedule)):
        text = torch.cat(result.step_embeddings(step, [0], denoiser.device))
        noise = denoiser(
            latents.expand(2, -1, -1, -1), int(schedule.timesteps[step]), text, pose.expand(2, -1, -1, -1)
        )
        latents = schedule.sample_step(latents, guided_noise(*noise[:, None], result.guidance_scale), step)
        if result.source_offsets is not None:
            latents = latents + result.source_offsets[step]
    return latents


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """`||estimate - reference|| / ||reference||`."""
    return float((estimate - reference).norm() / reference.norm())
