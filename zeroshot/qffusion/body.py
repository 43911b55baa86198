"""Whole-body conditions for Qffusion: OpenPose COCO-18 skeletons (the paper's whole-body driving, Sec. 5.5).

The keypoints are a [`zeroshot.poses.PoseSequence`] from [`zeroshot.poses.extract_poses`] with
[`zeroshot.poses.MediapipePoseDetector`] (mediapipe pose, `model_complexity=1`, mapped to COCO-18, the neck at the
shoulders' midpoint, landmarks below visibility 0.5 missing); frames without a person are filled from their neighbours
([`zeroshot.poses.fill_missing_frames`]).

## The body rendering, version `openpose-v1`

[`zeroshot.poses.render_pose`], the OpenPose ControlNet's conventions as controlnet-aux draws them: on a black RGB
canvas of the condition image's size, the 17 limbs as filled ellipses 4 pixels across at 60% of their colour, then the
joints as filled circles of radius 4 in the 18 OpenPose colours; missing keypoints and limbs with a missing end are not
drawn. Widths are in pixels of the output whatever its size, so a checkpoint sees the same drawing at inference as in
training only at the same working size: editing renders at the checkpoint's resolution (shorter side), as training did.
Body only: no face or hand keypoints.
"""

from __future__ import annotations

import numpy as np

from ..errors import ZeroshotError
from ..poses import MediapipePoseDetector, PoseSequence, extract_poses

#: Version tag of the body rendering; stored in checkpoints.
BODY_RENDERING = "openpose-v1"


def detect_body_landmarks(
    frames: np.ndarray, *, video: bool = True, show_progress: bool = True, what: str = "the video"
) -> PoseSequence:
    """OpenPose COCO-18 keypoints of every frame, with mediapipe (offline), on the frames' canvas.

    Args:
        frames (`np.ndarray`): `uint8` RGB frames `[frames, height, width, 3]`.
        video (`bool`, *optional*, defaults to `True`): track across consecutive frames.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        what (`str`, *optional*, defaults to `"the video"`): how error messages name the frames.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: there are no frames, or none shows a person.
    """
    if len(frames) == 0:
        raise ZeroshotError(f"{what[0].upper()}{what[1:]} holds no frames.")
    with MediapipePoseDetector(video=video) as detector:
        try:
            return extract_poses(frames, detector, show_progress=show_progress).poses
        except ZeroshotError as error:  # its advice (OpenPose JSON) does not apply here
            raise ZeroshotError(
                f"No person was found in {what}. The body conditions need a visible person; for portraits use a "
                f"checkpoint trained with --condition face."
            ) from error


def render_body_conditions(poses: PoseSequence, width: int, height: int) -> np.ndarray:
    """Renders every frame of `poses` (the `openpose-v1` drawing): `uint8` RGB `[frames, height, width, 3]`."""
    return poses.render(width, height, face=False, hands=False)


def interpolate_poses(start: PoseSequence, end: PoseSequence, num_frames: int) -> PoseSequence:
    """`num_frames` poses going linearly from the one-frame `start` to the one-frame `end` (both included); a keypoint
    is present in between only where it is present at both ends (the jump-cut smoothing of body conditions)."""
    if len(start) != 1 or len(end) != 1 or start.size != end.size:
        raise ValueError("interpolate_poses() goes from one pose to one pose on the same canvas.")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2, got {num_frames}.")
    weights = np.linspace(0.0, 1.0, num_frames).reshape(-1, 1, 1)
    body = (1 - weights) * start.body + weights * end.body
    both = (start.body[0, :, 2] > 0) & (end.body[0, :, 2] > 0)
    body[1:-1, ~both] = 0.0
    body[0], body[-1] = start.body[0], end.body[0]
    return PoseSequence(body, size=start.size)


def pose_boxes(poses: PoseSequence) -> np.ndarray:
    """`[frames, 4]` boxes `(x_min, y_min, x_max, y_max)` of each frame's present keypoints, normalised."""
    present = poses.visible
    xy = poses.body[..., :2]
    low = np.where(present[..., None], xy, np.inf).min(axis=1)
    high = np.where(present[..., None], xy, -np.inf).max(axis=1)
    return np.concatenate([low, high], axis=1)
