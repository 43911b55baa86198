"""Deterministic DDIM steps in both directions, on the exact timestep and alpha schedule of diffusers' DDIMScheduler.

Sampling step `i` goes from `Z_{T-i}` at timestep `timesteps[i]` to `Z_{T-i-1}`, with diffusers' rule for the
previous timestep (`t - num_train_timesteps // steps`, and `final_alpha_cumprod` below 0). Inversion mirrors it: the
step that brings `Z_{j-1}` to `Z_j` evaluates the UNet at `Z_{j-1}` with the timestep sampling will use at `Z_j`
(the standard approximation of DDIM inversion), so a latent sampled back with the same noise predictions returns
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from ..errors import ZeroshotError


@dataclass(frozen=True)
class DDIMSchedule:
    """The timesteps and cumulative alphas of one DDIM sampling schedule.

    Args:
        timesteps (`torch.Tensor`): `[steps]` integer timesteps in sampling order (noisiest first).
        alphas (`torch.Tensor`): `[steps]` float64, cumulative alpha at each timestep.
        alphas_prev (`torch.Tensor`): `[steps]` float64, cumulative alpha of the step each timestep goes to.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor

    @classmethod
    def from_scheduler(cls, scheduler: DDIMScheduler, num_inference_steps: int) -> DDIMSchedule:
        """The schedule `scheduler` samples with in `num_inference_steps` steps (the scheduler is left unchanged).

        Raises:
            [`~zeroshot.errors.ZeroshotError`]: the scheduler's config is not deterministic epsilon-predicting DDIM
                without sample clipping, which inversion needs.
        """
        config = scheduler.config
        if config.prediction_type != "epsilon" or config.clip_sample or config.thresholding:
            raise ZeroshotError(
                "PACM inverts with deterministic DDIM on an epsilon-predicting model without sample clipping; this "
                f"model's scheduler config has prediction_type={config.prediction_type!r}, "
                f"clip_sample={config.clip_sample}, thresholding={config.thresholding}. Use a Stable Diffusion 1.5 "
                "model (its scheduler_config.json sets prediction_type 'epsilon', clip_sample false)."
            )
        own = DDIMScheduler.from_config(config)
        own.set_timesteps(num_inference_steps)
        timesteps = own.timesteps.clone()
        alphas_cumprod = own.alphas_cumprod.double()
        final = torch.as_tensor(own.final_alpha_cumprod, dtype=torch.float64)
        prev = timesteps - config.num_train_timesteps // num_inference_steps
        alphas_prev = torch.where(prev >= 0, alphas_cumprod[prev.clamp(min=0)], final)
        return cls(timesteps=timesteps, alphas=alphas_cumprod[timesteps], alphas_prev=alphas_prev)

    def __len__(self) -> int:
        return len(self.timesteps)

    def sample_step(self, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """One DDIM sampling step (eta 0) from `latents` at `timesteps[step]`, given the predicted `noise`."""
        return _ddim_move(latents, noise, self.alphas[step], self.alphas_prev[step])

    def inversion_step(self, latents: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """The inverse of `sample_step(., ., step)`: from `Z_{T-step-1}` to `Z_{T-step}`, given the predicted noise."""
        return _ddim_move(latents, noise, self.alphas_prev[step], self.alphas[step])


def _ddim_move(latents: torch.Tensor, noise: torch.Tensor, alpha_from: torch.Tensor, alpha_to: torch.Tensor):
    alpha_from, alpha_to = float(alpha_from), float(alpha_to)
    predicted_clean = (latents - (1.0 - alpha_from) ** 0.5 * noise) / alpha_from**0.5
    return alpha_to**0.5 * predicted_clean + (1.0 - alpha_to) ** 0.5 * noise


def guided_noise(unconditional: torch.Tensor, conditional: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: `unconditional + guidance_scale * (conditional - unconditional)`."""
    return unconditional + guidance_scale * (conditional - unconditional)
