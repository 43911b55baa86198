"""Poses from pixels: the source pose of a still image, and pose sequences of videos (gaps filled, optionally
smoothed)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ZeroshotError
from ..video import Video, read_video
from .detectors import DetectedPose, MediapipePoseDetector, PoseDetector, check_rgb_image
from .sequence import PoseSequence
from .skeleton import NUM_FACE_POINTS, NUM_HAND_POINTS, NUM_JOINTS


@dataclass
class PoseExtraction:
    """Poses extracted from a video, and which frames had a person.

    Args:
        poses ([`PoseSequence`]): one pose per frame; frames without a person are filled from their neighbours.
        detected (`np.ndarray`): `[frames]` booleans, True where the detector found a person.
    """

    poses: PoseSequence
    detected: np.ndarray

    @property
    def num_filled(self) -> int:
        """How many frames had no person and were filled from their neighbours."""
        return int((~self.detected).sum())

    def summary(self) -> str:
        """One line for people: frames, detection rate, filled frames, frame rate."""
        total, found = len(self.detected), int(self.detected.sum())
        fps = f" at {self.poses.fps:g} fps" if self.poses.fps else ""
        width, height = self.poses.size
        return (
            f"{total} frames of {width}x{height}{fps}: a person found in {found} ({100 * found / total:.1f}%), "
            f"{self.num_filled} filled from neighbouring frames"
        )


def detect_source_pose(
    image: Image.Image | np.ndarray, *, min_visibility: float = 0.5, name: str | None = None
) -> PoseSequence:
    """The pose of the person in a still image (mediapipe, offline), as a one-frame [`PoseSequence`] on the image's
    canvas.

    Args:
        image (`PIL.Image.Image` or `np.ndarray`): the source image (RGB).
        min_visibility (`float`, *optional*, defaults to 0.5): landmarks less visible than this are missing.
        name (`str`, *optional*): the image's file name, for messages.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no person was found; the message suggests giving the source pose.

    Example:

    ```py
    >>> from zeroshot.poses import detect_source_pose
    >>> from zeroshot.testing import astronaut
    >>> pose = detect_source_pose(astronaut())
    >>> pose.size, pose.visible[0, 1]  # canvas, and the neck was found
    ((512, 512), True)
    ```
    """
    pixels = check_rgb_image(np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image))
    with MediapipePoseDetector(min_visibility=min_visibility) as detector:
        detected = detector(pixels)
    if detected is None:
        where = f" {name!r}" if name else ""
        raise ZeroshotError(
            f"No person found in the source image{where}. Give the source pose yourself (an OpenPose JSON file with "
            f"one frame, on the image's canvas), or use an image in which the person's body is clearly visible."
        )
    height, width = pixels.shape[:2]
    return _sequence([detected], (width, height), None, name)


def extract_poses(
    frames: np.ndarray | Video,
    detector: PoseDetector | None = None,
    *,
    fps: float | None = None,
    smoothing: float = 0.0,
    show_progress: bool = True,
    source: str | None = None,
) -> PoseExtraction:
    """Detects a pose in every frame, fills frames without a person from their neighbours, and optionally smooths.

    Args:
        frames (`np.ndarray` or [`~zeroshot.video.Video`]): `uint8` RGB frames `[frames, height, width, 3]`.
        detector (*optional*, defaults to mediapipe tracking across frames): a detector from [`make_detector`]; one
            given here is not closed.
        fps (`float`, *optional*): frame rate, kept in the poses (taken from a `Video` when not given).
        smoothing (`float`, *optional*, defaults to 0): standard deviation in frames of a Gaussian smoothing of the
            keypoints over time (see [`smooth_poses`]); 0 keeps the detections as they are.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        source (`str`, *optional*): the video's name, for messages.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no frame holds a person.
    """
    if isinstance(frames, Video):
        fps = fps or frames.fps
        frames = frames.frames
    if len(frames) == 0:
        raise ZeroshotError(f"{source or 'The video'} holds no frames.")
    own_detector = detector is None
    detector = MediapipePoseDetector(video=True) if own_detector else detector
    try:
        detections = [detector(frame) for frame in tqdm(frames, desc="poses", unit="frame", disable=not show_progress)]
    finally:
        if own_detector:
            detector.close()
    detected = np.array([detection is not None for detection in detections])
    if not detected.any():
        where = f" of {source!r}" if source else ""
        raise ZeroshotError(
            f"No person found in any of the {len(frames)} frames{where}: give a video in which a person's body is "
            f"clearly visible, or poses as OpenPose JSON."
        )
    height, width = frames.shape[1:3]
    poses = fill_missing_frames(_sequence(detections, (width, height), fps, source), ~detected)
    if smoothing > 0:
        poses = smooth_poses(poses, smoothing)
    return PoseExtraction(poses, detected)


def extract_video_poses(
    path: str | os.PathLike,
    detector: PoseDetector | None = None,
    *,
    smoothing: float = 0.0,
    max_frames: int | None = None,
    show_progress: bool = True,
) -> PoseExtraction:
    """Reads a video and extracts its poses with [`extract_poses`]; the video's frame rate is kept.

    Example:

    ```py
    >>> from zeroshot.poses import extract_video_poses, write_openpose_json
    >>> extraction = extract_video_poses("dance.mp4", smoothing=1.0)
    >>> print(extraction.summary())
    >>> write_openpose_json(extraction.poses, "dance_poses.json")
    ```

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the video cannot be read, holds no frames, or has no person in it.
    """
    video = read_video(path, max_frames=max_frames)
    return extract_poses(video, detector, smoothing=smoothing, show_progress=show_progress, source=str(path))


def fill_missing_frames(poses: PoseSequence, missing: np.ndarray | None = None) -> PoseSequence:
    """Fills frames without a person from the nearest frames with one on either side.

    A keypoint present in both neighbours is interpolated linearly in time, one present in only one of them is copied
    from it, and before the first (after the last) frame with a person the pose of that frame is held.

    Args:
        poses ([`PoseSequence`]): the poses.
        missing (`np.ndarray`, *optional*, defaults to frames with no body keypoint): `[frames]` booleans, the frames
            to fill.
    """
    missing = ~poses.visible.any(axis=1) if missing is None else np.asarray(missing, dtype=bool)
    known = np.flatnonzero(~missing)
    if len(known) == 0:
        raise ValueError("Cannot fill frames: no frame has a person.")
    if not missing.any():
        return poses
    filled = {}
    for name in ("body", "face", "hands"):
        array = getattr(poses, name)
        if array is None:
            continue
        array = array.copy()
        for frame in np.flatnonzero(missing):
            before, after = known[known < frame], known[known > frame]
            if len(before) == 0 or len(after) == 0:
                array[frame] = array[after[0] if len(before) == 0 else before[-1]]
                continue
            start, end = array[before[-1]], array[after[0]]
            weight = (frame - before[-1]) / (after[0] - before[-1])
            both, only_start = (start[..., 2] > 0) & (end[..., 2] > 0), start[..., 2] > 0
            mixed = np.where(only_start[..., None], start, end)
            array[frame] = np.where(both[..., None], (1 - weight) * start + weight * end, mixed)
        filled[name] = array
    return replace(poses, **filled)


def smooth_poses(poses: PoseSequence, sigma: float) -> PoseSequence:
    """Smooths keypoint positions over time with a Gaussian of standard deviation `sigma` frames.

    Each present keypoint becomes the Gaussian-weighted mean of the same keypoint in the frames around it where it is
    present; missing keypoints stay missing and confidences are kept.

    Args:
        poses ([`PoseSequence`]): the poses.
        sigma (`float`): standard deviation in frames (positive).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    radius = math.ceil(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    smoothed = {}
    for name in ("body", "face", "hands"):
        array = getattr(poses, name)
        if array is None:
            continue
        present = (array[..., 2] > 0).astype(np.float64)
        pad = [(radius, radius)] + [(0, 0)] * (array.ndim - 1)
        positions = np.pad(array[..., :2] * present[..., None], pad)
        presence = np.pad(present, pad[:-1])
        total = np.zeros_like(array[..., :2])
        norm = np.zeros_like(present)
        for offset, weight in zip(offsets, weights, strict=True):
            window = slice(radius + offset, radius + offset + len(array))
            total += weight * positions[window]
            norm += weight * presence[window]
        result = array.copy()
        result[..., :2] = np.where(present[..., None] > 0, total / np.maximum(norm, 1e-12)[..., None], array[..., :2])
        smoothed[name] = result
    return replace(poses, **smoothed)


def _sequence(
    detections: list[DetectedPose | None], size: tuple[int, int], fps: float | None, source: str | None
) -> PoseSequence:
    body = np.zeros((len(detections), NUM_JOINTS, 3))
    with_face = any(d is not None and d.face is not None for d in detections)
    with_hands = any(d is not None and d.hands is not None for d in detections)
    face = np.zeros((len(detections), NUM_FACE_POINTS, 3)) if with_face else None
    hands = np.zeros((len(detections), 2, NUM_HAND_POINTS, 3)) if with_hands else None
    for index, detection in enumerate(detections):
        if detection is None:
            continue
        body[index] = detection.body
        if face is not None and detection.face is not None:
            face[index] = detection.face
        if hands is not None and detection.hands is not None:
            hands[index] = detection.hands
    return PoseSequence(body, size=size, fps=fps, face=face, hands=hands, source=source)
