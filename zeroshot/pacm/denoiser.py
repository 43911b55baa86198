"""The one place PACM evaluates the UNet: ControlNet residuals, dtype handling and evaluation counting."""

from __future__ import annotations

import torch

from ..components import ModelComponents
from ..errors import ZeroshotError
from .counters import EvaluationCounter


class ControlledDenoiser:
    """Predicts noise with the UNet and the pose ControlNet, counting every evaluation.

    Latents, embeddings and the returned noise are float32 whatever the models' dtype (half-precision weights are
    fine; optimised embeddings and DDIM arithmetic stay in float32). Gradients flow to the embeddings when they
    require them, through both the UNet and the ControlNet, never into the weights' `.grad`.

    Args:
        components ([`~zeroshot.components.ModelComponents`]): the models; `controlnet` must be set.
        counter ([`EvaluationCounter`], *optional*): receives one count per latent evaluated.
        conditioning_scale (`float`, *optional*, defaults to 1.0): scale of the ControlNet residuals.
    """

    def __init__(
        self,
        components: ModelComponents,
        counter: EvaluationCounter | None = None,
        conditioning_scale: float = 1.0,
    ):
        if components.controlnet is None:
            raise ZeroshotError("PACM needs the pose ControlNet; load the models with a --controlnet.")
        self.unet = components.unet
        self.controlnet = components.controlnet
        self.counter = counter
        self.conditioning_scale = conditioning_scale
        self.device = self.unet.device
        self.dtype = self.unet.dtype

    def __call__(
        self, latents: torch.Tensor, timestep: torch.Tensor | int, embeddings: torch.Tensor, poses: torch.Tensor
    ) -> torch.Tensor:
        """Noise predicted for `latents` `[batch, 4, h, w]` at `timestep`, given text `embeddings` `[batch, L, D]`
        and pose condition images `poses` `[batch, 3, 8h, 8w]` in [0, 1]; returns float32 `[batch, 4, h, w]`."""
        sample = latents.to(self.dtype)
        text = embeddings.to(self.dtype)
        down, mid = self.controlnet(
            sample,
            timestep,
            encoder_hidden_states=text,
            controlnet_cond=poses.to(self.dtype),
            conditioning_scale=self.conditioning_scale,
            return_dict=False,
        )
        noise = self.unet(
            sample,
            timestep,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0].float()
        if self.counter is not None:
            self.counter.count(noise)
        return noise
