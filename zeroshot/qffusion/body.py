"""Whole-body conditions for Qffusion: OpenPose COCO-18 skeletons (the paper's whole-body driving, Sec. 5.5).

Keypoints come from [`zeroshot.poses.MediapipePoseDetector`] (mediapipe pose, `model_complexity=1`, mapped to
COCO-18, the neck at the shoulders' midpoint, landmarks below visibility 0.5 missing); frames without a person are
filled from their neighbours with [`zeroshot.poses.fill_missing_frames`].

## The body rendering, version `openpose-v1`

[`zeroshot.poses.render_pose`], the OpenPose ControlNet's conventions as controlnet-aux draws them: on a black RGB
canvas of the condition image's size, the 17 limbs as filled ellipses 4 pixels across at 60% of their colour, then the
joints as filled circles of radius 4 in the 18 OpenPose colours; missing keypoints and limbs with a missing end are not
drawn. Widths are in pixels of the output whatever its size, so a checkpoint sees the same drawing at inference as in
training only at the same working size: editing renders at the checkpoint's resolution (shorter side), as training did.
Body only: no face or hand keypoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..errors import ZeroshotError
from ..poses import MediapipePoseDetector, PoseSequence, fill_missing_frames, render_pose
from ..poses.skeleton import NUM_JOINTS

#: Version tag of the body rendering; stored in checkpoints.
BODY_RENDERING = "openpose-v1"


@dataclass
class BodyLandmarks:
    """OpenPose COCO-18 keypoints of a sequence of frames.

    Args:
        body (`np.ndarray`): `[frames, 18, 3]` float32: x, y normalised to the frame, and confidence (0: missing).
    """

    body: np.ndarray

    def __post_init__(self) -> None:
        self.body = np.asarray(self.body, np.float32)
        if self.body.ndim != 3 or self.body.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"body must be [frames, {NUM_JOINTS}, 3], got {self.body.shape}.")

    def __len__(self) -> int:
        return len(self.body)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> BodyLandmarks:
        if isinstance(index, int):
            index = [index]
        return BodyLandmarks(self.body[index])

    def interpolate(self, end: BodyLandmarks, num_frames: int) -> BodyLandmarks:
        """`num_frames` frames going linearly from this one-frame sequence to `end`; a keypoint is present in between
        only where it is present at both ends."""
        if len(self) != 1 or len(end) != 1:
            raise ValueError("interpolate() goes from one frame to one frame.")
        if num_frames < 2:
            raise ValueError(f"num_frames must be at least 2, got {num_frames}.")
        weights = np.linspace(0.0, 1.0, num_frames, dtype=np.float32).reshape(-1, 1, 1)
        body = (1 - weights) * self.body + weights * end.body
        both = (self.body[0, :, 2] > 0) & (end.body[0, :, 2] > 0)
        body[1:-1, ~both] = 0.0
        body[0], body[-1] = self.body[0], end.body[0]
        return BodyLandmarks(body)

    def cropped(self, box: tuple[float, float, float, float], frame_size: tuple[int, int]) -> BodyLandmarks:
        """The keypoints in the coordinates of the crop `(left, top, width, height)` (pixels) of a frame of
        `frame_size` `(width, height)`; keypoints outside the crop become missing."""
        left, top, width, height = box
        body = self.body.copy()
        body[..., 0] = (body[..., 0] * frame_size[0] - left) / width
        body[..., 1] = (body[..., 1] * frame_size[1] - top) / height
        outside = (body[..., :2] < 0).any(axis=-1) | (body[..., :2] > 1).any(axis=-1)
        body[outside] = 0.0
        return BodyLandmarks(body)

    def subject_boxes(self) -> np.ndarray:
        """`[frames, 4]` boxes `(x_min, y_min, x_max, y_max)` of the present keypoints, normalised."""
        present = self.body[..., 2] > 0
        xy = self.body[..., :2]
        low = np.where(present[..., None], xy, np.inf).min(axis=1)
        high = np.where(present[..., None], xy, -np.inf).max(axis=1)
        return np.concatenate([low, high], axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The keypoints as named arrays (for caching)."""
        return {"body": self.body}


def detect_body_landmarks(
    frames: Iterable[np.ndarray], *, video: bool = True, progress: bool = True, what: str = "the video"
) -> BodyLandmarks:
    """OpenPose COCO-18 keypoints of every frame, with mediapipe (offline).

    Args:
        frames (`np.ndarray` or iterable of arrays): `uint8` RGB frames, an array or a stream.
        video (`bool`, *optional*, defaults to `True`): track across consecutive frames.
        progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        what (`str`, *optional*, defaults to `"the video"`): how error messages name the frames.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: there are no frames, or none shows a person.
    """
    detections = []
    size = None
    total = len(frames) if hasattr(frames, "__len__") else None
    with MediapipePoseDetector(video=video) as detector:
        for frame in tqdm(frames, total=total, desc="poses", disable=not progress, leave=False):
            size = (frame.shape[1], frame.shape[0])
            detections.append(detector(frame))
    if not detections:
        raise ZeroshotError(f"{what[0].upper()}{what[1:]} holds no frames.")
    detected = np.array([detection is not None for detection in detections])
    if not detected.any():
        raise ZeroshotError(
            f"No person was found in {what}. The body conditions need a visible person; for portraits use a "
            f"checkpoint trained with --condition face."
        )
    body = np.stack([np.zeros((NUM_JOINTS, 3)) if d is None else d.body for d in detections])
    filled = fill_missing_frames(PoseSequence(body, size=size), ~detected)
    return BodyLandmarks(filled.body)


def render_body_conditions(landmarks: BodyLandmarks, width: int, height: int) -> np.ndarray:
    """Renders every frame of `landmarks` (the `openpose-v1` drawing): `uint8` RGB `[frames, height, width, 3]`."""
    return np.stack([render_pose(body.astype(np.float64), width, height) for body in landmarks.body])
