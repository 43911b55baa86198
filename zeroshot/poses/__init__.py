"""Poses: OpenPose COCO-18 sequences (with face-70 and hands), reading and writing them, extracting them offline and
repairing what the detector got wrong (one person, mirrors, implausible joints, gaps, One-Euro smoothing), rendering
them for the OpenPose ControlNet, previews over pictures, and aligning them to a source pose with transition frames
(PATA).

Example:

```py
>>> from zeroshot.poses import detect_source_pose, load_poses, pose_alignment_transition
>>> from zeroshot.video import load_image
>>> image = load_image("character.png")
>>> source = detect_source_pose(image)  # mediapipe, offline
>>> target = load_poses("dance.mp4")  # OpenPose JSON, a folder, pose images, or a video (extracted, repaired)
>>> result = pose_alignment_transition(source, target)
>>> conditions = result.poses.render(*image.size)  # uint8 [frames, height, width, 3], frame 0 is the source pose
```
"""

from .detectors import (
    DETECTORS,
    DetectedPose,
    DwposeDetector,
    MediapipePoseDetector,
    OpenposeDetector,
    PoseDetector,
    make_detector,
    quiet_native_stderr,
)
from .extract import (
    PoseExtraction,
    detect_source_pose,
    extract_poses,
    extract_video_poses,
    fill_missing_frames,
)
from .files import load_poses, load_source_pose, looks_rendered, read_pose_images, write_pose_images
from .openpose_json import check_openpose_output_path, read_openpose_json, write_openpose_json
from .pata import (
    Alignment,
    PataResult,
    apply_alignment,
    apply_head,
    fit_alignment,
    fit_head,
    largest_step,
    pose_alignment_transition,
    transition_length,
    transition_poses,
)
from .preview import check_preview_path, contact_sheet, overlay_poses, write_preview
from .render import render_pose
from .repair import RepairedPoses, RepairReport, RepairSettings, repair_poses
from .sequence import Poses, PoseSequence, RenderedPoses, require_keypoints

__all__ = [
    "DETECTORS",
    "Alignment",
    "DetectedPose",
    "DwposeDetector",
    "MediapipePoseDetector",
    "OpenposeDetector",
    "PataResult",
    "PoseDetector",
    "PoseExtraction",
    "PoseSequence",
    "Poses",
    "RenderedPoses",
    "RepairReport",
    "RepairSettings",
    "RepairedPoses",
    "apply_alignment",
    "apply_head",
    "check_openpose_output_path",
    "check_preview_path",
    "contact_sheet",
    "detect_source_pose",
    "extract_poses",
    "extract_video_poses",
    "fill_missing_frames",
    "fit_alignment",
    "fit_head",
    "largest_step",
    "load_poses",
    "load_source_pose",
    "looks_rendered",
    "make_detector",
    "overlay_poses",
    "pose_alignment_transition",
    "quiet_native_stderr",
    "read_openpose_json",
    "read_pose_images",
    "render_pose",
    "repair_poses",
    "require_keypoints",
    "transition_length",
    "transition_poses",
    "write_openpose_json",
    "write_pose_images",
    "write_preview",
]
