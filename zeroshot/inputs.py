"""What the Python API accepts, as a user would naturally pass it, checked before any work starts.

Images are a PIL image, a numpy array or a path; poses a [`~zeroshot.poses.PoseSequence`] (or
[`~zeroshot.poses.RenderedPoses`]) or a path. A value of another type raises `TypeError`, a value out of range
`ValueError`, each naming the argument.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .poses import Poses, PoseSequence, RenderedPoses, load_poses
from .video import load_image, to_rgb


def as_image(value: Image.Image | np.ndarray | str | os.PathLike, name: str = "image") -> Image.Image:
    """An 8-bit RGB PIL image of a PIL image (any mode, see [`~zeroshot.video.to_rgb`]), a numpy array or an image
    file's path.

    Arrays are `[height, width]` (grayscale) or `[height, width, channels]` with 1, 3 (RGB) or 4 (RGBA) channels, of
    `uint8` (0..255), `uint16` (0..65535) or floats in [0, 1].

    Raises:
        `TypeError`: another type. `ValueError`: an array of another shape, dtype or range.
        [`~zeroshot.errors.ZeroshotError`]: a path that is not a readable image.
    """
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if isinstance(value, (str, os.PathLike)):
        return load_image(value)
    if isinstance(value, np.ndarray):
        return Image.fromarray(_array_to_uint8_rgb(value, name))
    raise TypeError(f"{name} must be a PIL image, a numpy array or a path, got {type(value).__name__}.")


def _array_to_uint8_rgb(array: np.ndarray, name: str) -> np.ndarray:
    pixels = array[..., None] if array.ndim == 2 else array
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4) or min(pixels.shape[:2]) < 1:
        raise ValueError(
            f"{name} must be an array [height, width] or [height, width, 1, 3 or 4 channels], got shape {array.shape}."
        )
    if pixels.dtype == np.uint8:
        values = pixels.astype(np.float64)
    elif pixels.dtype == np.uint16:
        values = pixels / 257.0
    elif np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError(f"{name} holds floats outside [0, 1] (or not finite); give values in [0, 1], or uint8.")
        values = pixels.astype(np.float64) * 255.0
    else:
        raise ValueError(f"{name} must be an array of uint8, uint16 or floats in [0, 1], got {array.dtype}.")
    if values.shape[-1] == 4:
        alpha = values[..., 3:] / 255.0
        values = values[..., :3] * alpha + 255.0 * (1 - alpha)
    elif values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def as_poses(value: Poses | str | os.PathLike, name: str = "poses") -> Poses:
    """A pose sequence of a [`~zeroshot.poses.PoseSequence`], [`~zeroshot.poses.RenderedPoses`] or a path that
    [`~zeroshot.poses.load_poses`] reads (OpenPose JSON in pixels without a canvas size needs `load_poses(path,
    size=...)` instead).

    Raises:
        `TypeError`: another type. [`~zeroshot.errors.ZeroshotError`]: a path that holds no poses.
    """
    if isinstance(value, (PoseSequence, RenderedPoses)):
        return value
    if isinstance(value, (str, os.PathLike)):
        return load_poses(value)
    raise TypeError(f"{name} must be a PoseSequence, RenderedPoses or a path, got {type(value).__name__}.")


def check_text(value: object, name: str, *, optional: bool = False) -> None:
    """Raises `TypeError` unless `value` is a `str` (or `None`, when `optional`)."""
    if not isinstance(value, str) and not (optional and value is None):
        kind = "a str or None" if optional else "a str"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}.")


def check_int(value: object, name: str, minimum: int, maximum: int | None = None) -> None:
    """Raises `TypeError` unless `value` is a whole number (not a bool), `ValueError` unless it lies in
    `[minimum, maximum]`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}.")


def as_weights(value: object, name: str, count: int) -> tuple[float, ...]:
    """`count` finite numbers of a sequence (not a string).

    Raises:
        `TypeError`: a string or another non-sequence. `ValueError`: another length, or a value that is not finite.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of {count} numbers, got {type(value).__name__}.")
    if len(value) != count or not all(isinstance(item, numbers.Real) for item in value):
        raise ValueError(f"{name} must be {count} numbers, got {list(value)!r}.")
    weights = tuple(float(item) for item in value)
    if not all(math.isfinite(weight) for weight in weights):
        raise ValueError(f"{name} must be finite, got {weights}.")
    return weights
