"""Images between their three forms (`uint8` arrays, model tensors, VAE latents), in one place for every pipeline.

- `uint8` RGB arrays `[..., height, width, 3]`: what files hold and what users see;
- float tensors `[batch, 3, height, width]` in [-1, 1]: what the VAE takes and gives, and (mapped to [0, 1]) what
  the ControlNet takes as a condition image;
- latents `[batch, 4, height / 8, width / 8]`, shifted and scaled as the diffusion model expects
  (`(posterior mean - shift_factor) * scaling_factor`).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm


def to_model_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """`uint8` RGB `[batch, H, W, 3]` (or one `[H, W, 3]` image) -> float32 `[batch, 3, H, W]` in [-1, 1]."""
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.shape[-1] != 3 or array.ndim not in (3, 4):
        raise ValueError(f"Expected uint8 RGB images [..., height, width, 3], got {array.dtype} {array.shape}.")
    tensor = torch.tensor(array if array.ndim == 4 else array[None], device=device)  # a copy: arrays may be read-only
    return tensor.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_condition_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """`uint8` RGB `[batch, H, W, 3]` -> float32 `[batch, 3, H, W]` in [0, 1], as ControlNets take conditions."""
    return (to_model_tensor(images, device) + 1.0) / 2.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float `[batch, 3, H, W]` in [-1, 1] -> `uint8` RGB `[batch, H, W, 3]` on the CPU (rounded, clipped)."""
    pixels = ((images.detach().float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _shift(vae: AutoencoderKL) -> float:
    return getattr(vae.config, "shift_factor", None) or 0.0


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
    """Latents (posterior mean, shifted and scaled) of images `[batch, 3, H, W]` in [-1, 1], `chunk_size` at a
    time; float32 on the VAE's device."""
    latents = []
    for chunk in images.split(chunk_size):
        mean = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist.mean.float()
        latents.append((mean - _shift(vae)) * vae.config.scaling_factor)
    return torch.cat(latents)


@torch.no_grad()
def decode_latents(
    vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 8, *, show_progress: bool = False
) -> np.ndarray:
    """`uint8` RGB frames `[batch, H, W, 3]` (on the CPU) of shifted and scaled latents, `chunk_size` at a time, so
    a long video's frames need not fit on the device together."""
    frames = []
    chunks = latents.split(chunk_size)
    for chunk in tqdm(chunks, desc="decoding", disable=not show_progress, leave=False):
        images = vae.decode(chunk.to(vae.device, vae.dtype) / vae.config.scaling_factor + _shift(vae)).sample
        frames.append(to_uint8(images))
    return np.concatenate(frames)
