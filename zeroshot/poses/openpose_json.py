"""OpenPose JSON: reading per-frame files and single files of frames, and writing both.

OpenPose writes one file per frame, `{"version": 1.3, "people": [{"pose_keypoints_2d": [x, y, c, ...], ...}]}`, with
pixel coordinates and no canvas size; the ControlNet web UI adds `canvas_width` and `canvas_height` to such a dict.
Our own single-file form holds every frame and says its canvas and frame rate:

```json
{"format": "zeroshot-poses", "version": 1, "canvas_width": 512, "canvas_height": 512, "fps": 29.97,
 "frames": [{"people": [{"pose_keypoints_2d": [...], "face_keypoints_2d": [], "hand_left_keypoints_2d": [],
                         "hand_right_keypoints_2d": []}]}, ...]}
```

A JSON list of per-frame dicts is read too. Body keypoints may be COCO-18 (54 numbers) or OpenPose's default BODY_25
(75 numbers, mapped to COCO-18). When a frame holds several people, the one with the highest total body confidence
is taken.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import staged_folder, write_json
from ..errors import ZeroshotError
from ..outputs import check_output
from ..video import natural_key
from .sequence import PoseSequence
from .skeleton import JOINT_NAMES, NUM_FACE_POINTS, NUM_HAND_POINTS, NUM_JOINTS

logger = logging.getLogger(__name__)

#: The `format` value of our own single-file form.
FORMAT_NAME = "zeroshot-poses"
FORMAT_VERSION = 1
#: How far (as a fraction of the canvas) a keypoint may lie past the canvas edge before a file is refused.
CANVAS_TOLERANCE = 0.02
# BODY_25 joint of each COCO-18 joint (BODY_25 adds a mid-hip at 8 and six foot points at the end).
_BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_HAND_KEYS = ("hand_left_keypoints_2d", "hand_right_keypoints_2d")


@dataclass
class _Frame:
    """One frame's chosen person, coordinates as written in the file."""

    body: np.ndarray
    face: np.ndarray | None
    hands: np.ndarray | None
    canvas: tuple[int, int] | None
    where: str
    people: int


def read_openpose_json(path: str | os.PathLike, *, size: tuple[int, int] | None = None) -> PoseSequence:
    """Reads OpenPose JSON: one file (one frame, our single-file form, or a list of frames) or a folder of per-frame
    files as OpenPose writes them (taken in natural order of their names: `..._2_...` before `..._10_...`).

    Args:
        path (`str` or `os.PathLike`): a `.json` file or a folder of them.
        size (`tuple[int, int]`, *optional*):
            `(width, height)` of the canvas the keypoints refer to, for files that do not say it (OpenPose's own do
            not): the size of the video the poses were detected on. Pixel coordinates are divided by it; files whose
            coordinates all lie within `[0, 1]` (OpenPose's `--keypoint_scale 3`) are taken as normalised already.

    Returns:
        [`PoseSequence`]: the poses, normalised to the canvas, with the frame rate when the file gives it. Frames
        without a person have every keypoint missing.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the file is missing or malformed (the message names the file and the
        frame), holds no frames or no person, gives no canvas size when one is needed, or has keypoints outside the
        canvas given by `size` (a sign of the wrong size). Keypoints outside a canvas the file states itself are kept
        as they are: aligned poses reach past the picture when the person does.
    """
    path = Path(path)
    frames, fps = _read_frames(path)
    if not frames:
        raise ZeroshotError(f"{str(path)!r} holds no frames: give a pose sequence with at least one frame.")
    crowded = sum(frame.people > 1 for frame in frames)
    if crowded:
        logger.info("%d frames of %s hold several people; took the most confident one in each.", crowded, path)
    canvases = [frame.canvas or size for frame in frames]
    if any(canvas is None for canvas in canvases):
        if not _normalised(frames):
            raise ZeroshotError(
                f"{str(path)!r} gives keypoints in pixels but not the size of the canvas they belong to: give the "
                f"width and height of the video the poses were detected on."
            )
        raise ZeroshotError(
            f"{str(path)!r} gives normalised keypoints but not the size of the canvas they belong to, which their "
            f"aspect ratio depends on: give the width and height of the video the poses were detected on."
        )
    canvas = canvases[0]
    for frame, other in zip(frames, canvases, strict=True):
        if other != canvas:
            raise ZeroshotError(
                f"{frame.where}: canvas {other[0]}x{other[1]} differs from the first frame's {canvas[0]}x{canvas[1]}; "
                f"all frames of a pose sequence must share one canvas size."
            )
    normalised = frames[0].canvas is None and _normalised(frames)
    scale = np.ones(2) if normalised else 1.0 / np.asarray(canvas, dtype=np.float64)
    for frame in frames:
        for points in (frame.body, frame.face, frame.hands):
            if points is not None:
                points[..., :2] *= scale
        if frame.canvas is None:  # a canvas the file states is trusted: its keypoints may lie past its edges
            _check_inside_canvas(frame, canvas)
    if not any((frame.body[:, 2] > 0).any() for frame in frames):
        raise ZeroshotError(
            f"{str(path)!r} holds no person in any of its {len(frames)} frames: give poses of a person."
        )
    body = np.stack([frame.body for frame in frames])
    face = _stack_optional([frame.face for frame in frames], (NUM_FACE_POINTS, 3))
    hands = _stack_optional([frame.hands for frame in frames], (2, NUM_HAND_POINTS, 3))
    return PoseSequence(body, size=canvas, fps=fps, face=face, hands=hands, source=str(path))


def write_openpose_json(poses: PoseSequence, path: str | os.PathLike) -> Path:
    """Writes poses as OpenPose JSON, in pixels of the canvas: our single-file form for a `.json` path, or one
    OpenPose file per frame (`frame_000000000000_keypoints.json`, ...) for a folder path without a suffix. Every
    frame dict also carries `canvas_width` and `canvas_height`, so the files read back without being told the size.

    The output appears only once complete (written under a temporary name, then renamed).

    Args:
        poses ([`PoseSequence`]): the poses.
        path (`str` or `os.PathLike`): a `.json` file, or a folder that does not exist yet or is empty.

    Returns:
        `Path`: the written path.

    Example:

    ```py
    >>> from zeroshot.poses import read_openpose_json, write_openpose_json
    >>> write_openpose_json(poses, "poses.json")
    >>> read_openpose_json("poses.json").size == poses.size
    True
    ```
    """
    path = check_openpose_output_path(path)
    frames = [_frame_dict(poses, index) for index in range(len(poses))]
    if path.suffix.lower() == ".json":
        document = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        document |= {"canvas_width": poses.size[0], "canvas_height": poses.size[1], "fps": poses.fps, "frames": frames}
        write_json(path, document, indent=None)
        return path
    with staged_folder(path) as staging:
        for index, frame in enumerate(frames):
            (staging / f"frame_{index:012d}_keypoints.json").write_text(json.dumps(frame))
    return path


def check_openpose_output_path(path: str | os.PathLike) -> Path:
    """Checks, before any work starts, that [`write_openpose_json`] will be able to write `path`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the suffix is neither `.json` nor none, or
        [`~zeroshot.outputs.check_output`] refuses the path (missing parent folders are created when writing).
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ""):
        raise ZeroshotError(
            f"Cannot write poses to {str(path)!r}: give a .json file, or a folder path without a suffix for one "
            f"OpenPose file per frame."
        )
    return check_output(path, what="poses output", folder=path.suffix == "")


def _frame_dict(poses: PoseSequence, index: int) -> dict[str, Any]:
    scale = np.asarray(poses.size, dtype=np.float64)

    def flat(points: np.ndarray | None) -> list[float]:
        if points is None:
            return []
        pixels = np.concatenate([points[..., :2] * scale, points[..., 2:]], axis=-1)
        pixels[points[..., 2] <= 0] = 0.0
        return pixels.reshape(-1).tolist()

    hands = poses.hands[index] if poses.hands is not None else (None, None)
    person = {
        "pose_keypoints_2d": flat(poses.body[index]),
        "face_keypoints_2d": flat(poses.face[index] if poses.face is not None else None),
        _HAND_KEYS[0]: flat(hands[0]),
        _HAND_KEYS[1]: flat(hands[1]),
    }
    return {"version": 1.3, "people": [person], "canvas_width": poses.size[0], "canvas_height": poses.size[1]}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ZeroshotError(
            f"{str(path)!r} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); fix the file "
            f"or export the poses again."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ZeroshotError(f"Cannot read {str(path)!r}: {error}") from error


def _read_frames(path: Path) -> tuple[list[_Frame], float | None]:
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=natural_key)
        if not files:
            raise ZeroshotError(f"Folder {str(path)!r} holds no .json pose files.")
        return [_parse_frame(_load_json(file), f"{str(file)!r}", None) for file in files], None
    if not path.is_file():
        raise ZeroshotError(f"Pose file {str(path)!r} does not exist.")
    document = _load_json(path)
    if isinstance(document, dict) and "frames" in document:
        canvas = _canvas(document, f"{str(path)!r}")
        fps = document.get("fps")
        if fps is not None and (not isinstance(fps, (int, float)) or not 0 < fps < math.inf):
            raise ZeroshotError(f"{str(path)!r}: fps must be a positive finite number, got {fps!r}.")
        items = document["frames"]
        if not isinstance(items, list):
            raise ZeroshotError(f"{str(path)!r}: 'frames' must be a list of frames, got {type(items).__name__}.")
        return [_parse_frame(item, f"{str(path)!r}, frame {index}", canvas) for index, item in enumerate(items)], fps
    if isinstance(document, dict):
        return [_parse_frame(document, f"{str(path)!r}", None)], None
    if isinstance(document, list):
        return [_parse_frame(item, f"{str(path)!r}, frame {index}", None) for index, item in enumerate(document)], None
    raise ZeroshotError(
        f"{str(path)!r} is not OpenPose JSON: expected a frame ({{'people': [...]}}), a list of frames, or "
        f"{{'frames': [...]}}, got {type(document).__name__}."
    )


def _canvas(document: dict[str, Any], where: str) -> tuple[int, int] | None:
    width, height = document.get("canvas_width"), document.get("canvas_height")
    if width is None and height is None:
        return None
    if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (width, height)):
        raise ZeroshotError(
            f"{where}: canvas_width and canvas_height must be positive integers, got {width!r} and {height!r}."
        )
    return width, height


def _parse_frame(frame: Any, where: str, canvas: tuple[int, int] | None) -> _Frame:
    if not isinstance(frame, dict) or not isinstance(frame.get("people"), list):
        raise ZeroshotError(f"{where}: expected an OpenPose frame, a dict with a 'people' list.")
    canvas = _canvas(frame, where) or canvas
    people = []
    for number, person in enumerate(frame["people"]):
        if not isinstance(person, dict):
            raise ZeroshotError(f"{where}: person {number} is not a dict of keypoint lists.")
        people.append(_parse_person(person, f"{where}, person {number}"))
    if not people:
        return _Frame(np.zeros((NUM_JOINTS, 3)), None, None, canvas, where, 0)
    body, face, hands = max(people, key=lambda arrays: arrays[0][:, 2].sum())
    return _Frame(body, face, hands, canvas, where, len(people))


def _parse_person(person: dict[str, Any], where: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    body = _points(person.get("pose_keypoints_2d"), "pose_keypoints_2d", where, (NUM_JOINTS, 25))
    if body is None:
        raise ZeroshotError(f"{where}: no pose_keypoints_2d.")
    if len(body) == 25:
        body = body[list(_BODY25_TO_COCO18)]
    face = _points(person.get("face_keypoints_2d"), "face_keypoints_2d", where, (NUM_FACE_POINTS,))
    hand_points = [_points(person.get(key), key, where, (NUM_HAND_POINTS,)) for key in _HAND_KEYS]
    hands = None
    if any(hand is not None for hand in hand_points):
        hands = np.stack([hand if hand is not None else np.zeros((NUM_HAND_POINTS, 3)) for hand in hand_points])
    return body, face, hands


def _points(values: Any, key: str, where: str, counts: tuple[int, ...]) -> np.ndarray | None:
    if values is None or (isinstance(values, list) and not values):
        return None
    expected = " or ".join(f"{3 * count} ({count} points x 3)" for count in counts)
    if not isinstance(values, list) or len(values) not in [3 * count for count in counts]:
        length = len(values) if isinstance(values, list) else type(values).__name__
        raise ZeroshotError(f"{where}: {key} has {length} numbers; expected {expected}.")
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        raise ZeroshotError(f"{where}: {key} holds values that are not numbers.")
    if not all(math.isfinite(value) for value in values):
        raise ZeroshotError(f"{where}: {key} holds NaN or infinite values.")
    points = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    points[points[:, 2] <= 0] = 0.0
    return points


def _normalised(frames: list[_Frame]) -> bool:
    """Whether every present coordinate lies within [0, 1], up to the canvas tolerance (normalised keypoints)."""
    largest = 0.0
    for frame in frames:
        for points in (frame.body, frame.face, frame.hands):
            if points is not None and (points[..., 2] > 0).any():
                largest = max(largest, float(points[points[..., 2] > 0][:, :2].max()))
    return largest <= 1.0 + CANVAS_TOLERANCE


def _check_inside_canvas(frame: _Frame, canvas: tuple[int, int]) -> None:
    names = [
        ("body", frame.body, JOINT_NAMES),
        ("face", frame.face, None),
        ("left hand", None if frame.hands is None else frame.hands[0], None),
        ("right hand", None if frame.hands is None else frame.hands[1], None),
    ]
    for part, points, joint_names in names:
        if points is None:
            continue
        outside = (points[:, 2] > 0) & (
            (points[:, :2] < -CANVAS_TOLERANCE) | (points[:, :2] > 1 + CANVAS_TOLERANCE)
        ).any(axis=1)
        if outside.any():
            index = int(np.flatnonzero(outside)[0])
            name = joint_names[index] if joint_names else f"{part} point {index}"
            x, y = points[index, :2] * np.asarray(canvas)
            raise ZeroshotError(
                f"{frame.where}: the {name} keypoint at ({x:.1f}, {y:.1f}) lies outside the {canvas[0]}x{canvas[1]} "
                f"canvas. Is the canvas size right? Give the width and height of the video the poses were detected on."
            )


def _stack_optional(arrays: list[np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray | None:
    if all(array is None for array in arrays):
        return None
    return np.stack([array if array is not None else np.zeros(shape) for array in arrays])
