"""Face crops and their paste-back: every frame's face box resized to one square crop size, its pose and character
mask moved along, and the refined crop blended back through a feathered mask with its colour matched at the seam.

Pixels outside the feathered mask are never written: the paste-back changes only pixels whose mask weight is above
zero, all inside the box.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ..poses import PoseSequence
from .boxes import MIN_FACE_POINTS, FaceBoxes

#: The ellipse of the paste-back mask without face keypoints: semi-axes as fractions of the box side.
ELLIPSE_AXES = (0.30, 0.38)
#: The face hull of the paste-back mask is grown by this factor about its centroid (the face-70 points stop at the
#: brows; the growth takes in the forehead's edge and the jaw line).
HULL_GROWTH = 1.15
#: Standard deviation of the Gaussian feather, as a fraction of the box side.
FEATHER = 0.04
#: Mask weights below this (a 1/512 of a level of 8-bit colour difference) count as 0: those pixels stay as they were.
MIN_WEIGHT = 1.0 / 512


def crop_matrix(boxes: FaceBoxes, frame: int, size: int) -> np.ndarray:
    """The `[2, 3]` affine map from canvas pixel coordinates to crop pixel coordinates (OpenCV's convention: pixel
    centres at integers) that takes frame `frame`'s box onto a `size` x `size` crop."""
    left, top, _, _ = boxes.corners(frame)
    scale = size / boxes.sides[frame]
    # Continuous coordinates (pixel i covers [i, i + 1)): u + 0.5 = (x + 0.5 - left) * scale.
    return np.array([[scale, 0.0, scale * (0.5 - left) - 0.5], [0.0, scale, scale * (0.5 - top) - 0.5]])


def crop_image(image: np.ndarray, boxes: FaceBoxes, frame: int, size: int, *, nearest: bool = False) -> np.ndarray:
    """Frame `frame`'s box of `image` (`[H, W, C]` or `[H, W]`) resized to `size` x `size` (bicubic; `nearest` for
    masks); a box reaching past the canvas repeats the edge pixels."""
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC
    matrix = crop_matrix(boxes, frame, size)
    return cv2.warpAffine(image, matrix, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def crop_poses(poses: PoseSequence, boxes: FaceBoxes, frames: list[int], size: int) -> PoseSequence:
    """The poses of `frames` moved into their crops: on a `size` x `size` canvas, keypoints outside the crop missing
    (confidence 0)."""
    canvas = np.asarray(poses.size, dtype=np.float64)
    lefts = np.array([boxes.corners(frame)[:2] for frame in frames])
    sides = boxes.sides[frames]

    def move(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        points = points[frames].copy()
        shape = (len(frames),) + (1,) * (points.ndim - 2)
        xy = (points[..., :2] * canvas - lefts.reshape(*shape, 2)) / sides.reshape(*shape, 1)
        outside = ((xy < 0) | (xy > 1)).any(-1)
        points[..., :2] = xy
        points[..., 2] = np.where(outside, 0.0, points[..., 2])
        return points

    return dataclasses.replace(
        poses, body=move(poses.body), face=move(poses.face), hands=move(poses.hands), size=(size, size), fps=poses.fps
    )


def paste_mask(poses: PoseSequence, boxes: FaceBoxes, frame: int) -> np.ndarray:
    """The feathered paste-back weight of frame `frame`, float32 `[H, W]` in [0, 1] on the canvas: the face hull
    (grown by `HULL_GROWTH`) when the frame has face keypoints, else an ellipse in the box; blurred by a Gaussian of
    `FEATHER` box sides; exactly 0 outside the box and where the weight is below `MIN_WEIGHT`."""
    width, height = poses.size
    side = float(boxes.sides[frame])
    # Drawn at 8x sub-pixel precision (OpenCV's `shift`), so small faces keep their shape.
    shift, scale = 3, 8.0
    shape = np.zeros((height, width), np.float32)
    face = None if poses.face is None else poses.face[frame]
    if face is not None and (face[:, 2] > 0).sum() >= MIN_FACE_POINTS:
        points = face[face[:, 2] > 0, :2] * np.asarray(poses.size)
        center = points.mean(0)
        grown = center + HULL_GROWTH * (points - center)
        hull = cv2.convexHull((grown * scale - 0.5 * scale).round().astype(np.int32))
        cv2.fillConvexPoly(shape, hull, 1.0, lineType=cv2.LINE_AA, shift=shift)
    else:
        center = (boxes.centers[frame] - 0.5) * scale
        axes = (np.asarray(ELLIPSE_AXES) * side * scale).round().astype(int)
        center_point = (round(float(center[0])), round(float(center[1])))
        cv2.ellipse(shape, center_point, tuple(int(a) for a in axes), 0, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    sigma = max(FEATHER * side, 0.5)
    weight = cv2.GaussianBlur(shape, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    left, top, right, bottom = boxes.corners(frame)
    ys, xs = np.mgrid[0:height, 0:width]
    inside = (xs + 0.5 >= left) & (xs + 0.5 < right) & (ys + 0.5 >= top) & (ys + 0.5 < bottom)
    return np.where(inside & (weight >= MIN_WEIGHT), np.clip(weight, 0.0, 1.0), 0.0).astype(np.float32)


def uncrop_image(crop: np.ndarray, boxes: FaceBoxes, frame: int, canvas: tuple[int, int]) -> np.ndarray:
    """A `uint8` crop `[size, size, 3]` put back on the canvas at frame `frame`'s box: float32 `[H, W, 3]`, resized by
    area first (no aliasing when the crop is larger than the box), then placed with sub-pixel precision."""
    size = crop.shape[0]
    side = float(boxes.sides[frame])
    pixels = max(int(np.ceil(side)), 1)
    resized = cv2.resize(crop.astype(np.float32), (pixels, pixels), interpolation=cv2.INTER_AREA)
    matrix = crop_matrix(boxes, frame, size)
    matrix[:, :2] *= pixels / size
    matrix[:, 2] = (matrix[:, 2] + 0.5) * pixels / size - 0.5
    width, height = canvas
    return cv2.warpAffine(
        resized,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def paste_face(frame_pixels: np.ndarray, refined: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blends `refined` (float `[H, W, 3]`, the refined crop on the canvas) into `frame_pixels` (`uint8` `[H, W, 3]`)
    with `weight` (`[H, W]` in [0, 1]), after shifting `refined`'s colour by the mean difference along the seam (the
    mask's feathered band, weighted by `w * (1 - w)`). Pixels where `weight` is 0 keep their exact values."""
    original = frame_pixels.astype(np.float32)
    band = weight * (1.0 - weight)
    if band.sum() > 0:
        offset = ((original - refined) * band[..., None]).sum((0, 1)) / band.sum()
        refined = refined + offset
    blended = original + weight[..., None] * (refined - original)
    result = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return np.where((weight > 0)[..., None], result, frame_pixels)
