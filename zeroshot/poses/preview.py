"""Previews: poses drawn over the image or video they belong to, and contact sheets, to check poses before a run.

The skeleton is drawn as the ControlNet sees it ([`render_pose`]) over the picture darkened to 60%. With marks from
[`repair_poses`], joints swapped back from a mirror get a yellow ring and joints filled in a gap a white ring.

Example:

```py
>>> from zeroshot.poses import contact_sheet, overlay_poses
>>> frames = overlay_poses(video.frames, extraction.poses, marks=extraction.marks)
>>> sheet = contact_sheet(frames)  # one PNG-ready image of up to 12 frames
```
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..atomic import staged_file
from ..errors import ZeroshotError
from ..video import check_output_path, write_video
from .repair import FILLED, MIRRORED
from .sequence import PoseSequence

#: Ring colours (RGB) of marked joints, and the ring's radius and width in pixels.
MARK_COLORS = {MIRRORED: (255, 255, 0), FILLED: (255, 255, 255)}
MARK_RADIUS, MARK_WIDTH = 9, 2
#: How much of the picture shows under the skeleton.
BACKGROUND = 0.6


def overlay_poses(
    image_or_frames: np.ndarray,
    poses: PoseSequence,
    *,
    marks: np.ndarray | None = None,
    max_size: int | None = None,
) -> np.ndarray:
    """Draws poses over an image (the same image under every pose) or over each frame of a video.

    Args:
        image_or_frames (`np.ndarray`): `uint8` RGB `[height, width, 3]`, or `[frames, height, width, 3]` with one
            frame per pose. The poses' normalised coordinates are drawn at this size.
        poses ([`PoseSequence`]): the poses.
        marks (`np.ndarray`, *optional*): `[frames, 18]` per-joint marks from [`repair_poses`].
        max_size (`int`, *optional*): shrink the pictures so their longer side is at most this many pixels.

    Returns:
        `np.ndarray`: `uint8` RGB `[frames, height, width, 3]`.
    """
    pictures = np.asarray(image_or_frames)
    if pictures.dtype != np.uint8 or pictures.ndim not in (3, 4) or pictures.shape[-1] != 3:
        raise ValueError(
            f"image_or_frames must be uint8 RGB [height, width, 3] or [frames, height, width, 3], got "
            f"{pictures.dtype} {pictures.shape}."
        )
    if pictures.ndim == 4 and len(pictures) != len(poses):
        raise ValueError(f"image_or_frames holds {len(pictures)} frames for {len(poses)} poses.")
    if marks is not None and np.shape(marks) != poses.body.shape[:2]:
        raise ValueError(f"marks must have shape {poses.body.shape[:2]}, got {np.shape(marks)}.")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}.")
    height, width = pictures.shape[-3:-1]
    shrink = min(1.0, max_size / max(width, height)) if max_size else 1.0
    size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
    result = np.empty((len(poses), size[1], size[0], 3), np.uint8)
    skeletons = poses.render(*size)
    for index in range(len(poses)):
        picture = pictures[index] if pictures.ndim == 4 else pictures
        if size != (width, height):
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        drawn = skeletons[index].any(axis=-1)
        frame = (picture * BACKGROUND).astype(np.uint8)
        frame[drawn] = skeletons[index][drawn]
        if marks is not None:
            for mark, color in MARK_COLORS.items():
                for joint in np.flatnonzero((marks[index] == mark) & poses.visible[index]):
                    x, y = poses.body[index, joint, :2] * size
                    cv2.circle(frame, (int(x), int(y)), MARK_RADIUS, color, MARK_WIDTH)
        result[index] = frame
    return result


def contact_sheet(frames: np.ndarray, *, count: int = 12, columns: int = 4, width: int = 1280) -> np.ndarray:
    """Up to `count` frames spread evenly over a sequence, tiled in a grid, each labelled with its frame number.

    Args:
        frames (`np.ndarray`): `uint8` RGB `[frames, height, width, 3]`, e.g. from [`overlay_poses`].
        count (`int`, *optional*, defaults to 12): how many frames to show at most.
        columns (`int`, *optional*, defaults to 4): tiles per row.
        width (`int`, *optional*, defaults to 1280): width of the sheet in pixels.

    Returns:
        `np.ndarray`: the sheet, `uint8` RGB `[height, width, 3]`.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 RGB [frames, height, width, 3], got {frames.dtype} {frames.shape}.")
    if count < 1 or columns < 1 or width < columns:
        raise ValueError(
            f"count and columns must be positive and width at least columns: {count}, {columns}, {width}."
        )
    chosen = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    columns = min(columns, len(chosen))
    tile_width = width // columns
    tile_height = max(1, round(frames.shape[1] * tile_width / frames.shape[2]))
    rows = math.ceil(len(chosen) / columns)
    sheet = np.zeros((rows * tile_height, columns * tile_width, 3), np.uint8)
    for place, index in enumerate(chosen):
        tile = cv2.resize(frames[index], (tile_width, tile_height), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, str(index), (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        row, column = divmod(place, columns)
        sheet[row * tile_height : (row + 1) * tile_height, column * tile_width : (column + 1) * tile_width] = tile
    return sheet


def check_preview_path(path: str | os.PathLike) -> Path:
    """Checks, before any work starts, that [`write_preview`] can write `path`: a `.png` (the contact sheet) or a
    `.mp4` or `.gif` (the video, plus its contact sheet beside it as `.png`).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: another suffix, or a folder that is missing or not writable.
    """
    path = Path(path)
    if path.suffix.lower() not in (".png", ".mp4", ".gif"):
        raise ZeroshotError(
            f"Cannot write a preview to {str(path)!r}: give a .png (a contact sheet) or a .mp4 or .gif (the video, "
            f"with its contact sheet beside it)."
        )
    check_output_path(path.with_suffix(".mp4"))  # the folder's checks
    return path


def write_preview(frames: np.ndarray, path: str | os.PathLike, fps: float) -> list[Path]:
    """Writes preview frames (from [`overlay_poses`]) as a contact sheet (`.png`), or as a video with its contact
    sheet beside it (`NAME.png`), by the path's suffix; returns the written paths."""
    path = check_preview_path(path)
    written = []
    if path.suffix.lower() != ".png":
        written.append(write_video(frames, path, fps))
    sheet_path = path.with_suffix(".png")
    with staged_file(sheet_path) as staging:
        Image.fromarray(contact_sheet(frames)).save(staging, format="PNG")
    return [*written, sheet_path]
