"""One loader for whatever a user gives as poses, and writers for rendered pose images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import ZeroshotError
from ..video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, image_files, load_image, read_image_folder, read_video, write_video
from .detectors import PoseDetector
from .extract import detect_source_pose, extract_poses
from .openpose_json import read_openpose_json
from .repair import RepairSettings
from .sequence import Poses, PoseSequence, RenderedPoses

logger = logging.getLogger(__name__)

#: How [`load_poses`] repairs the poses it extracts from a video, unless told otherwise.
DEFAULT_REPAIR = RepairSettings()
#: Frame rate of written pose videos when neither the caller nor the poses give one.
DEFAULT_FPS = 8.0


def load_poses(
    path: str | os.PathLike,
    *,
    size: tuple[int, int] | None = None,
    detector: PoseDetector | None = None,
    repair: RepairSettings | None = DEFAULT_REPAIR,
    show_progress: bool = True,
) -> Poses:
    """Loads a pose sequence from whatever `path` is.

    - a `.json` file: OpenPose JSON, one frame or many, our own saved form included (see [`read_openpose_json`]);
    - a folder of `.json` files: OpenPose's per-frame output;
    - a folder of images, or a video or image that shows pose renders (black background, coloured sticks): rendered
      pose images, used as they are ([`RenderedPoses`]);
    - any other video or image: a person filmed or photographed, whose poses are extracted ([`extract_poses`]) and
      repaired ([`repair_poses`]); what repair did is logged in one line.

    Args:
        path (`str` or `os.PathLike`): the poses.
        size (`tuple[int, int]`, *optional*): `(width, height)` of the canvas of JSON keypoints that do not say it.
        detector (*optional*, defaults to mediapipe): the detector for videos and photos (see [`make_detector`]).
        repair ([`RepairSettings`], *optional*, defaults to `DEFAULT_REPAIR`): how extracted poses are repaired;
            None keeps the detections as they are.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar while extracting.

    Returns:
        [`PoseSequence`] or [`RenderedPoses`]: keypoints, or images without keypoints (which cannot be aligned).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the path is missing, of an unknown kind, unreadable or malformed, or holds
        no frames or no person.

    Example:

    ```py
    >>> from zeroshot.poses import load_poses
    >>> poses = load_poses("dance.json")  # or a folder, a video, a folder of pose images
    >>> images = poses.render(512, 512)  # works for both kinds
    ```
    """
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.json")):
            return read_openpose_json(path, size=size)
        if image_files(path):
            return read_pose_images(path)
        raise ZeroshotError(
            f"Folder {str(path)!r} holds neither OpenPose .json files nor pose images ({', '.join(IMAGE_SUFFIXES)})."
        )
    if not path.exists():
        raise ZeroshotError(f"Poses {str(path)!r} do not exist.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_openpose_json(path, size=size)
    if suffix in VIDEO_SUFFIXES:
        video = read_video(path)
        if looks_rendered(video.frames):
            logger.info("%s shows rendered poses; using its frames as they are.", path)
            return RenderedPoses(video.frames, video.fps, str(path))
        extraction = extract_poses(video, detector, repair=repair, show_progress=show_progress, source=str(path))
        logger.info("%s: %s", path, extraction.summary())
        return extraction.poses
    if suffix in IMAGE_SUFFIXES:
        image = np.asarray(load_image(path))
        if looks_rendered(image[None]):
            return RenderedPoses(image[None], None, str(path))
        try:
            return detect_source_pose(image, name=str(path))
        except ZeroshotError:
            raise ZeroshotError(
                f"No person found in the pose photo {str(path)!r}: give a photo or video in which a person's body is "
                f"clearly visible, or OpenPose JSON."
            ) from None
    raise ZeroshotError(
        f"Cannot tell what {str(path)!r} holds from its suffix: give OpenPose JSON (.json, or a folder of them), a "
        f"folder of pose images, or a video ({', '.join(VIDEO_SUFFIXES)})."
    )


def load_source_pose(path: str | os.PathLike, image_size: tuple[int, int]) -> PoseSequence:
    """Reads a source pose given by the user: OpenPose JSON with one frame, on the source image's canvas.

    Args:
        path (`str` or `os.PathLike`): the JSON file.
        image_size (`tuple[int, int]`): `(width, height)` of the source image; the canvas of pixel keypoints that do
            not say theirs, and the canvas of the returned pose.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the file is malformed, holds more than one frame or no person, or its
        canvas has another shape than the image.
    """
    poses = read_openpose_json(path, size=image_size)
    if len(poses) != 1:
        raise ZeroshotError(f"Source pose {str(path)!r} holds {len(poses)} frames; give one frame, the source pose.")
    (width, height), (image_width, image_height) = poses.size, image_size
    if abs(width / height - image_width / image_height) > 0.01 * image_width / image_height:
        raise ZeroshotError(
            f"Source pose {str(path)!r} is on a {width}x{height} canvas, which does not have the shape of the "
            f"{image_width}x{image_height} source image: give the pose detected on that image."
        )
    return PoseSequence(poses.body, image_size, face=poses.face, hands=poses.hands, source=str(path))


def read_pose_images(folder: str | os.PathLike) -> RenderedPoses:
    """Reads a folder of rendered pose images (natural order of names), all of one size.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no images, an unreadable image, or images of different sizes.
    """
    return RenderedPoses(read_image_folder(folder, "pose images"), None, str(folder))


def write_pose_images(
    poses: Poses,
    path: str | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> Path:
    """Renders poses (see [`PoseSequence.render`]) to an `.mp4`, a `.gif`, or a folder of PNG frames, by the path.

    Args:
        poses ([`PoseSequence`] or [`RenderedPoses`]): the poses.
        path (`str` or `os.PathLike`): `.mp4`, `.gif`, or a folder path without a suffix.
        width (`int`, *optional*, defaults to the canvas width): image width.
        height (`int`, *optional*, defaults to the canvas height): image height.
        fps (`float`, *optional*): frame rate of a video, by default the poses' own or 8.

    Returns:
        `Path`: the written path.
    """
    return write_video(poses.render(width, height), path, fps or poses.fps or DEFAULT_FPS)


def looks_rendered(frames: np.ndarray) -> bool:
    """Whether images look like pose renders rather than photos: mostly black, and what is not black is mostly
    strongly coloured or white (limbs, joints, face points). Up to 8 frames, spread over the sequence, are checked.
    """
    sample = frames[np.unique(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int))].astype(np.int16)
    brightest, darkest = sample.max(axis=-1), sample.min(axis=-1)
    lit = brightest >= 32
    if lit.mean() > 0.4 or not lit.any():
        return False
    strong = ((brightest - darkest) >= 0.6 * brightest) | (darkest >= 200)
    return bool(strong[lit].mean() >= 0.6)
