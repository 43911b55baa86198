"""Face boxes: one square box per frame around the face, from that frame's pose, smoothed over time.

A frame's box comes from its face keypoints (OpenPose face-70) when it has at least `MIN_FACE_POINTS` of them;
otherwise from the head joints of the body (nose, eyes, ears), its size scaled by the distance from the head to the
neck. Boxes are smoothed over time within each run of frames that show a face, so crops do not jitter; frames
without a visible face get no box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ZeroshotError
from ..poses import PoseSequence
from ..poses.skeleton import JOINT, NECK

#: The body joints that locate the head when there are no face keypoints.
HEAD_JOINTS: tuple[int, ...] = tuple(
    JOINT[name] for name in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
)  # fmt: skip
#: Face keypoints a frame needs for its box to come from them.
MIN_FACE_POINTS = 5
#: Box side over the larger side of the face keypoints' bounding box (brows to chin, jaw to jaw): room for the
#: forehead, hair and a margin the feathered paste-back fades out in.
FACE_POINTS_MARGIN = 1.8
#: Box side over the distance from the head joints' mean (about eye level) to the neck (shoulder midpoint).
NECK_SCALE = 1.4
#: Box side over the largest distance between two head joints, when the neck is not visible.
SPREAD_SCALE = 2.4


@dataclass
class FaceBoxes:
    """One square face box per frame, in pixels of the poses' canvas.

    Args:
        centers (`np.ndarray`): `[frames, 2]` box centres `(x, y)` in pixels (continuous: pixel `i` covers
            `[i, i + 1)`); meaningless where `visible` is False.
        sides (`np.ndarray`): `[frames]` box sides in pixels; 0 where `visible` is False.
        visible (`np.ndarray`): `[frames]` booleans, True where the frame shows a face.
        from_face_points (`np.ndarray`): `[frames]` booleans, True where the box came from face keypoints (else
            from the head joints).
        canvas (`tuple[int, int]`): `(width, height)` of the canvas.
    """

    centers: np.ndarray
    sides: np.ndarray
    visible: np.ndarray
    from_face_points: np.ndarray
    canvas: tuple[int, int]

    def __len__(self) -> int:
        return len(self.sides)

    def corners(self, frame: int) -> tuple[float, float, float, float]:
        """`(left, top, right, bottom)` of frame `frame`'s box in pixels."""
        (x, y), half = self.centers[frame], self.sides[frame] / 2
        return float(x - half), float(y - half), float(x + half), float(y + half)

    def to_list(self) -> list[list[float] | None]:
        """Every frame's `[left, top, right, bottom]` (rounded to 0.01 pixel), or `None` without a face; for
        `report.json`."""
        return [
            [round(value, 2) for value in self.corners(frame)] if self.visible[frame] else None
            for frame in range(len(self))
        ]


def face_boxes(poses: PoseSequence, smoothing: float = 1.5) -> FaceBoxes:
    """The face box of every frame of `poses`, smoothed over time.

    Args:
        poses ([`~zeroshot.poses.PoseSequence`]): the poses (with face keypoints where available).
        smoothing (`float`, *optional*, defaults to 1.5): standard deviation in frames of the Gaussian applied to
            centres and sides within each run of consecutive frames with a face; 0 keeps the raw boxes.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be 0 or more frames, got {smoothing}.")
    size = np.asarray(poses.size, dtype=np.float64)
    body = poses.pixels()
    frames = len(poses)
    centers, sides = np.zeros((frames, 2)), np.zeros(frames)
    visible, from_face = np.zeros(frames, bool), np.zeros(frames, bool)
    for frame in range(frames):
        face = None if poses.face is None else poses.face[frame]
        if face is not None and (face[:, 2] > 0).sum() >= MIN_FACE_POINTS:
            points = face[face[:, 2] > 0, :2] * size
            low, high = points.min(0), points.max(0)
            centers[frame], sides[frame] = (low + high) / 2, FACE_POINTS_MARGIN * (high - low).max()
            visible[frame] = from_face[frame] = True
            continue
        shown = [joint for joint in HEAD_JOINTS if poses.visible[frame, joint]]
        if not shown:
            continue
        head = body[frame, shown]
        center = head.mean(0)
        if poses.visible[frame, NECK]:
            side = NECK_SCALE * np.linalg.norm(body[frame, NECK] - center)
        elif len(shown) >= 2:
            side = SPREAD_SCALE * np.linalg.norm(head[:, None] - head[None], axis=-1).max()
        else:
            continue
        if side > 0:
            centers[frame], sides[frame], visible[frame] = center, side, True
    if smoothing > 0:
        for start, stop in _runs(visible):
            weights = _gaussian_weights(stop - start, smoothing)
            centers[start:stop] = weights @ centers[start:stop]
            sides[start:stop] = weights @ sides[start:stop]
    return FaceBoxes(centers, sides, visible, from_face, poses.size)


def check_source_face(source_pose: PoseSequence, min_face_size: int, what: str = "the source image") -> FaceBoxes:
    """The face box of a one-frame source pose, or a [`~zeroshot.errors.ZeroshotError`] saying why its face cannot
    be refined: no face visible, or a face smaller than `min_face_size` pixels across on the canvas."""
    boxes = face_boxes(source_pose, smoothing=0)
    width, height = source_pose.size
    if not boxes.visible[0]:
        raise ZeroshotError(
            f"Face refinement needs a face in {what}, and its pose shows none (no face keypoints, and not the nose, "
            "eyes or ears with the neck or each other): use a photo where the face is visible, or leave out "
            "--refine-face."
        )
    across = face_extent(boxes, 0)
    if across < min_face_size:
        raise ZeroshotError(
            f"The face in {what} is only {across:.0f} pixels across at the output size {width}x{height}; face "
            f"refinement needs at least {min_face_size}: use a larger --size or a closer photo, or leave out "
            "--refine-face."
        )
    return boxes


def face_extent(boxes: FaceBoxes, frame: int) -> float:
    """About how many pixels across the face of frame `frame` is: its box side without the box's margin."""
    return float(boxes.sides[frame] / FACE_POINTS_MARGIN)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """`(start, stop)` of every run of consecutive True values."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _gaussian_weights(length: int, sigma: float) -> np.ndarray:
    """`[length, length]` rows of Gaussian weights over the run, each row normalised to sum 1 (so the ends of a run
    are averages of the frames it has, not pulled towards the missing ones)."""
    offsets = np.arange(length)[:, None] - np.arange(length)[None]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum(1, keepdims=True)
