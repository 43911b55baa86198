"""The two forms a pose sequence takes: keypoints ([`PoseSequence`]) or images already rendered ([`RenderedPoses`])."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ZeroshotError
from ..video import Fit
from .render import render_pose
from .skeleton import NUM_FACE_POINTS, NUM_HAND_POINTS, NUM_JOINTS


@dataclass
class PoseSequence:
    """A sequence of one person's poses as keypoints in OpenPose COCO-18 order, on a canvas of known size.

    Coordinates are normalised by the canvas: `x / width` and `y / height`, so `(0, 0)` is the top-left corner and
    `(1, 1)` the bottom-right one. The third value of each keypoint is its confidence; `0` marks a keypoint that is
    missing (not detected, occluded or out of the picture), whatever its coordinates.

    Args:
        body (`np.ndarray`):
            `[frames, 18, 3]` body keypoints `(x, y, confidence)` in OpenPose COCO-18 order (see
            `zeroshot.poses.skeleton.JOINT_NAMES`). Stored as `float64`.
        size (`tuple[int, int]`):
            `(width, height)` in pixels of the canvas the keypoints were normalised by.
        fps (`float`, *optional*):
            Frames per second, when known (a video's frame rate).
        face (`np.ndarray`, *optional*):
            `[frames, 70, 3]` OpenPose face keypoints.
        hands (`np.ndarray`, *optional*):
            `[frames, 2, 21, 3]` OpenPose hand keypoints, the person's left hand first, then the right.
        source (`str`, *optional*):
            Where the poses came from (a file name), used in messages.

    Example:

    ```py
    >>> import numpy as np
    >>> from zeroshot.poses import PoseSequence
    >>> body = np.zeros((2, 18, 3))
    >>> body[:, 1] = (0.5, 0.3, 1.0)  # the neck, in both frames
    >>> poses = PoseSequence(body, size=(512, 768), fps=30.0)
    >>> len(poses), poses.render().shape
    (2, (2, 768, 512, 3))
    ```
    """

    body: np.ndarray
    size: tuple[int, int]
    fps: float | None = None
    face: np.ndarray | None = None
    hands: np.ndarray | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.body = _keypoint_array(self.body, (NUM_JOINTS,), "body")
        frames = len(self.body)
        if self.face is not None:
            self.face = _keypoint_array(self.face, (NUM_FACE_POINTS,), "face", frames)
        if self.hands is not None:
            self.hands = _keypoint_array(self.hands, (2, NUM_HAND_POINTS), "hands", frames)
        width, height = self.size
        if int(width) != width or int(height) != height or width <= 0 or height <= 0:
            raise ValueError(f"size must be a positive (width, height) in pixels, got {self.size}.")
        self.size = (int(width), int(height))
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None, got {self.fps}.")

    def __len__(self) -> int:
        return len(self.body)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> PoseSequence:
        """The frames at `index` (an int gives a one-frame sequence)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return dataclasses.replace(
            self,
            body=self.body[index],
            face=None if self.face is None else self.face[index],
            hands=None if self.hands is None else self.hands[index],
        )

    @property
    def visible(self) -> np.ndarray:
        """`[frames, 18]` booleans: which body keypoints are present (confidence above 0)."""
        return self.body[..., 2] > 0

    def pixels(self) -> np.ndarray:
        """`[frames, 18, 2]` body keypoint coordinates in pixels of the canvas."""
        return self.body[..., :2] * np.asarray(self.size, dtype=np.float64)

    def fitted(self, fit: Fit) -> PoseSequence:
        """The poses moved as [`~zeroshot.video.fit_image`] moves the image they were found in (scaled, then
        centre-cropped to `fit.size`); keypoints the crop cuts off become missing (confidence 0)."""
        if tuple(self.size) != fit.source_size:
            raise ValueError(f"The fit is for a {fit.source_size} image, the poses' canvas is {self.size}.")

        def move(points: np.ndarray | None) -> np.ndarray | None:
            if points is None:
                return None
            moved = points.copy()
            offset = np.array([fit.left, fit.top], dtype=np.float64)
            moved[..., :2] = (points[..., :2] * np.asarray(self.size) * fit.scale - offset) / np.asarray(fit.size)
            outside = ((moved[..., :2] < 0) | (moved[..., :2] > 1)).any(-1)
            moved[..., 2] = np.where(outside, 0.0, moved[..., 2])
            return moved

        moved = {"body": move(self.body), "face": move(self.face), "hands": move(self.hands)}
        return dataclasses.replace(self, size=fit.size, **moved)

    def render(
        self, width: int | None = None, height: int | None = None, *, face: bool = True, hands: bool = True
    ) -> np.ndarray:
        """Draws every frame as the OpenPose ControlNet expects it (see [`render_pose`]).

        Args:
            width (`int`, *optional*, defaults to the canvas width): width of the images.
            height (`int`, *optional*, defaults to the canvas height): height of the images.
            face (`bool`, *optional*, defaults to `True`): draw the face keypoints, when there are any.
            hands (`bool`, *optional*, defaults to `True`): draw the hand keypoints, when there are any.

        Returns:
            `np.ndarray`: `uint8` RGB images `[frames, height, width, 3]`.
        """
        width, height = width or self.size[0], height or self.size[1]
        images = np.zeros((len(self), height, width, 3), np.uint8)
        for index in range(len(self)):
            images[index] = render_pose(
                self.body[index],
                width,
                height,
                face=self.face[index] if face and self.face is not None else None,
                hands=self.hands[index] if hands and self.hands is not None else None,
            )
        return images


@dataclass
class RenderedPoses:
    """Pose images that were rendered already (by OpenPose, controlnet-aux, another tool), used as they are.

    They carry no keypoints, so they cannot be aligned to the source pose (PATA): [`require_keypoints`] says so.

    Args:
        frames (`np.ndarray`): `uint8` RGB pose images `[frames, height, width, 3]`.
        fps (`float`, *optional*): frames per second, when known.
        source (`str`, *optional*): where the images came from (a folder or file name), used in messages.
    """

    frames: np.ndarray
    fps: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [frames, height, width, 3], got {frames.dtype} {frames.shape}.")
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> RenderedPoses:
        """The frames at `index` (an int gives a one-frame sequence)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return dataclasses.replace(self, frames=self.frames[index])

    @property
    def size(self) -> tuple[int, int]:
        """`(width, height)` of the images."""
        return self.frames.shape[2], self.frames.shape[1]

    def render(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """The images, resized (bilinear, as controlnet-aux resizes its pose maps) when a size is given.

        Returns:
            `np.ndarray`: `uint8` RGB images `[frames, height, width, 3]`.
        """
        width, height = width or self.size[0], height or self.size[1]
        if (width, height) == self.size:
            return self.frames.copy()
        return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in self.frames])


#: What [`zeroshot.poses.load_poses`] returns: keypoints, or images to use as they are.
Poses = PoseSequence | RenderedPoses


def require_keypoints(poses: Poses, purpose: str = "aligned to the source pose") -> PoseSequence:
    """Returns `poses` if it holds keypoints, and otherwise raises a [`~zeroshot.errors.ZeroshotError`] saying why
    rendered pose images cannot be used for `purpose` and what to give instead.

    Args:
        poses ([`PoseSequence`] or [`RenderedPoses`]): the poses.
        purpose (`str`, *optional*, defaults to `"aligned to the source pose"`): what needs keypoints, for the message.
    """
    if isinstance(poses, PoseSequence):
        return poses
    where = f" in {poses.source!r}" if poses.source else ""
    raise ZeroshotError(
        f"The poses{where} are rendered images without keypoints, so they cannot be {purpose}. Give keypoints "
        f"instead (OpenPose JSON, or a video of a person to extract them from), or use the images as they are, "
        f"without alignment or transition frames, after making sure they match the character's position and size in "
        f"the source image."
    )


def _keypoint_array(values: np.ndarray, shape: tuple[int, ...], name: str, frames: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    expected = (frames if frames is not None else "frames", *shape, 3)
    if array.ndim != len(shape) + 2 or array.shape[1:] != (*shape, 3) or (frames is not None and len(array) != frames):
        raise ValueError(f"{name} keypoints must have shape {expected}, got {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} keypoints hold NaN or infinite values.")
    return array
