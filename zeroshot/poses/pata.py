"""PATA, the pose alignment transition algorithm of PoseAnimate (its supplement is unpublished, so this is our design).

1. **Alignment.** One similarity transform, uniform scale and translation without rotation, fitted on the first target
   frame with a person and applied to the whole target sequence, so its motion is kept. The scale is the ratio of the
   summed lengths of the body limbs (torso, arms, legs, neck-nose) visible in both the source pose and that frame;
   face limbs serve only when no body limb is shared. The translation puts the target's anchor on the source's:
   the neck, else the mid-hip, else the centroid of the joints both show, else the centroids of what each shows.
   Everything is computed in pixels, so canvases of different aspect ratios align correctly. The head is then
   retargeted: head joints (nose, eyes, ears) and face points are scaled about the neck to the source's head size
   and shifted so that, in the reference frame, the nose sits where the source's does relative to the neck (people's
   necks and heads differ more than their limbs, and a head-and-shoulders source shows its head large).
2. **Transition.** Frames from the source pose to the aligned first target pose. Each limb visible on both sides
   turns around its parent joint (the shorter way round) while its length goes linearly from the source's to the
   target's, so limbs never shrink mid-way the way they do when joint positions are interpolated; the neck (the
   root) and joints whose parent is not shared move linearly. A joint shown on one side only is drawn in the half of
   the transition nearer that side, moving rigidly with its parent. Face and hand points follow the nose and the
   wrists in the same way. With the count left to PATA, it takes as many frames as keep every joint's step, measured
   along the path actually interpolated (limbs swing on arcs), under `max_step` of the canvas.

The result starts with the source pose itself (frame 0 of the animation reconstructs the source image), then the
transition frames, then the aligned target sequence: `1 + transition + len(target)` poses on the source's canvas.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ZeroshotError
from .sequence import Poses, PoseSequence, require_keypoints
from .skeleton import (
    BODY_LIMBS,
    JOINT,
    LEFT_HIP,
    LEFT_WRIST,
    LIMBS,
    NECK,
    NOSE,
    NUM_FACE_POINTS,
    NUM_HAND_POINTS,
    NUM_JOINTS,
    PARENT,
    RIGHT_HIP,
    RIGHT_WRIST,
    TREE_ORDER,
)

#: Longest transition one may ask for: 4 s at 30 fps. The default length never needs more than 28 frames (a joint
#: crossing the canvas's diagonal in steps of 5%), and every frame costs a full generation.
MAX_TRANSITION_FRAMES = 120

logger = logging.getLogger(__name__)

_FACE_LIMBS = tuple(limb for limb in LIMBS if limb not in BODY_LIMBS)
_HEAD_JOINTS = (NOSE, JOINT["right_eye"], JOINT["left_eye"], JOINT["right_ear"], JOINT["left_ear"])


@dataclass
class Alignment:
    """A similarity transform without rotation, from a target canvas to the source canvas, in pixels:
    `source_pixel = scale * target_pixel + offset`.

    Args:
        scale (`float`): uniform scale.
        offset (`tuple[float, float]`): translation in source pixels.
        anchor (`str`): what was put on what: `"neck"`, `"mid-hip"`, `"shared joints"` or `"centroids"`.
        reference_frame (`int`): the target frame the transform was fitted on.
        head_scale (`float`, *optional*, defaults to 1): extra scale of the head about the neck, after `scale`.
        head_offset (`tuple[float, float]`, *optional*, defaults to `(0, 0)`): shift of the head in source pixels.
    """

    scale: float
    offset: tuple[float, float]
    anchor: str
    reference_frame: int
    head_scale: float = 1.0
    head_offset: tuple[float, float] = (0.0, 0.0)


@dataclass
class PataResult:
    """The pose sequence of an animation, and how it was made.

    Args:
        poses ([`PoseSequence`]): `1 + num_transition + len(target)` poses on the source canvas: the source pose, the
            transition, then the aligned target poses.
        num_transition (`int`): how many transition frames were inserted.
        alignment ([`Alignment`], *optional*): the transform applied to the target (None when alignment was off).
    """

    poses: PoseSequence
    num_transition: int
    alignment: Alignment | None

    @property
    def first_target_frame(self) -> int:
        """Index in `poses` of the first target pose."""
        return 1 + self.num_transition


def pose_alignment_transition(
    source: PoseSequence,
    target: Poses,
    *,
    transition_frames: int | None = None,
    max_step: float = 0.05,
    align: bool = True,
) -> PataResult:
    """Aligns the target poses to the source pose and inserts transition frames from the source pose to them (PATA).

    Args:
        source ([`PoseSequence`]): the source pose (one frame), e.g. from [`detect_source_pose`].
        target ([`PoseSequence`]): the target pose sequence. Rendered pose images cannot be aligned (a
            [`~zeroshot.errors.ZeroshotError`] says so).
        transition_frames (`int`, *optional*): how many transition frames to insert; by default as many as keep each
            shared joint's step under `max_step`.
        max_step (`float`, *optional*, defaults to 0.05): the largest step per frame of a joint in the automatic
            transition, as a fraction of the longer side of the source canvas.
        align (`bool`, *optional*, defaults to `True`): fit and apply the similarity transform; when False the target
            keypoints are placed on the source canvas by their normalised coordinates, as they are.

    Returns:
        [`PataResult`]: the poses (source, transition, aligned target) and what was done.

    Example:

    ```py
    >>> from zeroshot.poses import detect_source_pose, load_poses, pose_alignment_transition
    >>> from zeroshot.video import load_image
    >>> source = detect_source_pose(load_image("character.png"))
    >>> result = pose_alignment_transition(source, load_poses("dance.json"))
    >>> conditions = result.poses.render(512, 512)  # one OpenPose image per animation frame
    ```
    """
    if len(source) != 1:
        raise ValueError(f"source must hold one pose, got {len(source)} frames.")
    if transition_frames is not None and not 0 <= transition_frames <= MAX_TRANSITION_FRAMES:
        raise ValueError(
            f"transition_frames must lie in [0, {MAX_TRANSITION_FRAMES}] (every frame costs a full generation), got "
            f"{transition_frames}."
        )
    if not max_step > 0:
        raise ValueError(f"max_step must be positive, got {max_step}.")
    target = require_keypoints(target, "aligned to the source pose" if align else "given transition frames")
    if len(target) == 0:
        raise ZeroshotError("The target pose sequence holds no frames: give at least one pose.")
    if not source.visible.any():
        raise ZeroshotError("The source pose has no keypoints: give a source pose in which the person is visible.")
    alignment = fit_alignment(source, target) if align else None
    aligned = apply_alignment(target, alignment, source.size)
    if alignment is not None:
        alignment = fit_head(source, aligned, alignment)
        aligned = apply_head(aligned, alignment)
    if transition_frames is None:
        transition_frames = transition_length(source, aligned[0], max_step)
    transition = transition_poses(source, aligned[0], transition_frames)
    poses = _concatenate([source, transition, aligned], fps=target.fps, source_name=target.source)
    return PataResult(poses, transition_frames, alignment)


def fit_alignment(source: PoseSequence, target: PoseSequence) -> Alignment:
    """Fits PATA's similarity transform on the first target frame that shows a person (see the module notes).

    Args:
        source ([`PoseSequence`]): the source pose (its first frame is used).
        target ([`PoseSequence`]): the target poses.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no target frame shows a person.
    """
    with_person = np.flatnonzero(target.visible.any(axis=1))
    if len(with_person) == 0:
        raise ZeroshotError("No target frame shows a person, so the poses cannot be aligned: give poses of a person.")
    reference = int(with_person[0])
    if reference:
        logger.info("Target frame 0 shows no person; aligning on frame %d, the first that does.", reference)
    source_points, source_visible = source.pixels()[0], source.visible[0]
    target_points, target_visible = target.pixels()[reference], target.visible[reference]
    shared = source_visible & target_visible

    scale = 1.0
    for limbs in (BODY_LIMBS, _FACE_LIMBS):
        limbs = [limb for limb in limbs if shared[list(limb)].all()]
        target_length = sum(np.linalg.norm(target_points[a] - target_points[b]) for a, b in limbs)
        if target_length > 0:
            scale = sum(np.linalg.norm(source_points[a] - source_points[b]) for a, b in limbs) / target_length
            break
    else:
        logger.warning("The source and target poses share no limb; aligning position only, at scale 1.")

    hips = [RIGHT_HIP, LEFT_HIP]
    if shared[NECK]:
        anchor, source_anchor, target_anchor = "neck", source_points[NECK], target_points[NECK]
    elif shared[hips].all():
        anchor, source_anchor, target_anchor = "mid-hip", source_points[hips].mean(0), target_points[hips].mean(0)
    elif shared.any():
        anchor = "shared joints"
        source_anchor, target_anchor = source_points[shared].mean(0), target_points[shared].mean(0)
    else:
        anchor = "centroids"
        source_anchor = source_points[source_visible].mean(0)
        target_anchor = target_points[target_visible].mean(0)
    offset = source_anchor - scale * target_anchor
    return Alignment(float(scale), (float(offset[0]), float(offset[1])), anchor, reference)


def apply_alignment(poses: PoseSequence, alignment: Alignment | None, size: tuple[int, int]) -> PoseSequence:
    """Maps poses onto a canvas of `size` with `alignment` (None: by their normalised coordinates, unchanged).

    Args:
        poses ([`PoseSequence`]): poses on their own canvas.
        alignment ([`Alignment`], *optional*): from [`fit_alignment`].
        size (`tuple[int, int]`): `(width, height)` of the canvas to map onto (the source's).
    """
    if alignment is None:
        return PoseSequence(poses.body, size, poses.fps, poses.face, poses.hands, poses.source)
    from_size, to_size = np.asarray(poses.size, np.float64), np.asarray(size, np.float64)
    offset = np.asarray(alignment.offset)

    def mapped(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        result = points.copy()
        result[..., :2] = (alignment.scale * points[..., :2] * from_size + offset) / to_size
        result[points[..., 2] <= 0] = 0.0
        return result

    return PoseSequence(mapped(poses.body), size, poses.fps, mapped(poses.face), mapped(poses.hands), poses.source)


def fit_head(source: PoseSequence, aligned: PoseSequence, alignment: Alignment) -> Alignment:
    """`alignment` with the head retargeting fitted (see the module notes): the head scale is the ratio of the summed
    distances from the nose to the eyes and ears shown in both the source and the aligned reference frame (1 when
    none is), and the offset puts the reference frame's nose at the source's position relative to the neck. Without a
    nose and neck in both, the head is left as the body's transform put it.

    Args:
        source ([`PoseSequence`]): the source pose.
        aligned ([`PoseSequence`]): the target poses after [`apply_alignment`], on the source canvas.
        alignment ([`Alignment`]): the body's transform.
    """
    reference = alignment.reference_frame
    source_points, source_visible = source.pixels()[0], source.visible[0]
    target_points, target_visible = aligned.pixels()[reference], aligned.visible[reference]
    if not (source_visible[[NOSE, NECK]].all() and target_visible[[NOSE, NECK]].all()):
        return alignment
    shared = [joint for joint in _HEAD_JOINTS[1:] if source_visible[joint] and target_visible[joint]]
    head_scale = 1.0
    if shared:
        target_size = np.linalg.norm(target_points[shared] - target_points[NOSE], axis=-1).sum()
        if target_size > 0:
            head_scale = float(
                np.linalg.norm(source_points[shared] - source_points[NOSE], axis=-1).sum() / target_size
            )
    source_head = source_points[NOSE] - source_points[NECK]
    offset = source_head - head_scale * (target_points[NOSE] - target_points[NECK])
    return dataclasses.replace(alignment, head_scale=head_scale, head_offset=(float(offset[0]), float(offset[1])))


def apply_head(poses: PoseSequence, alignment: Alignment) -> PoseSequence:
    """Moves the head joints and face points of every frame as [`fit_head`] fitted: scaled by `head_scale` about the
    frame's neck, then shifted by `head_offset` (frames without a neck are only shifted)."""
    size = np.asarray(poses.size, np.float64)
    pixels = poses.pixels()
    neck = np.where(poses.visible[:, NECK, None], pixels[:, NECK], np.nan)
    offset = np.asarray(alignment.head_offset)

    def moved(points: np.ndarray) -> np.ndarray:
        result = points.copy()
        centre = neck.reshape(len(poses), *([1] * (points.ndim - 2)), 2)
        xy = points[..., :2] * size
        scaled = np.where(np.isnan(centre), xy, centre + alignment.head_scale * (xy - centre))
        result[..., :2] = (scaled + offset) / size
        result[points[..., 2] <= 0] = 0.0
        return result

    body = poses.body.copy()
    body[:, list(_HEAD_JOINTS)] = moved(poses.body[:, list(_HEAD_JOINTS)])
    face = None if poses.face is None else moved(poses.face)
    return dataclasses.replace(poses, body=body, face=face)


def transition_length(start: PoseSequence, end: PoseSequence, max_step: float = 0.05) -> int:
    """How many frames between `start` and `end` (one pose each, same canvas) keep every joint's step under
    `max_step` times the canvas's longer side, measured along the path [`transition_poses`] interpolates (limbs turn
    on arcs, which are longer than the straight line between their ends)."""
    shared = start.visible[0] & end.visible[0]
    if not shared.any():
        return 0
    limit = max_step * max(start.size)
    distance = np.linalg.norm(start.pixels()[0, shared] - end.pixels()[0, shared], axis=-1).max()
    count = max(0, math.ceil(distance / limit - 1e-9) - 1)  # the straight line: a lower bound
    while True:
        step = largest_step(
            _concatenate([start, transition_poses(start, end, count), end], fps=None, source_name=None)
        )
        if step <= limit * (1 + 1e-9):
            return count
        count = max(count + 1, math.ceil((count + 1) * step / limit) - 1)


def largest_step(poses: PoseSequence) -> float:
    """The longest move in pixels of a body joint between consecutive frames in which it is shown (0 for none)."""
    pixels, visible = poses.pixels(), poses.visible
    steps = np.linalg.norm(np.diff(pixels, axis=0), axis=-1)[visible[1:] & visible[:-1]]
    return float(steps.max()) if len(steps) else 0.0


def transition_poses(start: PoseSequence, end: PoseSequence, count: int) -> PoseSequence:
    """`count` poses strictly between `start` and `end` (one pose each, same canvas), at fractions `k / (count + 1)`,
    limb angles and lengths interpolated around parent joints (see the module notes).

    Args:
        start ([`PoseSequence`]): the pose to leave.
        end ([`PoseSequence`]): the pose to reach.
        count (`int`): how many poses to make.
    """
    if len(start) != 1 or len(end) != 1 or start.size != end.size:
        raise ValueError("start and end must be single poses on the same canvas.")
    size = np.asarray(start.size, np.float64)
    start_body, end_body = _pixel_points(start.body[0], size), _pixel_points(end.body[0], size)
    attached = []  # (name, start points, end points, anchor joint of each point, shape of one frame)
    if start.face is not None or end.face is not None:
        anchors = np.full(NUM_FACE_POINTS, NOSE)
        attached.append(("face", *_attached_pair(start.face, end.face, size, NUM_FACE_POINTS), anchors))
    if start.hands is not None or end.hands is not None:
        anchors = np.repeat([LEFT_WRIST, RIGHT_WRIST], NUM_HAND_POINTS)
        attached.append(("hands", *_attached_pair(start.hands, end.hands, size, 2 * NUM_HAND_POINTS), anchors))
    shapes = {"face": (NUM_FACE_POINTS, 3), "hands": (2, NUM_HAND_POINTS, 3)}
    bodies = np.zeros((count, NUM_JOINTS, 3))
    extras = {name: np.zeros((count, *shapes[name])) for name, *_ in attached}
    for k in range(count):
        alpha = (k + 1) / (count + 1)
        body = _interpolate_body(start_body, end_body, alpha)
        bodies[k] = _normalised(body, size)
        for name, start_points, end_points, anchors in attached:
            points = _interpolate_attached(start_points, end_points, start_body, end_body, body, anchors, alpha)
            extras[name][k] = _normalised(points, size).reshape(shapes[name])
    return PoseSequence(bodies, start.size, face=extras.get("face"), hands=extras.get("hands"))


def _attached_pair(
    start: np.ndarray | None, end: np.ndarray | None, size: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first frame of two optional point arrays, flattened to `[count, 3]` in pixels (zeros when absent)."""
    return tuple(
        np.zeros((count, 3)) if points is None else _pixel_points(points[0].reshape(count, 3), size)
        for points in (start, end)
    )


def _pixel_points(points: np.ndarray, size: np.ndarray) -> np.ndarray:
    result = points.copy()
    result[..., :2] *= size
    return result


def _normalised(points: np.ndarray, size: np.ndarray) -> np.ndarray:
    result = points.copy()
    result[..., :2] /= size
    return result


def _interpolate_body(start: np.ndarray, end: np.ndarray, alpha: float) -> np.ndarray:
    """One transition pose in pixels: `[18, 3]`, missing joints at zero."""
    start_visible, end_visible = start[:, 2] > 0, end[:, 2] > 0
    out = np.zeros_like(start)
    for joint in TREE_ORDER:
        parent = PARENT[joint]
        parent_shared = parent >= 0 and start_visible[parent] and end_visible[parent] and out[parent, 2] > 0
        if start_visible[joint] and end_visible[joint]:
            if parent_shared:
                out[joint, :2] = out[parent, :2] + _turn(
                    start[joint, :2] - start[parent, :2], end[joint, :2] - end[parent, :2], alpha
                )
            else:
                out[joint, :2] = (1 - alpha) * start[joint, :2] + alpha * end[joint, :2]
            out[joint, 2] = (1 - alpha) * start[joint, 2] + alpha * end[joint, 2]
        elif start_visible[joint] or end_visible[joint]:
            side, side_visible = (start, start_visible) if start_visible[joint] else (end, end_visible)
            if (alpha < 0.5) != bool(start_visible[joint]):
                continue  # shown only in the half of the transition nearer the side that has it
            if parent >= 0 and side_visible[parent] and out[parent, 2] > 0:
                out[joint, :2] = out[parent, :2] + side[joint, :2] - side[parent, :2]
            else:
                out[joint, :2] = side[joint, :2]
            out[joint, 2] = side[joint, 2]
    return out


def _turn(start: np.ndarray, end: np.ndarray, alpha: float) -> np.ndarray:
    """A limb vector turned from `start` towards `end` by `alpha` of the shorter angle, its length interpolated."""
    start_length, end_length = math.hypot(*start), math.hypot(*end)
    start_angle, end_angle = math.atan2(start[1], start[0]), math.atan2(end[1], end[0])
    turn = (end_angle - start_angle + math.pi) % (2 * math.pi) - math.pi
    angle = start_angle + alpha * turn
    length = (1 - alpha) * start_length + alpha * end_length
    return length * np.array([math.cos(angle), math.sin(angle)])


def _interpolate_attached(
    start: np.ndarray,
    end: np.ndarray,
    start_body: np.ndarray,
    end_body: np.ndarray,
    body: np.ndarray,
    anchors: np.ndarray,
    alpha: float,
) -> np.ndarray:
    """Face or hand points (`[points, 3]` in pixels, zero when missing) that follow their anchor body joints."""
    start_visible, end_visible = start[:, 2] > 0, end[:, 2] > 0
    placed = body[anchors, 2] > 0
    out = np.zeros_like(start)

    both = start_visible & end_visible
    follows = placed & (start_body[anchors, 2] > 0) & (end_body[anchors, 2] > 0)
    offsets = (1 - alpha) * (start[:, :2] - start_body[anchors, :2]) + alpha * (end[:, :2] - end_body[anchors, :2])
    moved = np.where(follows[:, None], body[anchors, :2] + offsets, (1 - alpha) * start[:, :2] + alpha * end[:, :2])
    out[both, :2] = moved[both]
    out[both, 2] = (1 - alpha) * start[both, 2] + alpha * end[both, 2]

    from_start = start_visible & ~end_visible
    shown = (start_visible ^ end_visible) & np.where(from_start, alpha < 0.5, alpha >= 0.5)
    side = np.where(from_start[:, None], start, end)
    side_anchor = np.where(from_start[:, None], start_body[anchors], end_body[anchors])
    rigid = (placed & (side_anchor[:, 2] > 0))[:, None]
    carried = np.where(rigid, body[anchors, :2] + side[:, :2] - side_anchor[:, :2], side[:, :2])
    out[shown, :2] = carried[shown]
    out[shown, 2] = side[shown, 2]
    return out


def _concatenate(parts: list[PoseSequence], *, fps: float | None, source_name: str | None) -> PoseSequence:
    def joined(name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        arrays = [getattr(part, name) for part in parts]
        if all(array is None for array in arrays):
            return None
        return np.concatenate(
            [
                array if array is not None else np.zeros((len(part), *shape))
                for part, array in zip(parts, arrays, strict=True)
            ]
        )

    return PoseSequence(
        np.concatenate([part.body for part in parts]),
        parts[0].size,
        fps=fps,
        face=joined("face", (NUM_FACE_POINTS, 3)),
        hands=joined("hands", (2, NUM_HAND_POINTS, 3)),
        source=source_name,
    )
