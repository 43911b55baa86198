"""Stage 2 of PACM: per-step conditioning under which guided sampling from `Z_T` reconstructs the source.

- paper mode: pose-aware inversion, the null-text-inversion loop on the chosen embedding slot, ControlNet on the
  source pose, guidance 7.5;
- negative-prompt mode: the prompt embedding in both slots, with no model evaluation at all;
- direct mode: the prompt's embeddings as they are, plus the latent offset that puts each guided step back on the
  inversion trajectory (no gradients; added to every frame at generation, so frame 0 retraces `Z_T..Z_0`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..prompts import PromptEmbeddings
from .ddim import DDIMSchedule, guided_noise
from .denoiser import ControlledDenoiser
from .finite import ensure_finite
from .optimization import optimize_step
from .settings import PACMSettings


@dataclass
class SourceConditioning:
    """What guided sampling needs at each step to reconstruct the source (frame 0).

    Args:
        embeddings (`torch.Tensor`): `[T, L, D]` float32, per sampling step (noisiest first), the embedding of the
            `optimized_slot` (`∅_s,t` of the paper).
        fixed_embedding (`torch.Tensor`): `[L, D]` the other slot's embedding, the same at every step.
        optimized_slot (`str`): `"conditional"` or `"unconditional"`.
        offsets (`torch.Tensor | None`): `[T, 4, h, w]` float32 in direct mode: `Z_{T-i-1}` minus the guided DDIM
            step from `Z_{T-i}`; added to every frame's latent after sampling step `i`.
    """

    embeddings: torch.Tensor
    fixed_embedding: torch.Tensor
    optimized_slot: str
    offsets: torch.Tensor | None = None

    def guidance_embeddings(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(unconditional, conditional)` `[L, D]` embeddings for sampling step `step`."""
        return _pair(self.embeddings[step], self.fixed_embedding, self.optimized_slot)


def _pair(optimized: torch.Tensor, fixed: torch.Tensor, slot: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (fixed, optimized) if slot == "conditional" else (optimized, fixed)


def _slots(prompt: PromptEmbeddings, settings: PACMSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting embedding of the optimised slot and the fixed other one."""
    if settings.optimized_slot == "conditional":
        return prompt.conditional, prompt.unconditional
    return prompt.unconditional, prompt.conditional


def source_conditioning(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    latents: torch.Tensor,
    prompt: PromptEmbeddings,
    pose: torch.Tensor,
    settings: PACMSettings,
    on_step: Callable[[int], None] | None = None,
) -> SourceConditioning:
    """Runs stage 2 in `settings.mode`.

    Args:
        denoiser ([`ControlledDenoiser`]): UNet and ControlNet.
        schedule ([`DDIMSchedule`]): sampling schedule.
        latents (`torch.Tensor`): `[T + 1, 4, h, w]` the inversion trajectory `Z_0..Z_T`.
        prompt ([`PromptEmbeddings`]): the prompt's embeddings.
        pose (`torch.Tensor`): `[1, 3, 8h, 8w]` source pose condition image.
        settings ([`PACMSettings`]): mode and optimisation settings.
        on_step (`Callable[[int], None]`, *optional*): called with the 0-based step after each step.
    """
    num_steps = len(schedule)
    optimized, fixed = _slots(prompt, settings)
    if settings.mode == "negative-prompt":
        embeddings = prompt.conditional.expand(num_steps, *prompt.conditional.shape).clone()
        return SourceConditioning(embeddings, prompt.conditional.clone(), settings.optimized_slot)
    if settings.mode == "direct":
        offsets = _direct_offsets(denoiser, schedule, latents, prompt, pose, settings, on_step)
        embeddings = optimized.expand(num_steps, *optimized.shape).clone()
        return SourceConditioning(embeddings, fixed.clone(), settings.optimized_slot, offsets)
    return SourceConditioning(
        _pose_aware_inversion(denoiser, schedule, latents, optimized, fixed, pose, settings, on_step),
        fixed.clone(),
        settings.optimized_slot,
    )


def _pose_aware_inversion(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    latents: torch.Tensor,
    optimized: torch.Tensor,
    fixed: torch.Tensor,
    pose: torch.Tensor,
    settings: PACMSettings,
    on_step: Callable[[int], None] | None,
) -> torch.Tensor:
    num_steps = len(schedule)
    current = latents[num_steps][None]
    embedding = optimized[None]
    per_step = []
    for step in range(num_steps):
        result = optimize_step(
            denoiser,
            schedule,
            step,
            current,
            pose,
            embedding,
            fixed,
            latents[num_steps - step - 1][None],
            settings,
            settings.source_inner_steps,
            optimizer="adam",
            learning_rate=settings.learning_rate_at(step),
            resample=True,
            stage="source",
        )
        embedding, current = result.embeddings, result.samples
        per_step.append(embedding[0])
        if on_step is not None:
            on_step(step)
    return torch.stack(per_step)


@torch.no_grad()
def _direct_offsets(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    latents: torch.Tensor,
    prompt: PromptEmbeddings,
    pose: torch.Tensor,
    settings: PACMSettings,
    on_step: Callable[[int], None] | None,
) -> torch.Tensor:
    num_steps = len(schedule)
    text = torch.stack([prompt.unconditional, prompt.conditional])
    offsets = []
    for step in range(num_steps):
        current = latents[num_steps - step][None]
        noise = denoiser(
            current.expand(2, -1, -1, -1), int(schedule.timesteps[step]), text, pose.expand(2, -1, -1, -1)
        )
        sampled = schedule.sample_step(current, guided_noise(*noise[:, None], settings.guidance_scale), step)
        offsets.append(latents[num_steps - step - 1] - sampled[0])
        ensure_finite(offsets[-1], "latent offsets", "source", step, num_steps)
        if on_step is not None:
            on_step(step)
    return torch.stack(offsets)
