"""Rendering: pixel for pixel equal to controlnet-aux's own OpenPose renderer (fixtures it drew, see
tests/data/openpose_render/README.md), and the real astronaut photo's pose drawn with the joints it shows."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.poses import PoseSequence, RenderedPoses, detect_source_pose, render_pose
from zeroshot.poses.skeleton import COLORS, JOINT
from zeroshot.testing import astronaut

FIXTURES = Path(__file__).parent / "data" / "openpose_render"
CASES = json.loads((FIXTURES / "keypoints.json").read_text())


def _optional(values):
    return None if values is None else np.array(values, dtype=np.float64)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_render_equals_controlnet_aux_pixel_for_pixel(case):
    expected = np.asarray(Image.open(FIXTURES / f"{case['name']}.png").convert("RGB"))
    body, face, hands = np.array(case["body"]), _optional(case["face"]), _optional(case["hands"])
    image = render_pose(body, case["width"], case["height"], face=face, hands=hands)
    assert image.shape == expected.shape and image.dtype == np.uint8
    assert expected.any()
    np.testing.assert_array_equal(image, expected)


def test_sequence_render_matches_single_renders_and_can_leave_out_face_and_hands():
    case = next(case for case in CASES if case["name"] == "face_and_hands")
    width, height = case["width"], case["height"]
    body, face, hands = np.array(case["body"]), np.array(case["face"]), np.array(case["hands"])
    face, hands = face[None].repeat(2, 0), hands[None].repeat(2, 0)
    poses = PoseSequence(np.stack([body, body * [1, 1, 0]]), (width, height), face=face, hands=hands)
    images = poses.render()
    np.testing.assert_array_equal(images[0], np.asarray(Image.open(FIXTURES / "face_and_hands.png")))
    no_body = render_pose(body * [1, 1, 0], width, height, face=face[1], hands=hands[1])
    np.testing.assert_array_equal(images[1], no_body)
    body_only = poses.render(face=False, hands=False)
    np.testing.assert_array_equal(body_only[0], render_pose(body, width, height))
    # Any output size: keypoints are normalised, so the same pose lands at the same relative place.
    small = poses.render(128, 160, face=False, hands=False)[0]
    neck = body[JOINT["neck"]]
    assert tuple(small[int(neck[1] * 160), int(neck[0] * 128)]) == COLORS[JOINT["neck"]]


def test_rendered_poses_resize():
    frames = np.zeros((2, 40, 60, 3), np.uint8)
    frames[:, 10:30, 20:40] = 200
    poses = RenderedPoses(frames)
    np.testing.assert_array_equal(poses.render(), frames)
    resized = poses.render(120, 80)
    assert resized.shape == (2, 80, 120, 3)
    assert resized[0, 40, 60, 0] == 200 and resized[0, 5, 5, 0] == 0
    assert len(poses[1]) == 1 and poses.size == (60, 40)


def test_astronaut_pose_is_found_and_drawn_with_the_joints_it_shows():
    pose = detect_source_pose(astronaut())
    assert pose.size == (512, 512) and len(pose) == 1
    shown = {"nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye", "right_ear", "left_ear"}
    # The photo ends at her chest, and her hands are out of sight (mediapipe guesses them with low visibility).
    not_shown = {"right_wrist", "left_wrist", "right_knee", "right_ankle", "left_knee", "left_ankle"}
    visible = {name for name, index in JOINT.items() if pose.visible[0, index]}
    assert shown <= visible and not (not_shown & visible)
    pixels = pose.pixels()[0]
    # The face is above the shoulders, and her right side is on the left of the picture.
    assert pixels[JOINT["nose"], 1] < pixels[JOINT["neck"], 1] < pixels[JOINT["right_shoulder"], 1] + 40
    assert pixels[JOINT["right_shoulder"], 0] < pixels[JOINT["neck"], 0] < pixels[JOINT["left_shoulder"], 0]
    # Eyes and ears too: the ControlNet reads a swapped pair as the head turned the other way.
    assert pixels[JOINT["right_ear"], 0] < pixels[JOINT["right_eye"], 0] < pixels[JOINT["nose"], 0]
    assert pixels[JOINT["nose"], 0] < pixels[JOINT["left_eye"], 0] < pixels[JOINT["left_ear"], 0]
    assert 180 < pixels[JOINT["nose"], 0] < 300 and 80 < pixels[JOINT["nose"], 1] < 180

    image = pose.render()[0]
    for name in visible:
        x, y = (int(v) for v in pixels[JOINT[name]])
        assert tuple(image[y, x]) == COLORS[JOINT[name]], name
    lit = image.any(axis=-1)
    for name in set(JOINT) - visible:  # nothing drawn for a missing joint's colour
        assert not (image == COLORS[JOINT[name]]).all(axis=-1).any(), name
    assert 0.005 < lit.mean() < 0.1
