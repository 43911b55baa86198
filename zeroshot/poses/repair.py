"""Repair of extracted pose sequences: one person kept, left and right made consistent, implausible joints rejected,
short gaps filled, then One-Euro smoothing, in that order (each step trusts what the one before it left).

Example:

```py
>>> from zeroshot.poses import RepairSettings, repair_poses
>>> repaired = repair_poses(poses, RepairSettings(max_gap_seconds=0.25))
>>> print(repaired.report.summary())
```
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .mirror import PAIRS, repair_mirrors
from .one_euro import one_euro_filter
from .plausibility import body_scale, fill_gaps, keep_one_person, reject_fast_steps, reject_long_bones
from .sequence import PoseSequence
from .skeleton import NUM_JOINTS

#: Frame rate assumed for sequences that do not say theirs.
DEFAULT_RATE = 30.0
#: Values of [`RepairedPoses.marks`]: a joint as detected, swapped back from a mirror, rejected, or filled.
DETECTED, MIRRORED, REJECTED, FILLED = 0, 1, 2, 3


@dataclass(frozen=True)
class RepairSettings:
    """How pose sequences are repaired (see [`repair_poses`]).

    Args:
        mirrors (`bool`, *optional*, defaults to `True`): make left and right consistent.
        plausibility (`bool`, *optional*, defaults to `True`): keep one person and reject implausible joints.
        max_speed (`float`, *optional*, defaults to 25): the fastest a joint moves, in body sizes (torso length or
            shoulder width) per second; a hand thrown hard moves about 10 m/s, 20 torso lengths per second.
        max_bone_ratio (`float`, *optional*, defaults to 1.6): a bone longer, relative to the body's size, than this
            times its median over the sequence is implausible.
        max_size_change (`float`, *optional*, defaults to 1.5): the largest change of body size between frames.
        max_gap_seconds (`float`, *optional*, defaults to 0.25): gaps of a joint up to this long are interpolated;
            0 fills none.
        smooth (`bool`, *optional*, defaults to `True`): One-Euro smoothing after repair.
        min_cutoff (`float`, *optional*, defaults to 1.0): the One-Euro cutoff at rest, in Hz.
        beta (`float`, *optional*, defaults to 1.0): how fast the One-Euro cutoff rises with speed, per body size.
    """

    mirrors: bool = True
    plausibility: bool = True
    max_speed: float = 25.0
    max_bone_ratio: float = 1.6
    max_size_change: float = 1.5
    max_gap_seconds: float = 0.25
    smooth: bool = True
    min_cutoff: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_speed", "min_cutoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("max_bone_ratio", "max_size_change"):
            if not getattr(self, name) > 1:
                raise ValueError(f"{name} must be above 1, got {getattr(self, name)}.")
        if not self.max_gap_seconds >= 0 or not self.beta >= 0:
            raise ValueError(
                f"max_gap_seconds and beta must be 0 or more, got {self.max_gap_seconds} and {self.beta}."
            )


@dataclass
class RepairReport:
    """What a repair did, in counts (see [`repair_poses`]).

    Args:
        frames (`int`): frames in the sequence.
        frames_with_person (`int`): frames with any keypoint after repair.
        people_seen (`int`): distinct people (or invented skeletons) the detector jumped between; one was kept.
        frames_of_others (`int`): frames dropped because they showed another person.
        mirrored_frames (`int`): frames in which a left/right pair was swapped back.
        mirrored_joints (`int`): joints swapped back, over all frames.
        joints_rejected (`int`): implausible joints marked missing (too long a bone, too fast a step).
        joints_filled (`int`): joints filled in short gaps.
        fps (`float`): the frame rate the time limits were computed with.
    """

    frames: int
    frames_with_person: int
    people_seen: int
    frames_of_others: int
    mirrored_frames: int
    mirrored_joints: int
    joints_rejected: int
    joints_filled: int
    fps: float

    def summary(self) -> str:
        """One line for people."""
        if self.frames == 1:
            return "a single frame: nothing to check over time (mirrors, jumps and gaps need several frames)"
        others = ""
        if self.people_seen > 1:
            others = (
                f"; {self.people_seen} people seen, kept the largest, most central one ({self.frames_of_others} "
                f"frames of the others dropped)"
            )
        return (
            f"repaired {self.mirrored_frames} mirrored frames ({self.mirrored_joints} joints), rejected "
            f"{self.joints_rejected} implausible joints, filled {self.joints_filled} in short gaps{others}"
        )


@dataclass
class RepairedPoses:
    """The result of [`repair_poses`].

    Args:
        poses ([`PoseSequence`]): the repaired poses.
        marks (`np.ndarray`): `[frames, 18]` what happened to each body joint: `DETECTED`, `MIRRORED`, `REJECTED`
            (now missing) or `FILLED`.
        report ([`RepairReport`]): the counts.
    """

    poses: PoseSequence
    marks: np.ndarray
    report: RepairReport


def repair_poses(
    poses: PoseSequence, settings: RepairSettings | None = None, *, facing: np.ndarray | None = None
) -> RepairedPoses:
    """Repairs a pose sequence: one person kept, mirrors undone, implausible joints rejected, short gaps filled, then
    smoothed (see [`RepairSettings`] and the modules `mirror`, `plausibility` and `one_euro`).

    Args:
        poses ([`PoseSequence`]): the detected poses.
        settings ([`RepairSettings`], *optional*): what to do; the defaults by default.
        facing (`np.ndarray`, *optional*): `[frames]` facing from the detector's depth (1 towards the camera, -1 away,
            NaN unknown), as in [`PoseExtraction.facing`].

    Returns:
        [`RepairedPoses`]: poses, per-joint marks and counts.
    """
    settings = settings or RepairSettings()
    rate = poses.fps or DEFAULT_RATE
    window = max(1, round(rate))  # running medians over two seconds
    marks = np.full((len(poses), NUM_JOINTS), DETECTED, dtype=np.int8)
    people, others = 1, 0
    if settings.plausibility:
        poses, people, others = _keep_one_person(poses, settings, rate, window, marks)
    scale = body_scale(poses.body, poses.size, window)
    reach = settings.max_speed * scale / rate  # pixels per frame
    swapped = np.zeros((len(poses), len(PAIRS)), dtype=bool)
    if settings.mirrors:
        mirror = repair_mirrors(poses, scale, facing)
        poses, swapped = mirror.poses, mirror.swapped
        for index, (_, joints, _) in enumerate(PAIRS):
            moved = swapped[:, index, None] & (poses.body[:, list(joints), 2] > 0)
            marks[:, list(joints)] = np.where(moved, MIRRORED, marks[:, list(joints)])
    mirrored_joints = int((marks == MIRRORED).sum())
    body = poses.body.copy()
    if settings.plausibility:
        _reject_implausible(body, poses.size, settings, rate, scale, marks)
    rejected = int((marks == REJECTED).sum())
    filled = _fill_gaps(body, poses.size, round(settings.max_gap_seconds * rate), reach, marks)
    poses = dataclasses.replace(poses, body=body)
    if settings.smooth:
        poses = _smooth(poses, settings, rate, unit=float(np.median(scale)))
    report = RepairReport(
        frames=len(poses),
        frames_with_person=int(poses.visible.any(axis=1).sum()),
        people_seen=people,
        frames_of_others=others,
        mirrored_frames=int(swapped.any(axis=1).sum()),
        mirrored_joints=mirrored_joints,
        joints_rejected=rejected,
        joints_filled=filled,
        fps=float(rate),
    )
    return RepairedPoses(poses, marks, report)


def _keep_one_person(
    poses: PoseSequence, settings: RepairSettings, rate: float, window: int, marks: np.ndarray
) -> tuple[PoseSequence, int, int]:
    """The poses with other people's frames emptied (face and hands too, marked rejected), the number of people
    seen, and the number of frames dropped."""
    scale = body_scale(poses.body, poses.size, window)
    kept, people = keep_one_person(poses.body, poses.size, scale, settings.max_speed / rate, settings.max_size_change)
    dropped = ~kept
    marks[dropped[:, None] & poses.visible] = REJECTED
    emptied = {
        name: np.where(_frames_axis(dropped, points), 0.0, points)
        for name in ("body", "face", "hands")
        if (points := getattr(poses, name)) is not None
    }
    return dataclasses.replace(poses, **emptied), people, int(dropped.sum())


def _reject_implausible(
    body: np.ndarray,
    size: tuple[int, int],
    settings: RepairSettings,
    rate: float,
    scale: np.ndarray,
    marks: np.ndarray,
) -> None:
    """Marks joints with too long a bone or too fast a step missing in `body`, and rejected in `marks`."""
    reach = settings.max_speed * scale / rate
    wrong = reject_long_bones(body, size, scale, settings.max_bone_ratio)
    body[wrong] = 0.0
    pixels, seen = body[..., :2] * np.asarray(size, np.float64), body[..., 2] > 0
    restart = max(1, math.ceil(settings.max_gap_seconds * rate))
    fast = np.stack([reject_fast_steps(pixels[:, j], seen[:, j], reach, restart) for j in range(NUM_JOINTS)], 1)
    body[fast] = 0.0
    marks[wrong | fast] = REJECTED


def _fill_gaps(body: np.ndarray, size: tuple[int, int], max_gap: int, reach: np.ndarray, marks: np.ndarray) -> int:
    """Fills each joint's short gaps in `body` (see `plausibility.fill_gaps`), marks them, and returns their count."""
    if max_gap <= 0:
        return 0
    scale = np.asarray(size, np.float64)
    count = 0
    for joint in range(NUM_JOINTS):
        track = body[:, joint].copy()
        track[:, :2] *= scale
        filled = fill_gaps(track, max_gap, reach)
        body[filled, joint, :2] = track[filled, :2] / scale
        body[filled, joint, 2] = track[filled, 2]
        marks[filled, joint] = FILLED
        count += int(filled.sum())
    return count


def _smooth(poses: PoseSequence, settings: RepairSettings, rate: float, unit: float) -> PoseSequence:
    """Body, face and hands through the One-Euro filter, in pixels (speeds in body sizes per second)."""
    options = dict(min_cutoff=settings.min_cutoff, beta=settings.beta, unit=unit)
    smoothed = {
        name: _normalised(one_euro_filter(_in_pixels(points, poses.size), rate, **options), poses.size)
        for name in ("body", "face", "hands")
        if (points := getattr(poses, name)) is not None
    }
    return dataclasses.replace(poses, **smoothed)


def _frames_axis(flags: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`[frames]` booleans shaped to broadcast over `points` (`[frames, ...]`)."""
    return flags.reshape(len(flags), *([1] * (points.ndim - 1)))


def _in_pixels(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    result = points.copy()
    result[..., :2] *= np.asarray(size, np.float64)
    return result


def _normalised(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    result = points.copy()
    result[..., :2] /= np.asarray(size, np.float64)
    return result
