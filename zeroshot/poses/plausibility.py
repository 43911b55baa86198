"""Plausibility: joints a body could not have are marked missing rather than trusted, and short gaps are filled.

All distances are in units of the body's size (see [`body_scale`]), all speeds in body sizes per second, so the same
limits hold for a person far away or close up, at any frame rate.

- **One person.** mediapipe tracks one person and jumps to another one (or invents a small skeleton) without saying
  so. The sequence is cut where the whole skeleton jumps (its centre moves, or its size changes, faster than a body
  can); the pieces are grouped into people by whether one could have walked to the other in the time between them,
  and the person with the largest, most central body is kept. Frames of other people are marked empty.
- **Bones.** A joint whose bone to its parent, relative to the body's size, is far longer than that bone's median
  relative length over the sequence is rejected (foreshortening only ever shortens bones).
- **Speed.** Each joint's track is followed from its longest stretch of plausible steps, forwards and backwards;
  a detection further from the last kept one than the joint could have moved is rejected.
- **Gaps.** Gaps of a joint up to `max_gap` frames between two kept detections are filled by linear interpolation
  when that needs no step faster than the limit; longer gaps stay missing.
"""

from __future__ import annotations

import itertools

import numpy as np

from .skeleton import JOINT, LIMBS, NECK

_SHOULDERS = [JOINT["right_shoulder"], JOINT["left_shoulder"]]
_HIPS = [JOINT["right_hip"], JOINT["left_hip"]]


def frame_sizes(body: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[frames]` body size in pixels of each frame (NaN when it cannot be told): the longer of the torso (neck to
    mid-hip) and the shoulder width; when neither shows, the longer side of the visible joints' box."""
    points, seen = body[..., :2] * np.asarray(size, np.float64), body[..., 2] > 0
    hips = seen[:, _HIPS].all(axis=1) & seen[:, NECK]
    torso = np.linalg.norm(points[:, NECK] - points[:, _HIPS].mean(axis=1), axis=-1)
    shoulders = np.linalg.norm(points[:, _SHOULDERS[0]] - points[:, _SHOULDERS[1]], axis=-1)
    shoulders = np.where(seen[:, _SHOULDERS].all(axis=1), shoulders, np.nan)
    sizes = np.fmax(np.where(hips, torso, np.nan), shoulders)
    for frame in np.flatnonzero(np.isnan(sizes) & (seen.sum(axis=1) >= 2)):
        box = np.ptp(points[frame, seen[frame]], axis=0)
        sizes[frame] = box.max()
    sizes[sizes <= 0] = np.nan
    return sizes


def body_scale(body: np.ndarray, size: tuple[int, int], window: int) -> np.ndarray:
    """`[frames]` robust body size in pixels: the running median of [`frame_sizes`] over `2 * window + 1` frames,
    the whole sequence's median where a frame has none near it, and the canvas's longer side / 4 without any."""
    sizes = frame_sizes(body, size)
    if np.isnan(sizes).all():
        return np.full(len(body), max(size) / 4)
    running = np.array(
        [_nanmedian(sizes[max(0, t - window) : t + window + 1]) for t in range(len(sizes))], dtype=np.float64
    )
    return np.where(np.isnan(running), np.nanmedian(sizes), running)


def keep_one_person(
    body: np.ndarray, size: tuple[int, int], scale: np.ndarray, max_step: float, max_size_change: float
) -> tuple[np.ndarray, int]:
    """Which frames show the kept person (see the module notes), and how many people were seen.

    Args:
        body (`np.ndarray`): `[frames, 18, 3]` keypoints.
        size (`tuple[int, int]`): the canvas `(width, height)`.
        scale (`np.ndarray`): `[frames]` body size in pixels.
        max_step (`float`): the furthest the body's centre moves per frame, in body sizes.
        max_size_change (`float`): the largest ratio of body sizes between consecutive frames.

    Returns:
        `tuple[np.ndarray, int]`: `[frames]` booleans (True: a frame of the kept person, or a frame without anyone)
        and the number of people seen.
    """
    points, seen = body[..., :2] * np.asarray(size, np.float64), body[..., 2] > 0
    present = np.flatnonzero(seen.any(axis=1))
    keep = np.ones(len(body), dtype=bool)
    if len(present) == 0:
        return keep, 0
    centres = np.stack([points[t, seen[t]].mean(axis=0) for t in present])
    sizes = frame_sizes(body[present], size)
    sizes = np.where(np.isnan(sizes), scale[present], sizes)

    def continues(a: int, b: int) -> bool:
        """Could the body of present frame a become that of present frame b?"""
        frames = present[b] - present[a]
        reach = max_step * frames * max(scale[present[a]], scale[present[b]])
        ratio = max(sizes[a], sizes[b]) / min(sizes[a], sizes[b])
        return bool(np.linalg.norm(centres[b] - centres[a]) <= reach and ratio <= max_size_change ** min(frames, 4))

    pieces = [[0]]
    for index in range(1, len(present)):
        if continues(index - 1, index):
            pieces[-1].append(index)
        else:
            pieces.append([index])
    people: list[list[list[int]]] = []
    for piece in pieces:
        for person in people:
            if continues(person[-1][-1], piece[0]):
                person.append(piece)
                break
        else:
            people.append([piece])
    if len(people) == 1:
        return keep, 1
    canvas_centre = np.asarray(size, np.float64) / 2

    def score(person: list[list[int]]) -> float:
        members = [index for piece in person for index in piece]
        offset = np.linalg.norm(np.median(centres[members], axis=0) - canvas_centre) / np.linalg.norm(canvas_centre)
        return float(np.median(sizes[members]) * (1 - offset) * min(1.0, len(members) / 3))

    chosen = max(people, key=score)
    keep[present] = False
    keep[present[[index for piece in chosen for index in piece]]] = True
    return keep, len(people)


def reject_long_bones(body: np.ndarray, size: tuple[int, int], scale: np.ndarray, max_ratio: float) -> np.ndarray:
    """`[frames, 18]` booleans: joints whose bone to their parent, relative to the body's size in that frame, is over
    `max_ratio` times that bone's median relative length over the sequence (so a joint wrong for a long stretch is
    found as well as one wrong for a frame, and a person walking towards the camera keeps their bones)."""
    points, seen = body[..., :2] * np.asarray(size, np.float64), body[..., 2] > 0
    rejected = np.zeros(seen.shape, dtype=bool)
    for parent, child in LIMBS:
        both = seen[:, parent] & seen[:, child]
        if not both.any():
            continue
        relative = np.linalg.norm(points[:, child] - points[:, parent], axis=-1) / scale
        rejected[:, child] |= both & (relative > max_ratio * np.median(relative[both]))
    return rejected


def reject_fast_steps(points: np.ndarray, seen: np.ndarray, reach: np.ndarray, restart: int) -> np.ndarray:
    """`[frames]` booleans: detections of one joint that lie further from the last kept one than it could move.

    Args:
        points (`np.ndarray`): `[frames, 2]` positions in pixels.
        seen (`np.ndarray`): `[frames]` presence.
        reach (`np.ndarray`): `[frames]` furthest step per frame in pixels.
        restart (`int`): after this many rejected frames in a row the track starts again from the next detection.
    """
    frames = np.flatnonzero(seen)
    rejected = np.zeros(len(points), dtype=bool)
    if len(frames) < 2:
        return rejected
    steps = np.linalg.norm(np.diff(points[frames], axis=0), axis=-1)
    allowed = reach[frames[1:]] * np.diff(frames)
    good = steps <= allowed
    # The longest stretch of plausible steps anchors the track.
    best_start, best_length, start = 0, 0, 0
    for index in range(len(good) + 1):
        if index == len(good) or not good[index]:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = index + 1
    anchor = best_start
    for direction in (1, -1):
        last = anchor
        run = 0
        order = range(anchor + 1, len(frames)) if direction == 1 else range(anchor - 1, -1, -1)
        for index in order:
            gap = abs(int(frames[index]) - int(frames[last]))
            limit = max(reach[frames[index]], reach[frames[last]]) * gap
            if np.linalg.norm(points[frames[index]] - points[frames[last]]) <= limit or run >= restart:
                last, run = index, 0
            else:
                rejected[frames[index]] = True
                run += 1
    return rejected


def fill_gaps(points: np.ndarray, max_gap: int, reach: np.ndarray) -> np.ndarray:
    """Fills gaps of up to `max_gap` frames between two present points of one joint (`[frames, 3]`, pixels and
    confidence) by linear interpolation, where no filled step exceeds `reach` (`[frames]`, pixels per frame). The
    confidence of a filled point is the lower of its two ends'. Returns `[frames]` booleans: the filled frames.
    """
    present = np.flatnonzero(points[:, 2] > 0)
    filled = np.zeros(len(points), dtype=bool)
    for before, after in itertools.pairwise(present):
        gap = after - before - 1
        if gap == 0 or gap > max_gap:
            continue
        start, end = points[before], points[after]
        if np.linalg.norm(end[:2] - start[:2]) / (gap + 1) > reach[before : after + 1].min():
            continue
        weights = (np.arange(1, gap + 1) / (gap + 1))[:, None]
        points[before + 1 : after, :2] = (1 - weights) * start[:2] + weights * end[:2]
        points[before + 1 : after, 2] = min(start[2], end[2])
        filled[before + 1 : after] = True
    return filled


def _nanmedian(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")
