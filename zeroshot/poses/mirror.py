"""Left/right consistency: finding and undoing mirrored skeletons in a pose sequence.

Detectors swap a person's left and right, for the whole body (mediapipe on people facing the camera) or for one
limb pair (legs crossing in a side view). Each left/right pair of joints is decided over the whole sequence at once:
a two-state Viterbi path (labels kept or swapped in each frame) that minimises, in units of the body's size,

- **continuity** with the neighbouring frames (each joint's step between frames, both directions, since the path is
  optimal over the sequence and not chosen greedily frame by frame);
- **attachment** to the pair above it, already decided (elbows to shoulders, wrists to elbows, hips to shoulders,
  knees to hips, ankles to knees, ears to eyes): each joint nearer its own side's parent than the other's;
- **facing**, for shoulders, hips and eyes: a person facing the camera shows their right side on the image's left.
  The facing comes from the face (a visible nose with both eyes: towards the camera) plus half the facing of the
  detector's 3D landmarks (nose in front of the ears). The 3D landmarks alone cannot be trusted: measured on the
  sports2d demo, mediapipe turns its depth round together with its labels when it mirrors a person (facing 1.0, then
  -1.0 in the five mirrored frames, then 1.0 again), so they only tip the balance where the face is not seen.

Hands follow their wrists: a swapped wrist pair swaps the two hands too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .sequence import PoseSequence
from .skeleton import JOINT, NOSE

#: Left/right pairs as (right joint, left joint), each with the pair it attaches to (None for none), in the order
#: they are decided: a pair's parent pair is always decided before it.
PAIRS: tuple[tuple[str, tuple[int, int], str | None], ...] = (
    ("shoulders", (JOINT["right_shoulder"], JOINT["left_shoulder"]), None),
    ("elbows", (JOINT["right_elbow"], JOINT["left_elbow"]), "shoulders"),
    ("wrists", (JOINT["right_wrist"], JOINT["left_wrist"]), "elbows"),
    ("hips", (JOINT["right_hip"], JOINT["left_hip"]), "shoulders"),
    ("knees", (JOINT["right_knee"], JOINT["left_knee"]), "hips"),
    ("ankles", (JOINT["right_ankle"], JOINT["left_ankle"]), "knees"),
    ("eyes", (JOINT["right_eye"], JOINT["left_eye"]), None),
    ("ears", (JOINT["right_ear"], JOINT["left_ear"]), "eyes"),
)
_FACING_PAIRS = ("shoulders", "hips", "eyes")
#: Weights of the three costs (continuity counts once per joint, in body sizes per frame).
CONTINUITY_WEIGHT, ATTACHMENT_WEIGHT, FACING_WEIGHT = 1.0, 0.5, 1.0
#: Cost per shown joint of swapping a pair: a tie-breaker, so that labels are kept where nothing else decides.
SWAP_COST = 1e-3
#: Weight of the detector's 3D facing next to the face's.
DEPTH_FACING_WEIGHT = 0.5


@dataclass
class MirrorRepair:
    """Poses with consistent left and right, and what was swapped.

    Args:
        poses ([`PoseSequence`]): the repaired poses.
        swapped (`np.ndarray`): `[frames, len(PAIRS)]` booleans, True where a pair's labels were swapped.
    """

    poses: PoseSequence
    swapped: np.ndarray

    @property
    def mirrored_frames(self) -> int:
        """Frames in which at least one pair was swapped."""
        return int(self.swapped.any(axis=1).sum())


def repair_mirrors(poses: PoseSequence, scale: np.ndarray, facing: np.ndarray | None = None) -> MirrorRepair:
    """Makes left and right consistent over the sequence (see the module notes).

    Args:
        poses ([`PoseSequence`]): the poses.
        scale (`np.ndarray`): `[frames]` body size in pixels of each frame (see `plausibility.body_scale`); costs are
            divided by it.
        facing (`np.ndarray`, *optional*): `[frames]` facing from the detector's depth (1 towards the camera, -1 away,
            NaN unknown), added at half weight to the facing read from the face.

    Returns:
        [`MirrorRepair`]: the poses with swapped pairs put back, and which pairs were swapped in which frame.
    """
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != (len(poses),) or not (scale > 0).all():
        raise ValueError(f"scale must hold one positive size per frame ({len(poses)}), got shape {scale.shape}.")
    size = np.asarray(poses.size, np.float64)
    body = poses.body.copy()
    body[..., :2] *= size  # costs are measured in pixels
    depth = np.zeros(len(poses)) if facing is None else np.asarray(facing, dtype=np.float64)
    if depth.shape != (len(poses),):
        raise ValueError(f"facing must hold one value per frame ({len(poses)}), got shape {depth.shape}.")
    facing = np.clip(_facing_from_face(poses) + DEPTH_FACING_WEIGHT * np.nan_to_num(depth), -1.0, 1.0)
    swapped = np.zeros((len(poses), len(PAIRS)), dtype=bool)
    pair_joints = {name: joints for name, joints, _ in PAIRS}
    for index, (name, joints, parent) in enumerate(PAIRS):
        unary = np.zeros((len(poses), 2))
        unary[:, 1] = SWAP_COST * (body[:, list(joints), 2] > 0).sum(axis=1)
        if parent is not None:
            unary += ATTACHMENT_WEIGHT * _attachment_cost(body, joints, pair_joints[parent], scale)
        if name in _FACING_PAIRS:
            unary += FACING_WEIGHT * _facing_cost(body, joints, facing, scale)
        swapped[:, index] = _viterbi(unary, _continuity_cost(body, joints, scale))
        frames = np.flatnonzero(swapped[:, index])
        body[np.ix_(frames, joints)] = body[np.ix_(frames, joints[::-1])]
    hands = poses.hands
    wrists = next(index for index, (name, _, _) in enumerate(PAIRS) if name == "wrists")
    if hands is not None and swapped[:, wrists].any():
        hands = hands.copy()
        frames = np.flatnonzero(swapped[:, wrists])
        hands[frames] = hands[frames, ::-1]
    repaired = poses.body.copy()
    for index, (_, joints, _) in enumerate(PAIRS):
        frames = np.flatnonzero(swapped[:, index])
        repaired[np.ix_(frames, joints)] = repaired[np.ix_(frames, joints[::-1])]
    return MirrorRepair(dataclasses.replace(poses, body=repaired, hands=hands), swapped)


def _positions(body: np.ndarray, joints: tuple[int, int], state: int) -> tuple[np.ndarray, np.ndarray]:
    """`[frames, 2, 2]` positions and `[frames, 2]` presence of the pair with its labels kept (0) or swapped (1)."""
    order = list(joints) if state == 0 else list(joints[::-1])
    return body[:, order, :2], body[:, order, 2] > 0


def _continuity_cost(body: np.ndarray, joints: tuple[int, int], scale: np.ndarray) -> np.ndarray:
    """`[frames - 1, 2, 2]`: cost of going from state a in frame t to state b in frame t + 1: the steps of the joints
    shown in both frames; and where one joint of the pair shows in each frame under different labels, the step
    between them plus the pair's typical spread, the price of a label changing hands."""
    both = (body[:, list(joints), 2] > 0).all(axis=1)
    spreads = np.linalg.norm(body[both, joints[0], :2] - body[both, joints[1], :2], axis=-1)
    spread = float(np.median(spreads)) if len(spreads) else 0.0
    cost = np.zeros((max(len(body) - 1, 0), 2, 2))
    for a in (0, 1):
        before, seen_before = _positions(body[:-1], joints, a)
        for b in (0, 1):
            after, seen_after = _positions(body[1:], joints, b)
            steps = (np.linalg.norm(after - before, axis=-1) * (seen_before & seen_after)).sum(axis=1)
            single = (seen_before.sum(axis=1) == 1) & (seen_after.sum(axis=1) == 1)
            handed = single & (seen_before[:, 0] != seen_after[:, 0])
            point_before = np.where(seen_before[:, :1], before[:, 0], before[:, 1])
            point_after = np.where(seen_after[:, :1], after[:, 0], after[:, 1])
            steps += handed * (np.linalg.norm(point_after - point_before, axis=-1) + spread)
            cost[:, a, b] = CONTINUITY_WEIGHT * steps / scale[1:]
    return cost


def _attachment_cost(
    body: np.ndarray, joints: tuple[int, int], parents: tuple[int, int], scale: np.ndarray
) -> np.ndarray:
    """`[frames, 2]`: how much longer the bones to the parent pair are with each state than the shorter choice."""
    parent_points, parent_seen = body[:, list(parents), :2], body[:, list(parents), 2] > 0
    lengths = np.zeros((len(body), 2))
    for state in (0, 1):
        points, seen = _positions(body, joints, state)
        both = seen & parent_seen
        lengths[:, state] = (np.linalg.norm(points - parent_points, axis=-1) * both).sum(axis=1)
        complete = both.all(axis=1)
        lengths[~complete, state] = 0.0  # one bone alone says nothing about which side is which
    return (lengths - lengths.min(axis=1, keepdims=True)) / scale[:, None]


def _facing_cost(body: np.ndarray, joints: tuple[int, int], facing: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`[frames, 2]`: the right joint should lie on the image's left when facing the camera (right when turned away),
    by as much as the pair is apart."""
    cost = np.zeros((len(body), 2))
    both = (body[:, list(joints), 2] > 0).all(axis=1)
    spread = (body[:, joints[1], 0] - body[:, joints[0], 0]) * both  # left x minus right x, in pixels
    for state, sign in ((0, 1.0), (1, -1.0)):
        agreement = sign * spread * facing
        cost[:, state] = np.maximum(-agreement, 0.0) / scale
    return cost


def _facing_from_face(poses: PoseSequence) -> np.ndarray:
    """`[frames]`: 1 where the nose and both eyes are visible (the person faces the camera), else 0 (unknown)."""
    eyes = [JOINT["right_eye"], JOINT["left_eye"]]
    return (poses.visible[:, NOSE] & poses.visible[:, eyes].all(axis=1)).astype(np.float64)


def _viterbi(unary: np.ndarray, pairwise: np.ndarray) -> np.ndarray:
    """The lowest-cost sequence of states (0 kept, 1 swapped) as `[frames]` booleans; ties keep the labels."""
    frames = len(unary)
    if frames == 0:
        return np.zeros(0, dtype=bool)
    total = unary[0].copy()
    back = np.zeros((frames, 2), dtype=np.int64)
    for t in range(1, frames):
        options = total[:, None] + pairwise[t - 1]  # [from, to]
        back[t] = np.argmin(options, axis=0)
        total = options[back[t], [0, 1]] + unary[t]
    states = np.zeros(frames, dtype=np.int64)
    states[-1] = int(np.argmin(total))
    for t in range(frames - 1, 0, -1):
        states[t - 1] = back[t, states[t]]
    return states.astype(bool)
