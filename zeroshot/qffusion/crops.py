"""Where a Qffusion checkpoint looks in a frame: the crops that training learns and editing works on, and the
feathered paste-back of edited crops into the full frames.

Two modes, recorded in a checkpoint's [`~zeroshot.qffusion.checkpoint.QffusionConfig`] (`crop`) so that editing
follows training:

- `"subject"` (the default; the paper: "cropped to keep the face at the center"): a square box per frame, tracked over
  the clip. Its side is `crop_scale` times the subject's median size over the clip (the larger side of the face-mesh
  box for face conditions, of the body keypoints' box for body conditions), the same in every frame, so the subject
  keeps the scale the checkpoint learned; its centre follows the subject's box centre, smoothed over time by a
  Gaussian of `crop_smoothing` frames (standard deviation; 0 follows every frame). The side is capped at the frame's
  shorter side, and the box is shifted to lie inside the frame. The crop is resized to `resolution` x `resolution`.
- `"full"`: the whole frame, resized so that its shorter side is `resolution` (aspect ratio kept).

[`paste_back`] resizes edited crops to their boxes and blends them into the frames: weight 1 inside the box, falling
linearly to `1 / (feather + 1)` at the box's edges that lie inside the frame (edges on the frame's border are not
feathered); every pixel outside the boxes keeps its value, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..poses import PoseSequence
from ..video import Fit
from .conditions import Landmarks, PortraitLandmarks, subject_boxes

#: The crop modes a checkpoint can be trained with.
CROP_MODES = ("subject", "full")
#: Width of the paste-back's feathering, as a fraction of the box's shorter side.
FEATHER_FRACTION = 1 / 16


def _check_mode(crop: str) -> None:
    if crop not in CROP_MODES:
        raise ValueError(f"Unknown crop mode {crop!r}; choose one of {', '.join(CROP_MODES)}.")


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over the first axis (standard deviation `sigma` samples), the window cut at the ends and
    renormalised there."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    frames = np.arange(len(values))
    smoothed = np.empty_like(values)
    for frame in frames:
        inside = (frame + offsets >= 0) & (frame + offsets < len(values))
        window = weights[inside]
        smoothed[frame] = window @ values[frame + offsets[inside]] / window.sum()
    return smoothed


def crop_boxes(
    landmarks: Landmarks,
    frame_size: tuple[int, int],
    *,
    crop: str = "subject",
    crop_scale: float = 2.5,
    crop_smoothing: float = 5.0,
) -> np.ndarray:
    """The box of every frame that a checkpoint sees (see the module).

    Args:
        landmarks ([`~zeroshot.qffusion.conditions.PortraitLandmarks`] or [`~zeroshot.poses.PoseSequence`]): the
            clip's landmarks, normalised to its frames.
        frame_size (`tuple[int, int]`): `(width, height)` of the frames.
        crop (`str`, *optional*, defaults to `"subject"`): `"subject"` or `"full"`.
        crop_scale (`float`, *optional*, defaults to 2.5): box side over the subject's size.
        crop_smoothing (`float`, *optional*, defaults to 5.0): standard deviation in frames of the smoothing of the
            box centres.

    Returns:
        `np.ndarray`: `int64` `[frames, 4]` boxes `(left, top, right, bottom)` in pixels, inside the frame.
    """
    _check_mode(crop)
    width, height = frame_size
    if crop == "full":
        return np.tile(np.array([0, 0, width, height], np.int64), (len(landmarks), 1))
    if not crop_scale > 0 or crop_smoothing < 0:
        raise ValueError(
            f"crop_scale must be positive and crop_smoothing not negative: {crop_scale}, {crop_smoothing}."
        )
    boxes = subject_boxes(landmarks).astype(np.float64) * np.array([width, height, width, height])
    found = np.isfinite(boxes).all(axis=1)  # a frame without keypoints takes its box from the nearest ones
    if not found.any():
        raise ValueError("No frame shows the subject to crop around.")
    frames = np.arange(len(boxes))
    boxes = np.stack([np.interp(frames, frames[found], boxes[found, side]) for side in range(4)], axis=1)
    centres = _smooth((boxes[:, :2] + boxes[:, 2:]) / 2, crop_smoothing)
    size = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    side = max(1, min(round(crop_scale * size), width, height))
    left = np.clip(np.round(centres[:, 0] - side / 2), 0, width - side).astype(np.int64)
    top = np.clip(np.round(centres[:, 1] - side / 2), 0, height - side).astype(np.int64)
    return np.stack([left, top, left + side, top + side], axis=1)


def working_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """`(width, height)` with the shorter side scaled to `resolution`, the aspect ratio kept, both sides rounded to
    the nearest multiple of `multiple` (at least `multiple`): the size a box of `width` x `height` is edited at."""
    scale = resolution / min(width, height)

    def rounded(side: int) -> int:
        return max(multiple, round(side * scale / multiple) * multiple)

    return rounded(width), rounded(height)


def crop_frames(frames: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each frame's box, resized (Lanczos) to `size` `(width, height)`: `uint8` `[frames, height, width, 3]`."""
    crops = np.empty((len(frames), size[1], size[0], 3), np.uint8)
    for index, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        crop = Image.fromarray(frame).crop(tuple(int(value) for value in box))
        crops[index] = np.asarray(crop.resize(size, Image.Resampling.LANCZOS))
    return crops


def crop_landmarks(landmarks: Landmarks, boxes: np.ndarray, frame_size: tuple[int, int]) -> Landmarks:
    """The landmarks normalised to each frame's box instead of the frame (boxes of one size, as [`crop_boxes`]
    makes); points outside a box keep their position outside [0, 1] (face) or become missing (body)."""
    sides = boxes[:, 2:] - boxes[:, :2]
    if len(np.unique(sides, axis=0)) > 1:
        raise ValueError("crop_landmarks() needs boxes of one size.")
    box_size = (int(sides[0, 0]), int(sides[0, 1]))
    frames = [
        landmarks[index].fitted(Fit(tuple(frame_size), 1.0, tuple(frame_size), int(box[0]), int(box[1]), box_size))
        for index, box in enumerate(boxes)
    ]
    if isinstance(landmarks, PortraitLandmarks):
        return PortraitLandmarks(np.concatenate([f.face for f in frames]), np.concatenate([f.pose for f in frames]))
    return PoseSequence(
        np.concatenate([f.body for f in frames]),
        box_size,
        landmarks.fps,
        None if landmarks.face is None else np.concatenate([f.face for f in frames]),
        None if landmarks.hands is None else np.concatenate([f.hands for f in frames]),
        landmarks.source,
    )


def feather_weights(box: np.ndarray, frame_size: tuple[int, int], feather: int) -> np.ndarray:
    """`float64` `[height, width]` blending weights of a box `(left, top, right, bottom)`: 1 inside, falling to
    `1 / (feather + 1)` on the box's edge pixels that lie inside the frame."""
    left, top, right, bottom = (int(value) for value in box)

    def ramp(length: int, feather_start: bool, feather_end: bool) -> np.ndarray:
        positions = np.arange(length, dtype=np.float64)
        distance = np.full(length, np.inf)
        if feather_start:
            distance = np.minimum(distance, positions)
        if feather_end:
            distance = np.minimum(distance, length - 1 - positions)
        return np.minimum(1.0, (distance + 1) / (feather + 1))

    columns = ramp(right - left, left > 0, right < frame_size[0])
    rows = ramp(bottom - top, top > 0, bottom < frame_size[1])
    return np.minimum(rows[:, None], columns[None, :])


def paste_back(frames: np.ndarray, crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Edited crops resized (Lanczos) into their boxes of `frames` with a feathered blend (see the module).

    Args:
        frames (`np.ndarray`): `uint8` `[frames, height, width, 3]`: what lies around the boxes.
        crops (`np.ndarray`): `uint8` `[frames, h, w, 3]` edited crops, any size.
        boxes (`np.ndarray`): `[frames, 4]` boxes `(left, top, right, bottom)`, as [`crop_boxes`] makes.

    Returns:
        `np.ndarray`: new frames; outside the boxes, equal to `frames`.
    """
    pasted = frames.copy()
    frame_size = (frames.shape[2], frames.shape[1])
    for index, (crop, box) in enumerate(zip(crops, boxes, strict=True)):
        left, top, right, bottom = (int(value) for value in box)
        size = (right - left, bottom - top)
        patch = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), np.float64)
        weights = feather_weights(box, frame_size, max(1, round(min(size) * FEATHER_FRACTION)))[..., None]
        region = pasted[index, top:bottom, left:right].astype(np.float64)
        pasted[index, top:bottom, left:right] = np.rint(weights * patch + (1 - weights) * region).astype(np.uint8)
    return pasted
