"""Poses drawn over the picture they belong to, to see before any model runs what a pose sequence will do."""

from __future__ import annotations

import numpy as np

from .sequence import PoseSequence

#: Opacity of the skeleton over the picture.
SKELETON_OPACITY = 0.8
#: Colour and width in pixels of the frame drawn around marked frames.
MARK_COLOUR = (255, 0, 0)
MARK_WIDTH = 3


def overlay_poses(image_or_frames: np.ndarray, poses: PoseSequence, *, marks: np.ndarray | None = None) -> np.ndarray:
    """Draws each pose of `poses` (as the OpenPose ControlNet sees it) over the image, or over its own frame.

    Args:
        image_or_frames (`np.ndarray`): one `uint8` RGB image `[H, W, 3]` (every pose is drawn over it) or one frame
            per pose `[frames, H, W, 3]`. The poses are drawn at this size, whatever their canvas.
        poses ([`PoseSequence`]): the poses.
        marks (`np.ndarray`, *optional*): booleans `[frames]`; marked frames get a red border.

    Returns:
        `np.ndarray`: `uint8` RGB frames `[frames, H, W, 3]`.
    """
    pictures = np.asarray(image_or_frames)
    if pictures.dtype != np.uint8 or pictures.ndim not in (3, 4) or pictures.shape[-1] != 3:
        raise ValueError(
            f"image_or_frames must be uint8 [H, W, 3] or [frames, H, W, 3], got {pictures.dtype} {pictures.shape}."
        )
    if pictures.ndim == 4 and len(pictures) != len(poses):
        raise ValueError(f"image_or_frames has {len(pictures)} frames for {len(poses)} poses.")
    if marks is not None and np.shape(marks) != (len(poses),):
        raise ValueError(f"marks must be one boolean per pose ({len(poses)}), got shape {np.shape(marks)}.")
    height, width = pictures.shape[-3:-1]
    skeletons = poses.render(width, height)
    drawn = skeletons.any(axis=-1, keepdims=True)
    blended = (1 - SKELETON_OPACITY) * pictures.astype(np.float32) + SKELETON_OPACITY * skeletons
    frames = np.where(drawn, np.rint(blended), np.broadcast_to(pictures, skeletons.shape)).astype(np.uint8)
    if marks is not None:
        for index in np.flatnonzero(marks):
            frame = frames[index]
            for edge in (frame[:MARK_WIDTH], frame[-MARK_WIDTH:], frame[:, :MARK_WIDTH], frame[:, -MARK_WIDTH:]):
                edge[...] = MARK_COLOUR
    return frames
