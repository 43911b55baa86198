"""Pose detectors that turn one RGB image into COCO-18 keypoints: mediapipe (offline, the default) and
controlnet-aux's OpenPose and DWPose (the `detectors` extra, weights from a local folder).

Every detector is a callable `detector(image) -> DetectedPose | None` (None when it finds no person) with `close()`,
usable as a context manager.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ZeroshotError
from .skeleton import NUM_FACE_POINTS, NUM_HAND_POINTS, NUM_JOINTS

#: Names accepted by [`make_detector`].
DETECTORS = ("mediapipe", "openpose", "dwpose")

# mediapipe's 33 pose landmarks that give each COCO-18 joint (None: the neck, the midpoint of the shoulders).
_MEDIAPIPE_TO_COCO18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
_MEDIAPIPE_SHOULDERS = (11, 12)
_MEDIAPIPE_NOSE, _MEDIAPIPE_EARS = 0, (7, 8)
# mediapipe face mesh landmark of each OpenPose face point: the 68 points of the iBUG/dlib layout OpenPose uses (jaw
# from the person's right ear to the left, eyebrows, nose, eyes, lips), then the right and left pupils (the iris
# centres of the refined mesh, 468 and 473).
_MEDIAPIPE_TO_FACE70 = (
    127, 234, 132, 58, 172, 150, 176, 148, 152, 377, 400, 379, 397, 288, 361, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
    468, 473,
)  # fmt: skip


@dataclass
class DetectedPose:
    """One person's keypoints in one image, normalised to its size; confidence 0 marks a missing keypoint.

    Args:
        body (`np.ndarray`): `[18, 3]` COCO-18 keypoints.
        face (`np.ndarray`, *optional*): `[70, 3]` face keypoints.
        hands (`np.ndarray`, *optional*): `[2, 21, 3]` hand keypoints (left, right).
        facing (`float`, *optional*): how much the person faces the camera, from the detector's 3D landmarks: 1 facing
            it, -1 turned away, 0 in profile (see [`MediapipePoseDetector`]); None when the detector has no depth.
    """

    body: np.ndarray
    face: np.ndarray | None = None
    hands: np.ndarray | None = None
    facing: float | None = None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Holds back what native libraries print on stderr (mediapipe's TFLite and absl start-up notices) while the block
    runs, by pointing file descriptor 2 at a temporary file; if the block raises, the held-back text is printed.

    Python's own writes to stderr inside the block are held back too, so keep the block to the native calls.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


class MediapipePoseDetector:
    """mediapipe's pose landmarker (BlazePose, `model_complexity=1`, the model its wheel bundles), mapped to COCO-18;
    with `face` or `hands`, its holistic landmarker (the same pose model, plus the face mesh and hand models).

    The neck is the midpoint of the shoulders. A landmark becomes a keypoint when its visibility reaches
    `min_visibility` and it lies inside the image; its confidence is the visibility. The facing direction comes from
    mediapipe's world landmarks (metres, smaller depth nearer the camera): how far the nose lies in front of the
    midpoint of the ears, in units of `FACING_DEPTH` (clipped to [-1, 1]), which needs no left/right label.

    Face points are the 70 of OpenPose (the iBUG 68 layout and the two pupils), taken from the refined face mesh;
    hand points are the 21 of OpenPose, which mediapipe's hand landmarks share (wrist, then four per finger from the
    thumb). The holistic model names the hands after the person's sides, as the pose does. mediapipe gives no
    per-point confidence for them: a point found inside the image has confidence 1.

    Args:
        video (`bool`, *optional*, defaults to `False`):
            Track across consecutive frames of a video (steadier and faster) instead of detecting in each image alone.
        min_visibility (`float`, *optional*, defaults to 0.5):
            Landmarks less visible than this are missing.
        face (`bool`, *optional*, defaults to `False`): also find the 70 face points.
        hands (`bool`, *optional*, defaults to `False`): also find the 21 points of each hand.

    Example:

    ```py
    >>> from zeroshot.poses import MediapipePoseDetector
    >>> with MediapipePoseDetector() as detector:
    ...     pose = detector(image)  # uint8 RGB [height, width, 3]; None when there is no person
    ```
    """

    #: Depth in metres of the nose in front of the ears that counts as fully facing the camera (about 10 cm on adults).
    FACING_DEPTH = 0.1

    def __init__(self, *, video: bool = False, min_visibility: float = 0.5, face: bool = False, hands: bool = False):
        if not 0 <= min_visibility <= 1:
            raise ValueError(f"min_visibility must be within [0, 1], got {min_visibility}.")
        self.video, self.min_visibility, self.face, self.hands = video, min_visibility, face, hands
        self._module = import_mediapipe_solution("holistic" if face or hands else "pose")
        self._pose: Any = None

    def __call__(self, image: np.ndarray) -> DetectedPose | None:
        image = check_rgb_image(image)
        if self._pose is not None:
            result = self._pose.process(image)
        else:
            # The graph is built here, on first use: its threads load the models (and print notices) until the first
            # image has gone through, so construction and first call share one quiet block.
            with quiet_native_stderr():
                options = dict(static_image_mode=not self.video, model_complexity=1)
                if self.face or self.hands:
                    self._pose = self._module.Holistic(**options, refine_face_landmarks=self.face)
                else:
                    self._pose = self._module.Pose(**options)
                result = self._pose.process(image)
        if result.pose_landmarks is None:
            return None
        landmarks = np.array([(point.x, point.y, point.visibility) for point in result.pose_landmarks.landmark])
        body = np.zeros((NUM_JOINTS, 3))
        for joint, landmark in enumerate(_MEDIAPIPE_TO_COCO18):
            if landmark is not None:
                body[joint] = landmarks[landmark]
            else:
                shoulders = landmarks[list(_MEDIAPIPE_SHOULDERS)]
                body[joint] = (*shoulders[:, :2].mean(axis=0), shoulders[:, 2].min())
        inside = ((body[:, :2] >= 0) & (body[:, :2] <= 1)).all(axis=1)
        body[~(inside & (body[:, 2] >= self.min_visibility))] = 0.0
        if not (body[:, 2] > 0).any():
            return None
        facing = None
        if result.pose_world_landmarks is not None:
            depth = [point.z for point in result.pose_world_landmarks.landmark]
            ears = (depth[_MEDIAPIPE_EARS[0]] + depth[_MEDIAPIPE_EARS[1]]) / 2
            facing = float(np.clip((ears - depth[_MEDIAPIPE_NOSE]) / self.FACING_DEPTH, -1.0, 1.0))
        face = hands = None
        if self.face:
            face = _inside(_landmark_points(result.face_landmarks, NUM_FACE_POINTS, _MEDIAPIPE_TO_FACE70))
        if self.hands:
            both = (result.left_hand_landmarks, result.right_hand_landmarks)
            hands = np.stack([_inside(_landmark_points(hand, NUM_HAND_POINTS)) for hand in both])
        return DetectedPose(body, face, hands, facing)

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self) -> MediapipePoseDetector:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class OpenposeDetector:
    """controlnet-aux's OpenPose, the annotator the OpenPose ControlNet was trained on (needs the `detectors` extra).

    Args:
        weights (`str` or `os.PathLike`):
            Folder holding `body_pose_model.pth`, `hand_pose_model.pth` and `facenet.pth` (from the Hugging Face
            repository `lllyasviel/Annotators`).
        hands (`bool`, *optional*, defaults to `False`): also detect hands.
        face (`bool`, *optional*, defaults to `False`): also detect the face.
        device (`str`, *optional*, defaults to `"cpu"`): where the networks run.
    """

    WEIGHT_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")

    def __init__(self, weights: str | os.PathLike, *, hands: bool = False, face: bool = False, device: str = "cpu"):
        folder = _weights_folder(weights, self.WEIGHT_FILES, "lllyasviel/Annotators", "OpenPose")
        module = _import_detectors("controlnet_aux.open_pose", "OpenPose")
        self.hands, self.face = hands, face
        self._model = module.OpenposeDetector.from_pretrained(str(folder)).to(device)

    def __call__(self, image: np.ndarray) -> DetectedPose | None:
        people = self._model.detect_poses(np.ascontiguousarray(image), include_hand=self.hands, include_face=self.face)
        if not people:
            return None
        person = max(people, key=lambda result: result.body.total_score)
        body = _keypoint_rows(person.body.keypoints, NUM_JOINTS)
        face = _keypoint_rows(person.face, NUM_FACE_POINTS) if person.face else None
        hands = None
        if person.left_hand or person.right_hand:
            both = (person.left_hand, person.right_hand)
            hands = np.stack([_keypoint_rows(hand or [], NUM_HAND_POINTS) for hand in both])
        return DetectedPose(body, face, hands)

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> OpenposeDetector:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class DwposeDetector:
    """controlnet-aux's DWPose whole-body detector (needs the `detectors` extra plus mmpose, mmdet and mmcv, which
    controlnet-aux's DWPose runs on). The body, and on request 68 face points (OpenPose's 70 less the pupils) and both
    hands; a keypoint scoring below 0.3 is missing, as in controlnet-aux.

    Args:
        weights (`str` or `os.PathLike`):
            Folder holding the YOLOX-L person detector checkpoint (`yolox_l_8x8_300e_coco_*.pth`, from OpenMMLab) and
            `dw-ll_ucoco_384.pth` (from the Hugging Face repository `wanghaofan/dw-ll_ucoco_384`).
        hands (`bool`, *optional*, defaults to `False`): keep the hands.
        face (`bool`, *optional*, defaults to `False`): keep the face.
        device (`str`, *optional*, defaults to `"cpu"`): where the networks run.
    """

    SCORE_THRESHOLD = 0.3

    def __init__(self, weights: str | os.PathLike, *, hands: bool = False, face: bool = False, device: str = "cpu"):
        folder = _weights_folder(weights, ("yolox_l_8x8_300e_coco_*.pth", "dw-ll_ucoco_384.pth"), None, "DWPose")
        missing = [name for name in ("mmpose", "mmdet", "mmcv") if importlib.util.find_spec(name) is None]
        module = _import_detectors("controlnet_aux.dwpose", "DWPose")
        if missing:
            raise ZeroshotError(
                f"controlnet-aux's DWPose runs on OpenMMLab packages that are not installed ({', '.join(missing)}): "
                f"pip install -U openmim && mim install mmcv mmdet mmpose; or use --detector openpose or mediapipe."
            )
        self.hands, self.face = hands, face
        detector_weights = next(folder.glob("yolox_l_8x8_300e_coco_*.pth"))
        self._model = module.DWposeDetector(
            det_ckpt=str(detector_weights), pose_ckpt=str(folder / "dw-ll_ucoco_384.pth"), device=device
        )

    def __call__(self, image: np.ndarray) -> DetectedPose | None:
        height, width = image.shape[:2]
        keypoints, scores = self._model.pose_estimation(np.ascontiguousarray(image[..., ::-1]))
        if len(keypoints) == 0:
            return None
        points = np.concatenate([keypoints / np.array([width, height]), scores[..., None]], axis=-1)
        points[points[..., 2] < self.SCORE_THRESHOLD] = 0.0
        person = points[int(np.argmax(points[:, :NUM_JOINTS, 2].sum(axis=1)))]
        if not (person[:NUM_JOINTS, 2] > 0).any():
            return None
        face = hands = None
        if self.face:
            face = np.zeros((NUM_FACE_POINTS, 3))
            face[:68] = person[24:92]
        if self.hands:
            hands = np.stack([person[92:113], person[113:134]])
        return DetectedPose(person[:NUM_JOINTS].copy(), face, hands)

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> DwposeDetector:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


PoseDetector = MediapipePoseDetector | OpenposeDetector | DwposeDetector


def make_detector(
    name: str = "mediapipe",
    weights: str | os.PathLike | None = None,
    *,
    video: bool = False,
    hands: bool = False,
    face: bool = False,
    device: str = "cpu",
) -> PoseDetector:
    """Builds a detector by name.

    Args:
        name (`str`, *optional*, defaults to `"mediapipe"`): `"mediapipe"`, `"openpose"` or `"dwpose"`.
        weights (`str` or `os.PathLike`, *optional*): local weights folder, needed by `"openpose"` and `"dwpose"`.
        video (`bool`, *optional*, defaults to `False`): the images are consecutive frames (mediapipe tracks them).
        hands (`bool`, *optional*, defaults to `False`): also detect hands.
        face (`bool`, *optional*, defaults to `False`): also detect the face.
        device (`str`, *optional*, defaults to `"cpu"`): where controlnet-aux's networks run.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: a controlnet-aux detector without its weights folder or its packages.
    """
    if name not in DETECTORS:
        raise ValueError(f"Unknown pose detector {name!r}; choose one of {DETECTORS}.")
    if name == "mediapipe":
        return MediapipePoseDetector(video=video, face=face, hands=hands)
    if weights is None:
        raise ZeroshotError(
            f"The {name} detector needs its weights as a local folder (it never downloads): give the folder, or use "
            f"the mediapipe detector, which needs none."
        )
    if name == "openpose":
        return OpenposeDetector(weights, hands=hands, face=face, device=device)
    return DwposeDetector(weights, hands=hands, face=face, device=device)


def import_mediapipe_solution(name: str) -> Any:
    """`mediapipe.solutions.<name>`, with a clear message when mediapipe is missing or too new to have it."""
    try:
        return importlib.import_module(f"mediapipe.python.solutions.{name}")
    except ImportError as error:
        raise ZeroshotError(
            f"mediapipe's offline '{name}' solution cannot be imported ({error}). Install the pinned version, which "
            f"bundles its models: pip install --no-deps mediapipe==0.10.21 (see README)."
        ) from error


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """`image` as a C-contiguous `uint8` RGB array, or a `ValueError` naming what it is instead."""
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 RGB image [height, width, 3], got {image.dtype} {image.shape}.")
    return image


def _landmark_points(landmarks: Any, count: int, indices: tuple[int, ...] | None = None) -> np.ndarray:
    """`[count, 3]` points `(x, y, 1)` of mediapipe landmarks (picked by `indices`), zeros when there are none."""
    if landmarks is None:
        return np.zeros((count, 3))
    points = landmarks.landmark
    return np.array([(points[i].x, points[i].y, 1.0) for i in (indices or range(count))], dtype=np.float64)


def _inside(points: np.ndarray) -> np.ndarray:
    """`points` with those outside the image made missing."""
    points = points.copy()
    points[~((points[:, :2] >= 0) & (points[:, :2] <= 1)).all(axis=1)] = 0.0
    return points


def _keypoint_rows(keypoints: list[Any], count: int) -> np.ndarray:
    """controlnet-aux keypoints (None or negative coordinates when missing) as `[count, 3]` rows."""
    rows = np.zeros((count, 3))
    for index, keypoint in enumerate(keypoints[:count]):
        if keypoint is not None and keypoint.x >= 0 and keypoint.y >= 0:
            rows[index] = (keypoint.x, keypoint.y, keypoint.score)
    return rows


def _weights_folder(weights: str | os.PathLike, patterns: tuple[str, ...], repository: str | None, name: str) -> Path:
    folder = Path(weights)
    if not folder.is_dir():
        raise ZeroshotError(
            f"{name} weights folder {str(folder)!r} does not exist; give the folder holding {', '.join(patterns)}."
        )
    missing = [pattern for pattern in patterns if not any(folder.glob(pattern))]
    if missing:
        fetch = f" Fetch them with: hf download {repository} {' '.join(missing)} --local-dir {folder}"
        message = f"{name} weights folder {str(folder)!r} lacks {', '.join(missing)}."
        raise ZeroshotError(message + (fetch if repository else ""))
    return folder


def _import_detectors(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ZeroshotError(
            f"The {name} detector needs controlnet-aux and torchvision, which are not installed ({error}): "
            f'pip install -e ".[detectors]", or use the mediapipe detector.'
        ) from error
