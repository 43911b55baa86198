"""Evaluating a generated animation against its source image and target poses (what `scripts/evaluate.py` runs)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ZeroshotError
from .face.evaluation import FACE_METRICS, face_scores
from .metrics import LPIPS, ClipImageEmbedder, clip_scores, pose_adherence, psnr, ssim, warping_error
from .poses import PoseSequence, extract_poses, make_detector
from .video import fit_image

#: Metrics computed with no pretrained weights; every evaluation reports them.
OFFLINE_METRICS = (
    "frame0_psnr",
    "frame0_ssim",
    "warping_error",
    "pose_pck",
    "pose_keypoint_error",
    "pose_detected_fraction",
    *FACE_METRICS,
)


def detect_frame_poses(frames: np.ndarray) -> PoseSequence:
    """Detects the pose in every frame independently (mediapipe, no tracking between frames): a frame where no person
    is found keeps confidence 0 everywhere, rather than being filled from its neighbours."""
    height, width = frames.shape[1:3]
    with make_detector("mediapipe", video=False) as detector:
        try:
            extraction = extract_poses(frames, detector, show_progress=False)
        except ZeroshotError:  # nobody in any frame: every joint is missed
            return PoseSequence(np.zeros((len(frames), 18, 3)), size=(width, height))
    body = np.where(extraction.detected[:, None, None], extraction.poses.body, 0.0)
    return PoseSequence(body, size=(width, height))


def evaluate_animation(
    frames: np.ndarray,
    source: Image.Image,
    target_poses: PoseSequence,
    *,
    lpips: LPIPS | None = None,
    clip: ClipImageEmbedder | None = None,
) -> dict[str, float]:
    """Scores an animation.

    Args:
        frames (`np.ndarray`): the animation, `uint8` RGB `[frames, height, width, 3]`; frame 0 shows the source.
        source (`PIL.Image.Image`): the source image; it is fitted (scaled and centre-cropped) to the frame size as
            the pipeline does.
        target_poses ([`~zeroshot.poses.PoseSequence`]): the pose of every frame, as generation used them (after
            alignment and transition: the `.poses.json` that `scripts/animate.py` writes beside its output).
        lpips ([`~zeroshot.metrics.LPIPS`], *optional*): adds `lpips` (mean over frames 1.., against the source).
        clip ([`~zeroshot.metrics.ClipImageEmbedder`], *optional*): adds `clip_i` and `frame_consistency`.

    Returns:
        `dict[str, float]`: `OFFLINE_METRICS` (the face figures from [`~zeroshot.face.evaluation.face_scores`]), plus
        the metrics of the weights given.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the poses do not match the frames in number or aspect ratio.
    """
    if len(target_poses) != len(frames):
        raise ZeroshotError(
            f"The animation has {len(frames)} frames but the target poses {len(target_poses)}: pass the poses the "
            f"animation was generated with (the .poses.json file scripts/animate.py writes beside its output)."
        )
    height, width = frames.shape[1:3]
    pose_width, pose_height = target_poses.size
    if abs(pose_width / pose_height - width / height) > 0.01:
        raise ZeroshotError(
            f"The target poses are on a {pose_width}x{pose_height} canvas but the frames are {width}x{height}: pass "
            f"the poses the animation was generated with."
        )
    reference = np.asarray(fit_image(source.convert("RGB"), width, height))
    detected = detect_frame_poses(frames)
    target_pixels = np.concatenate([target_poses.body[..., :2] * (width, height), target_poses.body[..., 2:]], -1)
    adherence = pose_adherence(np.concatenate([detected.pixels(), detected.body[..., 2:]], -1), target_pixels)
    results = {
        "frame0_psnr": psnr(frames[0], reference),
        "frame0_ssim": ssim(frames[0], reference),
        "warping_error": warping_error(frames) if len(frames) > 1 else 0.0,
        "pose_pck": adherence["pck"],
        "pose_keypoint_error": adherence["keypoint_error"],
        "pose_detected_fraction": adherence["detected_fraction"],
        **face_scores(frames, reference, target_poses, detected),
    }
    if lpips is not None:
        later = frames[1:] if len(frames) > 1 else frames
        results["lpips"] = float(lpips(later, reference).mean())
    if clip is not None:
        results.update(clip_scores(clip, frames, reference))
    return results
