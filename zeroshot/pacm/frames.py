"""Stage 3 of PACM: each target frame's per-step conditioning (Alg. 1), and its subject-token attention maps.

Every frame starts at `Z_T` and samples with its own pose `p_i`; frames are independent, so a batch of frames gives
what each frame alone gives (to float tolerance). In paper mode each frame's embedding at step `t` starts from the
source's `∅_s,t` and takes gradient step(s) towards the source trajectory `Z_{t-1}` (Alg. 1 line 7: a plain
gradient step by default, Adam as an option). The fast modes optimise nothing:
each frame samples as generation will (negative-prompt: one pass per step, the prompt in both slots; direct: two
passes, then the source's offset added), to record its attention maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ddim import DDIMSchedule, guided_noise
from .denoiser import ControlledDenoiser
from .finite import ensure_finite
from .optimization import Recording, open_recording, optimize_step
from .settings import PACMSettings
from .source import SourceConditioning


@dataclass
class FrameConditioning:
    """Per-frame, per-step results of stage 3 for `n` frames (`T` steps, noisiest first).

    Args:
        embeddings (`torch.Tensor | None`): `[n, T, L, D]` float32 pose-aware embeddings of the optimised slot
            (`∅~_i,t`), in paper mode; `None` in the fast modes, where frames use the source's conditioning.
        attention_maps (`torch.Tensor | None`): `[n, T, h, w]` float32 subject-token cross-attention maps of the
            conditional pass at each step, when recorded.
    """

    embeddings: torch.Tensor | None
    attention_maps: torch.Tensor | None

    def frame(self, position: int, device: torch.device | str) -> dict[str, torch.Tensor]:
        """Frame `position`'s tensors by name (`"embeddings"` `[T, L, D]`, `"attention_maps"` `[T, h, w]`, those
        that are set), copied to `device` (copies, so they do not keep the whole batch alive)."""
        named = {"embeddings": self.embeddings, "attention_maps": self.attention_maps}
        return {name: tensor[position].to(device, copy=True) for name, tensor in named.items() if tensor is not None}


def frame_conditioning(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    latents: torch.Tensor,
    source: SourceConditioning,
    poses: torch.Tensor,
    settings: PACMSettings,
    recording: Recording | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FrameConditioning:
    """Runs stage 3 for one batch of frames in `settings.mode`.

    Args:
        denoiser ([`ControlledDenoiser`]): UNet and ControlNet.
        schedule ([`DDIMSchedule`]): sampling schedule.
        latents (`torch.Tensor`): `[T + 1, 4, h, w]` the source's inversion trajectory `Z_0..Z_T`.
        source ([`SourceConditioning`]): the result of stage 2.
        poses (`torch.Tensor`): `[n, 3, 8h, 8w]` target pose condition images in [0, 1].
        settings ([`PACMSettings`]): mode and optimisation settings.
        recording (`Recording`, *optional*): records subject-token attention maps of the conditional passes.
        on_step (`Callable[[int], None]`, *optional*): called with the 0-based step after each step.
    """
    num_steps, n = len(schedule), poses.shape[0]
    current = latents[num_steps][None].expand(n, -1, -1, -1)
    embeddings, maps = [], []
    for step in range(num_steps):
        if settings.mode == "paper":
            result = optimize_step(
                denoiser,
                schedule,
                step,
                current,
                poses,
                source.embeddings[step][None].expand(n, -1, -1),
                source.fixed_embedding,
                latents[num_steps - step - 1][None],
                settings,
                settings.frame_inner_steps,
                optimizer=settings.frame_optimizer,
                learning_rate=settings.frame_learning_rate(step),
                resample=False,
                stage="frames",
                recording=recording,
            )
            current, step_maps = result.samples, result.attention_maps
            embeddings.append(result.embeddings)
        else:
            current, step_maps = _sample_step(denoiser, schedule, step, current, poses, source, settings, recording)
        ensure_finite(current, "latents", "frames", step, num_steps)
        if step_maps is not None:
            maps.append(step_maps)
        if on_step is not None:
            on_step(step)
    return FrameConditioning(
        embeddings=torch.stack(embeddings, dim=1) if embeddings else None,
        attention_maps=torch.stack(maps, dim=1) if maps else None,
    )


@torch.no_grad()
def _sample_step(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    step: int,
    current: torch.Tensor,
    poses: torch.Tensor,
    source: SourceConditioning,
    settings: PACMSettings,
    recording: Recording | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One guided step of every frame with the source's conditioning (no optimisation); returns samples and maps."""
    n = current.shape[0]
    unconditional, conditional = source.guidance_embeddings(step)
    timestep = int(schedule.timesteps[step])
    with open_recording(recording) as read_maps:
        if settings.mode == "negative-prompt":
            # Negative-prompt inversion: both slots hold the prompt, so guidance changes nothing; one pass suffices.
            noise = denoiser(current, timestep, conditional.expand(n, -1, -1), poses)
            conditional_rows = slice(0, n)
        else:
            text = torch.cat([unconditional.expand(n, -1, -1), conditional.expand(n, -1, -1)])
            both = denoiser(torch.cat([current, current]), timestep, text, torch.cat([poses, poses]))
            noise = guided_noise(*both.chunk(2), settings.guidance_scale)
            conditional_rows = slice(n, 2 * n)
    maps = read_maps()
    if maps is not None:
        maps = maps[conditional_rows]
    sampled = schedule.sample_step(current, noise, step)
    if source.offsets is not None:
        sampled = sampled + source.offsets[step]
    return sampled, maps
