"""Condition images for Qffusion: what the UNet is told about each frame's motion.

Two kinds, named in a checkpoint's [`~zeroshot.qffusion.checkpoint.QffusionConfig`] so that editing renders exactly
what training rendered:

- `"face"` (portraits, the paper's setting): MediaPipe's 478-point face mesh (`refine_landmarks=True`, irises
  included) plus shoulder lines from MediaPipe pose (`model_complexity=1`, the model bundled with mediapipe 0.10.21).
- `"body"`: OpenPose COCO-18 skeletons drawn the way the OpenPose ControlNet was trained
  ([`~zeroshot.qffusion.body`]).

## The face rendering, version `face-v1`

Drawn with OpenCV on a black RGB canvas of the condition image's size (width `W`, height `H`); landmark coordinates
are normalised to the frame (`x * W`, `y * H` pixels). Line thickness `t = max(1, round(min(W, H) / 128))` pixels,
anti-aliased (`cv2.LINE_AA`). In drawing order (later on top), colours as RGB:

| what | landmarks | colour | width |
| --- | --- | --- | --- |
| shoulder line | pose 11 - 12 | (255, 255, 0) | 2t |
| upper arms, where both ends have visibility >= 0.5 | pose 11 - 13, 12 - 14 | (0, 255, 255) | 2t |
| neck | midpoint of pose 11, 12 - face 152 (chin) | (255, 0, 255) | 2t |
| face mesh tessellation | `FACEMESH_TESSELATION` (2556 edges) | (64, 64, 64) | 1 |
| face oval | `FACEMESH_FACE_OVAL` | (255, 255, 255) | t |
| subject's left eyebrow / right eyebrow | `FACEMESH_LEFT_EYEBROW` / `_RIGHT_` | (255, 128, 0) / (0, 128, 255) | t |
| subject's left eye / right eye | `FACEMESH_LEFT_EYE` / `_RIGHT_` | (0, 255, 0) / (255, 0, 128) | t |
| subject's left iris / right iris | `FACEMESH_LEFT_IRIS` / `_RIGHT_` | (0, 255, 128) / (160, 0, 255) | t |
| nose | `FACEMESH_NOSE` | (255, 220, 0) | t |
| lips | `FACEMESH_LIPS` | (255, 0, 0) | t |

Edge lists are mediapipe 0.10.21's `face_mesh_connections`, drawn in sorted order. Pose landmarks with visibility
below 0.5 are not drawn (the shoulder line and neck need both shoulders). A frame in which no face is found gets its
landmarks interpolated linearly in time from the nearest frames that have one (held constant before the first and
after the last); the same for the pose. Landmarks keep MediaPipe's depth `z` so that the jump-cut mode can interpolate
3D points, as the paper does; it is not drawn.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..errors import ZeroshotError
from ..poses import PoseSequence, quiet_native_stderr
from ..poses.detectors import check_rgb_image, import_mediapipe_solution
from ..video import Fit
from .body import BODY_RENDERING, detect_body_landmarks, interpolate_poses, pose_boxes, render_body_conditions

logger = logging.getLogger(__name__)

#: Version tag of the face rendering below; stored in checkpoints.
FACE_RENDERING = "face-v1"
#: Number of face-mesh landmarks with `refine_landmarks=True` (468 mesh points and 2 x 5 iris points).
FACE_LANDMARKS = 478
#: MediaPipe pose landmarks kept for the shoulder lines: left shoulder, right shoulder, left elbow, right elbow.
POSE_LANDMARKS = (11, 12, 13, 14)
#: Face-mesh landmark at the chin, where the neck line ends.
CHIN = 152
#: Pose landmarks below this visibility are not drawn.
MIN_VISIBILITY = 0.5

_SHOULDER_COLOUR = (255, 255, 0)
_ARM_COLOUR = (0, 255, 255)
_NECK_COLOUR = (255, 0, 255)
_TESSELATION_COLOUR = (64, 64, 64)


@functools.cache
def _face_parts() -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    from mediapipe.python.solutions import face_mesh_connections as mesh

    parts = [
        (mesh.FACEMESH_FACE_OVAL, (255, 255, 255)),
        (mesh.FACEMESH_LEFT_EYEBROW, (255, 128, 0)),
        (mesh.FACEMESH_RIGHT_EYEBROW, (0, 128, 255)),
        (mesh.FACEMESH_LEFT_EYE, (0, 255, 0)),
        (mesh.FACEMESH_RIGHT_EYE, (255, 0, 128)),
        (mesh.FACEMESH_LEFT_IRIS, (0, 255, 128)),
        (mesh.FACEMESH_RIGHT_IRIS, (160, 0, 255)),
        (mesh.FACEMESH_NOSE, (255, 220, 0)),
        (mesh.FACEMESH_LIPS, (255, 0, 0)),
    ]
    return [(np.array(sorted(edges), int), colour) for edges, colour in parts]


@functools.cache
def _tesselation() -> np.ndarray:
    from mediapipe.python.solutions import face_mesh_connections as mesh

    return np.array(sorted(mesh.FACEMESH_TESSELATION), int)


@dataclass
class PortraitLandmarks:
    """Face mesh and shoulder landmarks of a sequence of frames.

    Args:
        face (`np.ndarray`): `[frames, 478, 3]` float32: x and y normalised to the frame's width and height, and
            MediaPipe's relative depth z (on the scale of x).
        pose (`np.ndarray`): `[frames, 4, 3]` float32: x, y (normalised) and visibility of the pose landmarks
            `POSE_LANDMARKS` (shoulders and elbows).
    """

    face: np.ndarray
    pose: np.ndarray

    def __post_init__(self) -> None:
        if self.face.ndim != 3 or self.face.shape[1:] != (FACE_LANDMARKS, 3):
            raise ValueError(f"face must be [frames, {FACE_LANDMARKS}, 3], got {self.face.shape}.")
        if self.pose.shape != (len(self.face), len(POSE_LANDMARKS), 3):
            raise ValueError(f"pose must be [{len(self.face)}, {len(POSE_LANDMARKS)}, 3], got {self.pose.shape}.")

    def __len__(self) -> int:
        return len(self.face)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> PortraitLandmarks:
        if isinstance(index, int):
            index = [index]
        return PortraitLandmarks(self.face[index], self.pose[index])

    def interpolate(self, end: PortraitLandmarks, num_frames: int) -> PortraitLandmarks:
        """`num_frames` frames going linearly from this one-frame sequence (frame 0) to `end` (the last frame),
        all 3D points interpolated (the paper's jump-cut smoothing)."""
        if len(self) != 1 or len(end) != 1:
            raise ValueError("interpolate() goes from one frame to one frame.")
        if num_frames < 2:
            raise ValueError(f"num_frames must be at least 2, got {num_frames}.")
        weights = np.linspace(0.0, 1.0, num_frames, dtype=np.float32).reshape(-1, 1, 1)
        return PortraitLandmarks(
            (1 - weights) * self.face + weights * end.face, (1 - weights) * self.pose + weights * end.pose
        )

    def fitted(self, fit: Fit) -> PortraitLandmarks:
        """The landmarks moved as [`~zeroshot.video.fit_image`] (or a crop described by a [`~zeroshot.video.Fit`])
        moves the frame they were found in: coordinates normalised to the new canvas `fit.size`, depth scaled with
        x. Points the crop cuts off keep their position outside [0, 1] (the drawing clips them)."""
        width, height = fit.source_size
        scale = np.array([width, height], np.float64) * fit.scale
        offset = np.array([fit.left, fit.top], np.float64)
        size = np.asarray(fit.size, np.float64)
        face = self.face.copy()
        face[..., :2] = (self.face[..., :2] * scale - offset) / size
        face[..., 2] = self.face[..., 2] * scale[0] / size[0]
        pose = self.pose.copy()
        pose[..., :2] = (self.pose[..., :2] * scale - offset) / size
        return PortraitLandmarks(face, pose)

    def subject_boxes(self) -> np.ndarray:
        """`[frames, 4]` bounding boxes `(x_min, y_min, x_max, y_max)` of the face mesh, normalised: what training
        crops are centred on."""
        xy = self.face[..., :2]
        return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)


def _fill_in_time(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames for the frames where `found` is False (held at the ends).

    Whole frames of face mesh (with depth) or shoulder landmarks (with visibility): what
    [`zeroshot.poses.fill_missing_frames`] does per keypoint for a `PoseSequence`, which these are not.
    """
    if found.all():
        return values
    frames = np.arange(len(values))
    flat = values.reshape(len(values), -1)
    filled = np.stack(
        [np.interp(frames, frames[found], flat[found, column]) for column in range(flat.shape[1])], axis=1
    )
    return filled.reshape(values.shape).astype(values.dtype)


class _PortraitDetector:
    """MediaPipe face mesh and pose together; built on first use, with their native start-up notices held back."""

    def __init__(self, video: bool):
        self.video = video
        self._models: tuple | None = None

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        frame = check_rgb_image(frame)
        if self._models is None:
            face_mesh = import_mediapipe_solution("face_mesh")
            pose = import_mediapipe_solution("pose")
            with quiet_native_stderr():
                self._models = (
                    face_mesh.FaceMesh(static_image_mode=not self.video, max_num_faces=1, refine_landmarks=True),
                    pose.Pose(static_image_mode=not self.video, model_complexity=1),
                )
                return self._process(frame)
        return self._process(frame)

    def _process(self, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        face_mesh, pose_model = self._models
        result = face_mesh.process(frame)
        face = None
        if result.multi_face_landmarks:
            face = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
        result = pose_model.process(frame)
        pose = None
        if result.pose_landmarks is not None:
            points = result.pose_landmarks.landmark
            pose = np.array([(points[i].x, points[i].y, points[i].visibility) for i in POSE_LANDMARKS], np.float32)
        return face, pose

    def close(self) -> None:
        if self._models is not None:
            for model in self._models:
                model.close()
            self._models = None


def detect_portrait_landmarks(
    frames: np.ndarray, *, video: bool = True, show_progress: bool = True, what: str = "the video"
) -> PortraitLandmarks:
    """Runs MediaPipe face mesh (478 points) and pose (shoulders, elbows) on RGB frames.

    Args:
        frames (`np.ndarray`): `uint8` RGB frames `[frames, height, width, 3]`.
        video (`bool`, *optional*, defaults to `True`): the frames are consecutive video frames (MediaPipe then
            tracks landmarks across frames); `False` detects each frame on its own.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        what (`str`, *optional*, defaults to `"the video"`): how error messages name the frames.

    Returns:
        [`PortraitLandmarks`]: with frames that had no face (or no pose) filled in by interpolation in time.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: there are no frames, or no frame shows a face.
    """
    faces, poses = [], []
    detector = _PortraitDetector(video)
    try:
        for frame in tqdm(frames, desc="landmarks", disable=not show_progress, leave=False):
            face, pose = detector(frame)
            faces.append(face)
            poses.append(pose)
    finally:
        detector.close()
    if not faces:
        raise ZeroshotError(f"{what[0].upper()}{what[1:]} holds no frames.")
    face_found = np.array([face is not None for face in faces])
    pose_found = np.array([pose is not None for pose in poses])
    if not face_found.any():
        raise ZeroshotError(
            f"No face was found in {what}. The face conditions need a visible face; for whole bodies use a checkpoint "
            f"trained with --condition body."
        )
    if not face_found.all():
        logger.info("No face in %d of %d frames of %s: interpolated.", (~face_found).sum(), len(faces), what)
    no_face = np.zeros((FACE_LANDMARKS, 3), np.float32)
    no_pose = np.zeros((len(POSE_LANDMARKS), 3), np.float32)
    face = _fill_in_time(np.stack([no_face if f is None else f for f in faces]), face_found)
    pose = np.stack([no_pose if p is None else p for p in poses])
    if pose_found.any():
        pose = _fill_in_time(pose, pose_found)
    return PortraitLandmarks(face, pose)


def _thickness(width: int, height: int) -> int:
    return max(1, round(min(width, height) / 128))


# Fixed-point coordinates (4 fractional bits) keep sub-pixel positions, so small motions change the drawing.
_SHIFT = 4


def _draw_segments(canvas: np.ndarray, starts: np.ndarray, ends: np.ndarray, colour: tuple, thickness: int) -> None:
    """Draws the segments `starts[i] -> ends[i]` (pixel coordinates, `[n, 2]`), anti-aliased."""
    import cv2

    if len(starts) == 0:
        return
    segments = np.round(np.stack([starts, ends], axis=1) * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(canvas, list(segments), False, colour, thickness, cv2.LINE_AA, _SHIFT)


def render_portrait_frame(face: np.ndarray, pose: np.ndarray, width: int, height: int) -> np.ndarray:
    """Draws one frame's landmarks (`face` `[478, 3]`, `pose` `[4, 3]`) as a `uint8` RGB image `[height, width, 3]`,
    following the `face-v1` specification of this module."""
    canvas = np.zeros((height, width, 3), np.uint8)
    thickness = _thickness(width, height)
    scale = np.array([width, height], np.float32)
    face_xy = face[:, :2] * scale
    pose_xy = pose[:, :2] * scale
    visible = pose[:, 2] >= MIN_VISIBILITY
    left_shoulder, right_shoulder, left_elbow, right_elbow = range(4)
    shoulders = bool(visible[left_shoulder] and visible[right_shoulder])
    if shoulders:
        _draw_segments(canvas, pose_xy[[left_shoulder]], pose_xy[[right_shoulder]], _SHOULDER_COLOUR, 2 * thickness)
    limbs = ((left_shoulder, left_elbow), (right_shoulder, right_elbow))
    arms = [(start, end) for start, end in limbs if visible[start] and visible[end]]
    arms_array = np.array(arms, int).reshape(-1, 2)
    _draw_segments(canvas, pose_xy[arms_array[:, 0]], pose_xy[arms_array[:, 1]], _ARM_COLOUR, 2 * thickness)
    if shoulders:
        neck = (pose_xy[[left_shoulder]] + pose_xy[[right_shoulder]]) / 2
        _draw_segments(canvas, neck, face_xy[[CHIN]], _NECK_COLOUR, 2 * thickness)
    edges = _tesselation()
    _draw_segments(canvas, face_xy[edges[:, 0]], face_xy[edges[:, 1]], _TESSELATION_COLOUR, 1)
    for edges, colour in _face_parts():
        _draw_segments(canvas, face_xy[edges[:, 0]], face_xy[edges[:, 1]], colour, thickness)
    return canvas


def render_portrait_conditions(landmarks: PortraitLandmarks, width: int, height: int) -> np.ndarray:
    """Renders every frame of `landmarks` (the `face-v1` drawing): `uint8` RGB `[frames, height, width, 3]`."""
    frames = zip(landmarks.face, landmarks.pose, strict=True)
    return np.stack([render_portrait_frame(face, pose, width, height) for face, pose in frames])


#: Condition kinds a checkpoint can be trained on.
CONDITION_KINDS = ("face", "body")
#: What each kind's landmarks are: face mesh and shoulders, or OpenPose COCO-18 keypoints.
Landmarks = PortraitLandmarks | PoseSequence


def _check_kind(kind: str) -> None:
    if kind not in CONDITION_KINDS:
        raise ValueError(f"Unknown condition kind {kind!r}; choose one of {', '.join(CONDITION_KINDS)}.")


def detect_landmarks(
    kind: str, frames: np.ndarray, *, video: bool = True, show_progress: bool = True, what: str = "the video"
) -> Landmarks:
    """Landmarks of condition `kind` (`"face"` or `"body"`) for `uint8` RGB frames `[frames, height, width, 3]`;
    see [`detect_portrait_landmarks`] for the arguments."""
    _check_kind(kind)
    detect = detect_portrait_landmarks if kind == "face" else detect_body_landmarks
    return detect(frames, video=video, show_progress=show_progress, what=what)


def render_conditions(kind: str, landmarks: Landmarks, width: int, height: int) -> np.ndarray:
    """Condition images of `kind` for every frame of `landmarks`: `uint8` RGB `[N, height, width, 3]`."""
    _check_kind(kind)
    render = render_portrait_conditions if kind == "face" else render_body_conditions
    return render(landmarks, width, height)


def interpolate_landmarks(start: Landmarks, end: Landmarks, num_frames: int) -> Landmarks:
    """`num_frames` frames of landmarks going linearly from the one-frame `start` to the one-frame `end` (both
    included): the jump-cut smoothing."""
    if isinstance(start, PoseSequence):
        return interpolate_poses(start, end, num_frames)
    return start.interpolate(end, num_frames)


def subject_boxes(landmarks: Landmarks) -> np.ndarray:
    """`[frames, 4]` boxes `(x_min, y_min, x_max, y_max)` of the subject (face mesh, or body keypoints), normalised:
    what training crops are centred on."""
    return pose_boxes(landmarks) if isinstance(landmarks, PoseSequence) else landmarks.subject_boxes()


def landmark_arrays(landmarks: Landmarks) -> dict[str, np.ndarray]:
    """The landmarks as named arrays (for caching); [`landmarks_from_arrays`] restores them."""
    if isinstance(landmarks, PoseSequence):
        return {"body": landmarks.body, "size": np.asarray(landmarks.size)}
    return {"face": landmarks.face, "pose": landmarks.pose}


def landmarks_from_arrays(kind: str, arrays: dict[str, np.ndarray]) -> Landmarks:
    """Landmarks of `kind` from the named arrays [`landmark_arrays`] gave."""
    _check_kind(kind)
    if kind == "face":
        return PortraitLandmarks(arrays["face"], arrays["pose"])
    return PoseSequence(arrays["body"], size=tuple(int(side) for side in arrays["size"]))


def rendering_version(kind: str) -> str:
    """The version tag of `kind`'s drawing, stored in checkpoints."""
    _check_kind(kind)
    return FACE_RENDERING if kind == "face" else BODY_RENDERING
