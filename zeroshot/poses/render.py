"""Drawing poses exactly as the OpenPose ControlNet saw them in training.

The conventions are those of ControlNet's OpenPose annotator as controlnet-aux ships it (`draw_bodypose`,
`draw_handpose`, `draw_facepose`): limbs are filled ellipses 4 pixels across at 60% of their colour, joints are
filled circles of radius 4, hand bones are 2-pixel lines coloured around the hue circle with blue joints of radius
4, face points are white circles of radius 3; body first, then the left hand, the right hand and the face. Stick
width and radii are in pixels of the output image, whatever its size, as in controlnet-aux. For `float64` keypoints
the result is identical, pixel for pixel, to controlnet-aux 0.0.10 (the tests compare against images it rendered).
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from .skeleton import COLORS, HAND_EDGES, LIMBS

STICK_WIDTH = 4
JOINT_RADIUS = 4
HAND_LINE_WIDTH = 2
HAND_JOINT_RADIUS = 4
HAND_JOINT_COLOR = (0, 0, 255)
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)

_LIMB_COLORS = tuple(tuple(int(channel * 0.6) for channel in COLORS[index]) for index in range(len(LIMBS)))
# Left as floats: OpenCV rounds them to 8 bits when it draws, as it does for controlnet-aux.
_HAND_EDGE_COLORS = tuple(
    tuple(255 * channel for channel in colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0))
    for index in range(len(HAND_EDGES))
)


def render_pose(
    body: np.ndarray,
    width: int,
    height: int,
    *,
    face: np.ndarray | None = None,
    hands: np.ndarray | None = None,
) -> np.ndarray:
    """Draws one pose on a black canvas in the OpenPose ControlNet's conventions.

    Keypoints with confidence 0 are missing and not drawn; neither is a limb with a missing end. As in
    controlnet-aux, a hand or face point is also left out when it falls in the first pixel row or column.

    Args:
        body (`np.ndarray`): `[18, 3]` COCO-18 keypoints `(x, y, confidence)`, coordinates normalised to `[0, 1]`.
        width (`int`): width of the image in pixels.
        height (`int`): height of the image in pixels.
        face (`np.ndarray`, *optional*): `[70, 3]` face keypoints.
        hands (`np.ndarray`, *optional*): `[2, 21, 3]` hand keypoints (left, right).

    Returns:
        `np.ndarray`: a `uint8` RGB image `[height, width, 3]`.

    Example:

    ```py
    >>> import numpy as np
    >>> from zeroshot.poses import render_pose
    >>> body = np.zeros((18, 3))
    >>> body[[0, 1]] = [(0.5, 0.2, 1.0), (0.5, 0.35, 1.0)]  # nose and neck
    >>> render_pose(body, 512, 512)[179, 256]  # the neck's joint colour
    array([255,  85,   0], dtype=uint8)
    ```
    """
    canvas = np.zeros((height, width, 3), np.uint8)
    body = np.asarray(body, dtype=np.float64)
    present = body[:, 2] > 0
    for (start, end), color in zip(LIMBS, _LIMB_COLORS, strict=True):
        if not (present[start] and present[end]):
            continue
        x0, x1 = body[start, 0] * float(width), body[end, 0] * float(width)
        y0, y1 = body[start, 1] * float(height), body[end, 1] * float(height)
        length = ((y0 - y1) ** 2 + (x0 - x1) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        center = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, color)
    for joint in np.flatnonzero(present):
        center = (int(body[joint, 0] * width), int(body[joint, 1] * height))
        cv2.circle(canvas, center, JOINT_RADIUS, COLORS[joint], thickness=-1)
    if hands is not None:
        for hand in np.asarray(hands, dtype=np.float64):
            _draw_hand(canvas, hand)
    if face is not None:
        points, drawn = _pixel_points(np.asarray(face, dtype=np.float64), width, height)
        for point in points[drawn].tolist():
            cv2.circle(canvas, point, FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)
    return canvas


def _pixel_points(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel positions (truncated, as controlnet-aux does) and which points are drawn."""
    pixels = np.array([(int(x * width), int(y * height)) for x, y in points[:, :2]], dtype=np.int64)
    drawn = (points[:, 2] > 0) & (pixels[:, 0] > 0) & (pixels[:, 1] > 0)
    return pixels, drawn


def _draw_hand(canvas: np.ndarray, hand: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    points, drawn = _pixel_points(hand, width, height)
    for (start, end), color in zip(HAND_EDGES, _HAND_EDGE_COLORS, strict=True):
        if drawn[start] and drawn[end]:
            cv2.line(canvas, tuple(points[start].tolist()), tuple(points[end].tolist()), color, HAND_LINE_WIDTH)
    for point in points[drawn].tolist():
        cv2.circle(canvas, point, HAND_JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
