"""Poses from pixels: the source pose of a still image, and pose sequences of videos (repaired and smoothed, or with
frames without a person filled from their neighbours)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ZeroshotError
from ..video import Video, read_video
from .detectors import DetectedPose, MediapipePoseDetector, PoseDetector, check_rgb_image
from .repair import RepairReport, RepairSettings, repair_poses
from .sequence import PoseSequence
from .skeleton import NUM_FACE_POINTS, NUM_HAND_POINTS, NUM_JOINTS

logger = logging.getLogger(__name__)


@dataclass
class PoseExtraction:
    """Poses extracted from a video, which frames had a person, and what repair did.

    Args:
        poses ([`PoseSequence`]): one pose per frame: repaired (see [`repair_poses`]), or, without repair, the
            detections with frames without a person filled from their neighbours.
        detected (`np.ndarray`): `[frames]` booleans, True where the detector found a person.
        raw ([`PoseSequence`]): the detections as they came (frames without a person empty), for debugging.
        facing (`np.ndarray`): `[frames]` facing from the detector's depth (1 towards the camera, -1 away; NaN
            unknown).
        marks (`np.ndarray`, *optional*): `[frames, 18]` what repair did to each joint (see [`RepairedPoses`]).
        repair ([`RepairReport`], *optional*): repair's counts; None without repair.
    """

    poses: PoseSequence
    detected: np.ndarray
    raw: PoseSequence
    facing: np.ndarray
    marks: np.ndarray | None = None
    repair: RepairReport | None = None

    @property
    def num_filled(self) -> int:
        """How many frames had no person (without repair, they were filled from their neighbours)."""
        return int((~self.detected).sum())

    def summary(self) -> str:
        """One line for people: frames, detection rate, and what repair did (or how many frames were filled)."""
        total, found = len(self.detected), int(self.detected.sum())
        fps = f" at {self.poses.fps:g} fps" if self.poses.fps else ""
        width, height = self.poses.size
        done = self.repair.summary() if self.repair else f"{self.num_filled} filled from neighbouring frames"
        return (
            f"{total} frame{'s' * (total != 1)} of {width}x{height}{fps}: a person found in {found} "
            f"({100 * found / total:.1f}%), {done}"
        )

    def report(self) -> dict[str, object]:
        """The extraction report (`poses.report.json`): frames, frames with a person, and repair's counts."""
        report: dict[str, object] = {
            "frames": len(self.detected),
            "frames_detected": int(self.detected.sum()),
            "fps": self.poses.fps,
            "width": self.poses.size[0],
            "height": self.poses.size[1],
            "source": self.poses.source,
            "repaired": self.repair is not None,
        }
        if self.repair is not None:
            report |= dataclasses.asdict(self.repair)
        else:
            report["frames_filled"] = self.num_filled
        return report


def detect_source_pose(
    image: Image.Image | np.ndarray,
    *,
    min_visibility: float = 0.5,
    face: bool = False,
    hands: bool = False,
    name: str | None = None,
) -> PoseSequence:
    """The pose of the person in a still image (mediapipe, offline), as a one-frame [`PoseSequence`] on the image's
    canvas.

    Args:
        image (`PIL.Image.Image` or `np.ndarray`): the source image (RGB).
        min_visibility (`float`, *optional*, defaults to 0.5): landmarks less visible than this are missing.
        face (`bool`, *optional*, defaults to `False`): also find the 70 face points (a warning says when none is).
        hands (`bool`, *optional*, defaults to `False`): also find the hands (a warning says when none is).
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
    with MediapipePoseDetector(min_visibility=min_visibility, face=face, hands=hands) as detector:
        detected = detector(pixels)
    if detected is None:
        where = f" {name!r}" if name else ""
        raise ZeroshotError(
            f"No person found in the source image{where}. Give the source pose yourself (an OpenPose JSON file with "
            f"one frame, on the image's canvas), or use an image in which the person's body is clearly visible."
        )
    height, width = pixels.shape[:2]
    pose = _sequence([detected], (width, height), None, name)
    warn_missing_parts(pose, f"the source image {name!r}" if name else "the source image")
    return pose


def extract_poses(
    frames: np.ndarray | Video,
    detector: PoseDetector | None = None,
    *,
    fps: float | None = None,
    repair: RepairSettings | None = None,
    show_progress: bool = True,
    source: str | None = None,
) -> PoseExtraction:
    """Detects a pose in every frame, then repairs the sequence ([`repair_poses`]: one person, mirrors undone,
    implausible joints rejected, short gaps filled, smoothed) or, without repair, fills frames without a person from
    their neighbours.

    Args:
        frames (`np.ndarray` or [`~zeroshot.video.Video`]): `uint8` RGB frames `[frames, height, width, 3]`.
        detector (*optional*, defaults to mediapipe tracking across frames): a detector from [`make_detector`]; one
            given here is not closed.
        fps (`float`, *optional*): frame rate, kept in the poses (taken from a `Video` when not given).
        repair ([`RepairSettings`], *optional*): how to repair the sequence; None (the default) keeps the detections
            as they are, frames without a person filled.
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
    raw = _sequence(detections, (width, height), fps, source)
    warn_missing_parts(raw, repr(source) if source else "the video")
    facing = np.array([np.nan if d is None or d.facing is None else d.facing for d in detections])
    if repair is None:
        return PoseExtraction(fill_missing_frames(raw, ~detected), detected, raw, facing)
    repaired = repair_poses(raw, repair, facing=facing)
    return PoseExtraction(repaired.poses, detected, raw, facing, repaired.marks, repaired.report)


def extract_video_poses(
    path: str | os.PathLike,
    detector: PoseDetector | None = None,
    *,
    repair: RepairSettings | None = None,
    max_frames: int | None = None,
    show_progress: bool = True,
) -> PoseExtraction:
    """Reads a video and extracts its poses with [`extract_poses`]; the video's frame rate is kept.

    Example:

    ```py
    >>> from zeroshot.poses import extract_video_poses, write_openpose_json
    >>> extraction = extract_video_poses("dance.mp4", repair=RepairSettings())
    >>> print(extraction.summary())
    >>> write_openpose_json(extraction.poses, "dance_poses.json")
    ```

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the video cannot be read, holds no frames, or has no person in it.
    """
    video = read_video(path, max_frames=max_frames)
    return extract_poses(video, detector, repair=repair, show_progress=show_progress, source=str(path))


def warn_missing_parts(poses: PoseSequence, where: str) -> None:
    """Logs one warning line for a face or hands that were asked for (present as arrays) but found in no frame."""
    for name, points in (("face", poses.face), ("hands", poses.hands)):
        if points is not None and not (points[..., 2] > 0).any():
            logger.warning(
                "The %s %s asked for but not visible in %s: the poses carry none (is the person facing away, or "
                "too small in the picture?).",
                name,
                "was" if name == "face" else "were",
                where,
            )


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
