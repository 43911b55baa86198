"""Face-region figures of an animation (what `scripts/evaluate.py` adds): how well each frame's face keeps the
source's, and how well it follows its target head pose."""

from __future__ import annotations

import numpy as np

from ..metrics import psnr, ssim
from ..poses import PoseSequence
from .boxes import HEAD_JOINTS, face_boxes
from .crops import crop_image

#: The face figures, as [`face_scores`] names them.
FACE_METRICS = ("face_psnr", "face_ssim", "face_frames_compared", "face_keypoint_error")
#: Side in pixels the face crops are compared at.
COMPARISON_SIZE = 128
#: A frame's face is compared with the source's when every head joint both show sits within this fraction of the box
#: side of where the source's sits in its box (the head is turned and tilted alike, so pixels can be compared).
MAX_HEAD_POSE_DIFFERENCE = 0.05
#: Head joints a frame must share with the source for its face to be compared.
MIN_SHARED_HEAD_JOINTS = 3


def face_scores(
    frames: np.ndarray, source: np.ndarray, target_poses: PoseSequence, detected: PoseSequence
) -> dict[str, float]:
    """Face PSNR and SSIM against the source's face, and the head keypoint error by re-detection.

    Args:
        frames (`np.ndarray`): `uint8` `[frames, H, W, 3]`, frame 0 the source's reconstruction (not scored).
        source (`np.ndarray`): `uint8` `[H, W, 3]` the source image on the frames' canvas.
        target_poses ([`~zeroshot.poses.PoseSequence`]): the pose of every frame, frame 0 the source's.
        detected ([`~zeroshot.poses.PoseSequence`]): the poses re-detected in the frames, on the same canvas.

    Returns:
        `dict[str, float]`: `face_psnr` and `face_ssim` (means over the frames whose head pose matches the source's,
        see `MAX_HEAD_POSE_DIFFERENCE`, their face crops against the source's; NaN when none does),
        `face_frames_compared` (how many), and `face_keypoint_error` (mean distance of the re-detected nose, eyes and
        ears from the target's, in face box sides, over frames 1.. ; NaN when none is found).
    """
    height, width = frames.shape[1:3]
    targets = PoseSequence(target_poses.body, size=(width, height), face=target_poses.face)
    boxes = face_boxes(targets, smoothing=0)  # each frame's own box: a comparison, not a video to steady
    head = HEAD_JOINTS
    target_points, detected_points = targets.pixels()[:, head], detected.pixels()[:, head]
    target_shown, detected_shown = targets.visible[:, head], detected.visible[:, head]
    psnrs, ssims, errors = [], [], []
    if boxes.visible[0]:
        source_crop = crop_image(source, boxes, 0, COMPARISON_SIZE)
        source_layout = (target_points[0] - boxes.centers[0]) / boxes.sides[0]
        for frame in range(1, len(frames)):
            if not boxes.visible[frame]:
                continue
            shared = target_shown[0] & target_shown[frame]
            layout = (target_points[frame] - boxes.centers[frame]) / boxes.sides[frame]
            difference = np.linalg.norm(layout - source_layout, axis=-1)[shared]
            if shared.sum() >= MIN_SHARED_HEAD_JOINTS and (difference <= MAX_HEAD_POSE_DIFFERENCE).all():
                crop = crop_image(frames[frame], boxes, frame, COMPARISON_SIZE)
                psnrs.append(psnr(crop, source_crop))
                ssims.append(ssim(crop, source_crop))
    for frame in range(1, len(frames)):
        both = target_shown[frame] & detected_shown[frame]
        if boxes.visible[frame] and both.any():
            distance = np.linalg.norm(detected_points[frame] - target_points[frame], axis=-1)[both]
            errors.extend((distance / boxes.sides[frame]).tolist())
    nan = float("nan")
    return {
        "face_psnr": float(np.mean(psnrs)) if psnrs else nan,
        "face_ssim": float(np.mean(ssims)) if ssims else nan,
        "face_frames_compared": float(len(psnrs)),
        "face_keypoint_error": float(np.mean(errors)) if errors else nan,
    }
