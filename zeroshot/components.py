"""The set of Stable Diffusion models every pipeline of the toolkit works on."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class ModelComponents:
    """Stable Diffusion 1.5-style models, as loaded by [`~zeroshot.loading.load_components`] or built at random by
    [`~zeroshot.testing.build_random_components`].

    Args:
        vae (`AutoencoderKL`): image <-> latent autoencoder (downscale 8).
        text_encoder (`CLIPTextModel`): prompt encoder.
        tokenizer (`CLIPTokenizer`): prompt tokenizer.
        unet (`UNet2DConditionModel`): noise predictor (4 input channels, or 12 for a Qffusion checkpoint).
        scheduler (`DDIMScheduler`): the sampler and inverter used by every method of the toolkit.
        controlnet (`ControlNetModel`, *optional*): pose ControlNet; `None` for models that take no pose control.
    """

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    scheduler: DDIMScheduler
    controlnet: ControlNetModel | None = None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ModelComponents:
        """Moves every model (in place) to `device` and casts its floating-point weights to `dtype`; returns `self`."""
        arguments = {name: value for name, value in (("device", device), ("dtype", dtype)) if value is not None}
        for model in self.models():
            model.to(**arguments)
        return self

    def models(self) -> list[torch.nn.Module]:
        """The `torch.nn.Module`s among the components (not the tokenizer or scheduler)."""
        return [
            value
            for value in (getattr(self, field.name) for field in fields(self))
            if isinstance(value, torch.nn.Module)
        ]

    def as_dict(self) -> dict[str, object]:
        """The components by name, as pipeline constructors take them."""
        return {field.name: getattr(self, field.name) for field in fields(self)}
