"""PATA: the similarity transform and the head's retargeting against float64 math written here, limb lengths through
the transition, the step limit measured along the path on real extracted poses, round trips through the files animate
writes (off-canvas points included), missing joints on either side, and rendered poses refused with a clear message."""

import json
import math

import numpy as np
import pytest

from zeroshot.errors import ZeroshotError
from zeroshot.poses import (
    PoseSequence,
    RenderedPoses,
    apply_alignment,
    detect_source_pose,
    extract_poses,
    load_poses,
    pose_alignment_transition,
    read_openpose_json,
    transition_length,
    transition_poses,
    write_openpose_json,
)
from zeroshot.poses.skeleton import BODY_LIMBS, JOINT, LIMBS, NECK, NOSE, PARENT
from zeroshot.testing import astronaut, sample_video_path
from zeroshot.video import read_video

# A person facing the camera, in pixels of a 512x768 canvas.
STANDING = np.array([
    (256, 120), (256, 190), (196, 196), (176, 290), (170, 380), (316, 196), (336, 290), (342, 380),
    (222, 400), (218, 530), (216, 660), (290, 400), (294, 530), (296, 660), (244, 108), (268, 108),
    (232, 116), (280, 116),
], dtype=np.float64)  # fmt: skip


def _pose(pixels, size, missing=(), fps=None):
    """One-frame or multi-frame sequence from pixel coordinates `[..., 18, 2]`."""
    pixels = np.asarray(pixels, dtype=np.float64)
    pixels = pixels[None] if pixels.ndim == 2 else pixels
    body = np.concatenate([pixels / np.asarray(size, np.float64), np.ones((*pixels.shape[:2], 1))], axis=-1)
    for joint in missing:
        body[:, JOINT[joint] if isinstance(joint, str) else joint] = 0.0
    return PoseSequence(body, size=size, fps=fps)


def _rotate_limbs(pixels, angles):
    """Turns each limb around its parent by `angles[child]` radians, keeping every length (applied down the tree)."""
    out = pixels.copy()
    for parent, child in LIMBS:
        vector = pixels[child] - pixels[parent]
        turn = angles.get(child, 0.0)
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        out[child] = out[parent] + rotation @ vector
    return out


def _limb_lengths(pixels, visible=None):
    return {
        (a, b): float(np.linalg.norm(pixels[a] - pixels[b]))
        for a, b in LIMBS
        if visible is None or (visible[a] and visible[b])
    }


def test_aligned_first_frame_matches_source_anchor_and_scale():
    source = _pose(STANDING, (512, 768))
    # The target person: other proportions, smaller, elsewhere, on a wide canvas, moving over 5 frames.
    rng = np.random.default_rng(0)
    person = STANDING * 0.37 + np.array([400.0, 20.0]) + rng.normal(0, 3, STANDING.shape)
    frames = np.stack([person + np.array([6.0 * k, -2.0 * k]) + rng.normal(0, 2, person.shape) for k in range(5)])
    target = _pose(frames, (1280, 720), missing=["left_ankle"], fps=25.0)
    result = pose_alignment_transition(source, target, transition_frames=4)

    # Expected transform in float64, from the definitions: summed body limb lengths over limbs visible in both.
    shared = [(a, b) for a, b in BODY_LIMBS if JOINT["left_ankle"] not in (a, b)]
    source_total = sum(np.linalg.norm(STANDING[a] - STANDING[b]) for a, b in shared)
    target_total = sum(np.linalg.norm(frames[0, a] - frames[0, b]) for a, b in shared)
    scale = source_total / target_total
    offset = STANDING[NECK] - scale * frames[0, NECK]
    assert result.alignment.anchor == "neck"
    assert result.alignment.scale == pytest.approx(scale, rel=1e-12)

    poses = result.poses
    assert len(poses) == 1 + 4 + 5 and result.first_target_frame == 5
    assert poses.size == (512, 768) and poses.fps == 25.0
    first = poses.pixels()[result.first_target_frame]
    np.testing.assert_allclose(first[NECK], STANDING[NECK], atol=1e-6)
    # One transform for the whole sequence, so the motion is kept, scaled.
    expected = scale * frames + offset
    # The head: scaled about each frame's neck to the source's head size, shifted so the first frame's nose sits
    # where the source's does relative to its neck.
    head = [NOSE, JOINT["right_eye"], JOINT["left_eye"], JOINT["right_ear"], JOINT["left_ear"]]
    source_size = sum(np.linalg.norm(STANDING[j] - STANDING[NOSE]) for j in head[1:])
    head_scale = source_size / sum(np.linalg.norm(expected[0, j] - expected[0, NOSE]) for j in head[1:])
    head_offset = (STANDING[NOSE] - STANDING[NECK]) - head_scale * (expected[0, NOSE] - expected[0, NECK])
    for k in range(5):
        expected[k, head] = expected[k, NECK] + head_scale * (expected[k, head] - expected[k, NECK]) + head_offset
    assert result.alignment.head_scale == pytest.approx(head_scale, rel=1e-9)
    np.testing.assert_allclose(first[NOSE], STANDING[NOSE], atol=1e-6)
    visible = poses.visible[result.first_target_frame :]
    np.testing.assert_allclose(poses.pixels()[result.first_target_frame :][visible], expected[visible], atol=1e-6)
    assert not visible[:, JOINT["left_ankle"]].any()
    np.testing.assert_array_equal(poses.body[0], source.body[0])  # frame 0 is the source pose itself


def test_scale_and_anchor_fall_back_when_joints_are_missing():
    source = _pose(STANDING, (512, 768))
    target = _pose(STANDING * 0.5 + 40, (512, 768), missing=["neck", "nose", "left_eye"])
    result = pose_alignment_transition(source, target, transition_frames=0)
    assert result.alignment.anchor == "mid-hip"
    assert result.alignment.scale == pytest.approx(2.0, rel=1e-12)
    hips = [JOINT["right_hip"], JOINT["left_hip"]]
    np.testing.assert_allclose(result.poses.pixels()[1][hips].mean(0), STANDING[hips].mean(0), atol=1e-6)


def test_transition_turns_limbs_with_their_lengths_kept():
    source = _pose(STANDING, (512, 768))
    angles = {JOINT["right_elbow"]: 2.2, JOINT["right_wrist"]: -1.4, JOINT["left_elbow"]: -2.5, JOINT["nose"]: 0.3}
    end_pixels = _rotate_limbs(STANDING, angles) + np.array([30.0, -12.0])
    end = _pose(end_pixels, (512, 768))
    count = 7
    transition = transition_poses(source, end, count)
    assert len(transition) == count and transition.visible.all()

    start_lengths = _limb_lengths(STANDING)
    for k, pixels in enumerate(transition.pixels(), start=1):
        for limb, length in _limb_lengths(pixels).items():
            assert length == pytest.approx(start_lengths[limb], abs=1e-9), (k, limb)
        # Each limb's angle moves by the same fraction of its turn, the shorter way round.
        alpha = k / (count + 1)
        for child, turn in angles.items():
            parent = PARENT[child]
            before = STANDING[child] - STANDING[parent]
            now = pixels[child] - pixels[parent]
            change = math.atan2(before[0] * now[1] - before[1] * now[0], before @ now)
            assert change == pytest.approx(alpha * turn, abs=1e-9), (k, child)
        # The root moves in a straight line.
        np.testing.assert_allclose(pixels[NECK], STANDING[NECK] + alpha * np.array([30.0, -12.0]), atol=1e-9)


def test_transition_interpolates_lengths_that_differ():
    source = _pose(STANDING, (512, 768))
    end_pixels = STANDING.copy()
    end_pixels[JOINT["right_wrist"]] = STANDING[JOINT["right_elbow"]] + 2.0 * (
        STANDING[JOINT["right_wrist"]] - STANDING[JOINT["right_elbow"]]
    )
    transition = transition_poses(source, _pose(end_pixels, (512, 768)), 3)
    forearm = (JOINT["right_elbow"], JOINT["right_wrist"])
    start_length = np.linalg.norm(STANDING[forearm[1]] - STANDING[forearm[0]])
    for k, pixels in enumerate(transition.pixels(), start=1):
        length = np.linalg.norm(pixels[forearm[1]] - pixels[forearm[0]])
        assert length == pytest.approx(start_length * (1 + k / 4), abs=1e-9)


def test_identity_when_already_aligned():
    rng = np.random.default_rng(1)
    frames = np.stack([STANDING + rng.normal(0, 4, STANDING.shape) for _ in range(4)])
    frames[0] = STANDING
    source, target = _pose(STANDING, (512, 768)), _pose(frames, (512, 768))
    result = pose_alignment_transition(source, target)
    assert result.num_transition == 0
    assert result.alignment.scale == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result.alignment.offset, (0.0, 0.0), atol=1e-9)
    np.testing.assert_allclose(result.poses.body[1:], target.body, atol=1e-12)

    still = pose_alignment_transition(source, target, transition_frames=3)
    np.testing.assert_allclose(still.poses.body[:4], np.repeat(source.body, 4, axis=0), atol=1e-12)


def _measured_steps(poses):
    """`[frames - 1, 18]` pixel steps of each joint between consecutive frames (NaN where not shown in both)."""
    pixels = poses.body[..., :2] * np.asarray(poses.size, np.float64)
    shown = (poses.body[1:, :, 2] > 0) & (poses.body[:-1, :, 2] > 0)
    return np.where(shown, np.sqrt(((pixels[1:] - pixels[:-1]) ** 2).sum(-1)), np.nan)


def test_automatic_transition_length_of_a_straight_move():
    source = _pose(STANDING, (512, 768))
    end = _pose(STANDING + np.array([0.0, -300.0]), (512, 768))  # everything 300 px up: straight lines, no arcs
    expected = math.ceil(300 / 768 / 0.05) - 1
    assert transition_length(source, end, 0.05) == expected == 7
    assert transition_length(source, end, 0.5) == 0
    assert pose_alignment_transition(source, end, max_step=0.05, align=False).num_transition == 7


@pytest.mark.parametrize("max_step", [0.02, 0.05, 0.1])
def test_automatic_transition_honours_the_step_limit_along_arcs(max_step):
    source = _pose(STANDING, (512, 768))
    moved = STANDING.copy()
    moved[JOINT["left_wrist"]] += np.array([0.0, -300.0])  # a forearm swung upward: the wrist travels on an arc
    moved = _rotate_limbs(moved, {JOINT["right_elbow"]: 2.5, JOINT["left_knee"]: -0.8})
    end = _pose(moved, (512, 768))
    result = pose_alignment_transition(source, end, max_step=max_step, align=False)
    limit = max_step * 768
    steps = _measured_steps(result.poses)
    assert np.nanmax(steps) <= limit * (1 + 1e-9)
    straight = math.ceil(np.linalg.norm(moved - STANDING, axis=-1).max() / limit) - 1
    assert result.num_transition > straight  # the straight-line count would break the limit here
    shorter = pose_alignment_transition(source, end, transition_frames=result.num_transition - 1, align=False)
    assert np.nanmax(_measured_steps(shorter.poses)) > limit  # and the count is the smallest that keeps it


def test_missing_joints_on_either_side_do_not_crash():
    source = _pose(STANDING, (512, 768), missing=["left_elbow", "left_wrist", "right_ear"])
    end_pixels = _rotate_limbs(STANDING, {JOINT["right_elbow"]: 1.0})
    target = _pose(end_pixels, (512, 768), missing=["neck", "right_knee", "right_ankle", "right_ear"])
    result = pose_alignment_transition(source, target, transition_frames=4)
    poses = result.poses
    assert np.isfinite(poses.body).all()
    transition = poses.visible[1:5]
    # Shown on one side only: in the half of the transition nearer that side.
    for joint, from_source in [("right_ankle", True), ("left_elbow", False), ("left_wrist", False)]:
        expected = np.array([True, True, False, False]) if from_source else np.array([False, False, True, True])
        np.testing.assert_array_equal(transition[:, JOINT[joint]], expected, err_msg=joint)
    assert not poses.visible[:, JOINT["right_ear"]].any()  # missing on both sides: never shown
    # The neck is missing in the target, so the anchor is the mid-hip and the neck moves with the source's half.
    assert result.alignment.anchor == "mid-hip"
    np.testing.assert_array_equal(transition[:, NECK], [True, True, False, False])
    assert poses.render(64, 96).shape == (len(poses), 96, 64, 3)

    empty_first = _pose(np.stack([STANDING, STANDING]), (512, 768))
    empty_first.body[0] = 0.0
    result = pose_alignment_transition(source, empty_first)
    assert result.alignment.reference_frame == 1


def test_face_and_hands_follow_their_joints():
    source = _pose(STANDING, (512, 768))
    end_pixels = _rotate_limbs(STANDING, {JOINT["right_elbow"]: 1.2})
    end = _pose(end_pixels, (512, 768))
    offsets = np.random.default_rng(2).normal(0, 10, (21, 2))
    size = np.array([512.0, 768.0])
    for pose, pixels in [(source, STANDING), (end, end_pixels)]:
        hands = np.zeros((1, 2, 21, 3))
        hands[0, 1, :, :2] = (pixels[JOINT["right_wrist"]] + offsets) / size
        hands[0, 1, :, 2] = 1.0
        pose.hands = hands
    transition = transition_poses(source, end, 3)
    for k in range(3):
        hand = transition.hands[k, 1, :, :2] * size
        wrist = transition.pixels()[k, JOINT["right_wrist"]]
        np.testing.assert_allclose(hand - wrist, offsets, atol=1e-9)
    assert not (transition.hands[:, 0, :, 2] > 0).any()


def test_rendered_poses_cannot_be_aligned():
    source = _pose(STANDING, (512, 768))
    rendered = RenderedPoses(np.zeros((3, 64, 64, 3), np.uint8), source="poses_folder")
    message = r"'poses_folder' are rendered images without keypoints.*without alignment or transition frames"
    with pytest.raises(ZeroshotError, match=message):
        pose_alignment_transition(source, rendered)
    with pytest.raises(ZeroshotError, match="no frames"):
        pose_alignment_transition(source, _pose(np.zeros((0, 18, 2)), (512, 768)))


def test_what_animate_writes_load_poses_reads_back_off_canvas_points_included(tmp_path):
    source = _pose(STANDING, (512, 768))
    frames = np.stack([STANDING + np.array([60.0 * k, 25.0 * k]) for k in range(6)])  # walking off to the right
    result = pose_alignment_transition(source, _pose(frames, (512, 768), fps=12.0), transition_frames=2)
    off_canvas = result.poses.visible & (result.poses.body[..., :2] > 1).any(-1)
    assert off_canvas[-1].sum() >= 10  # the last frames reach past the canvas, and stay present
    for name in ("poses.json", "per_frame"):
        path = write_openpose_json(result.poses, tmp_path / name)
        loaded = load_poses(path)
        assert loaded.size == (512, 768) and len(loaded) == len(result.poses)
        np.testing.assert_allclose(loaded.body, result.poses.body, rtol=0, atol=1e-12)
    # Points outside a canvas the caller supplies (a file that does not state its own) still mean a wrong size.
    frame = json.loads((tmp_path / "per_frame" / "frame_000000000008_keypoints.json").read_text())
    del frame["canvas_width"], frame["canvas_height"]
    (tmp_path / "bare.json").write_text(json.dumps(frame))
    with pytest.raises(ZeroshotError, match="lies outside the 512x768 canvas"):
        read_openpose_json(tmp_path / "bare.json", size=(512, 768))


@pytest.fixture(scope="module")
def astronaut_pose():
    return detect_source_pose(astronaut())


@pytest.mark.parametrize("max_step", [0.02, 0.05])
def test_transition_step_limit_holds_on_real_extracted_poses(astronaut_pose, sports2d_box_extraction, max_step):
    carphone = extract_poses(read_video(sample_video_path("carphone"), max_frames=5), show_progress=False).poses
    box = sports2d_box_extraction.poses[20:]
    for target in (carphone, box):
        result = pose_alignment_transition(astronaut_pose, target, max_step=max_step)
        transition = result.poses[: result.first_target_frame + 1]
        assert result.num_transition > 0
        assert np.nanmax(_measured_steps(transition)) <= max_step * 512 * (1 + 1e-9)


def test_head_is_retargeted_to_a_head_and_shoulders_source(astronaut_pose, sports2d_box_extraction):
    target = sports2d_box_extraction.poses[20:]  # a whole body, small in its picture
    result = pose_alignment_transition(astronaut_pose, target, transition_frames=0)
    first, source = result.poses.pixels()[1], astronaut_pose.pixels()[0]
    np.testing.assert_allclose(first[NOSE], source[NOSE], atol=1e-6)
    body_only = apply_alignment(target, result.alignment, astronaut_pose.size).pixels()[0]
    assert np.linalg.norm(body_only[NOSE] - source[NOSE]) > 10  # without it the nose lands elsewhere
    # The head keeps its shape, at the source's size: eye and ear spans in the source's proportion.
    eyes, ears = [JOINT["right_eye"], JOINT["left_eye"]], [JOINT["right_ear"], JOINT["left_ear"]]
    for pair in (eyes, ears):
        target_span = np.linalg.norm(np.subtract(*body_only[pair]))
        assert np.linalg.norm(np.subtract(*first[pair])) == pytest.approx(result.alignment.head_scale * target_span)
    assert result.alignment.head_scale > 1.5  # the astronaut's head is far bigger than her body's scale gives


def test_face_points_move_with_the_retargeted_head():
    source = _pose(STANDING, (512, 768))
    person = STANDING * 0.5 + np.array([100.0, 50.0])
    person[[NOSE, JOINT["right_eye"], JOINT["left_eye"]]] += np.array([0.0, 12.0])  # a lower, different head
    frames = np.stack([person + np.array([4.0 * k, 0.0]) for k in range(3)])
    target = _pose(frames, (512, 768))
    rng = np.random.default_rng(3)
    face_pixels = frames[:, NOSE][:, None] + rng.normal(0, 6, (3, 70, 2))
    target.face = np.concatenate([face_pixels / [512, 768], np.ones((3, 70, 1))], axis=-1)
    result = pose_alignment_transition(source, target, transition_frames=0)
    alignment = result.alignment
    assert alignment.head_scale != pytest.approx(1.0)
    body = alignment.scale * frames + alignment.offset  # the body's transform alone
    expected = alignment.scale * face_pixels + alignment.offset
    expected = body[:, NECK][:, None] + alignment.head_scale * (expected - body[:, NECK][:, None])
    expected += alignment.head_offset
    np.testing.assert_allclose(result.poses.face[1:, :, :2] * [512, 768], expected, atol=1e-6)
    np.testing.assert_allclose(result.poses.pixels()[1, NOSE], STANDING[NOSE], atol=1e-6)
