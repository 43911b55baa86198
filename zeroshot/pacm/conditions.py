"""Pose images as PACM takes them: kept as the caller gave them, turned into ControlNet inputs a few frames at a time.

A long pose sequence stays where it is (a `uint8` array on the CPU is 0.75 MB per 512x512 frame, its float32 condition
tensor 3 MB), and only the frames of the chunk being optimised are converted and moved to the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..imaging import to_condition_tensor


class PoseImages:
    """A sequence of pose condition images in either of two forms, validated once.

    - float tensors `[frames, 3, H, W]` in [0, 1] (ControlNet inputs);
    - `uint8` RGB arrays or tensors `[frames, H, W, 3]` (pose images as drawn), converted with
      [`~zeroshot.imaging.to_condition_tensor`].

    Args:
        images (`torch.Tensor` or `np.ndarray`): the images, in either form.
        size (`tuple[int, int]`): `(H, W)` the images must have.
        name (`str`): the argument's name, for error messages.
        num_frames (`int`, *optional*): the number of frames required (any when `None`).

    Raises:
        `ValueError`: the images are in neither form, of another size or count, or floats outside [0, 1].
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        size: tuple[int, int],
        name: str,
        num_frames: int | None = None,
    ):
        is_uint8 = images.dtype in (np.uint8, torch.uint8)
        if not is_uint8 and not (isinstance(images, torch.Tensor) and images.is_floating_point()):
            raise ValueError(
                f"{name} must be a float tensor [frames, 3, H, W] in [0, 1] or uint8 RGB images [frames, H, W, 3]; "
                f"got {type(images).__name__} of {images.dtype}."
            )
        expected = (num_frames or "frames", *size, 3) if is_uint8 else (num_frames or "frames", 3, *size)
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[1:] != expected[1:] or num_frames not in (None, shape[0]):
            raise ValueError(f"{name} must be [{', '.join(map(str, expected))}]; got {shape}.")
        if not is_uint8 and images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"{name} must hold values in [0, 1] (ControlNet inputs).")
        self.images = images
        self.is_uint8 = is_uint8

    def __len__(self) -> int:
        return self.images.shape[0]

    def conditions(self, frames: Sequence[int], device: torch.device | str) -> torch.Tensor:
        """The ControlNet inputs of `frames`: float32 `[len(frames), 3, H, W]` in [0, 1] on `device`."""
        picked = self.images[list(frames)]
        if not self.is_uint8:
            return picked.to(device, torch.float32)
        return to_condition_tensor(picked.cpu().numpy() if isinstance(picked, torch.Tensor) else picked, device)
