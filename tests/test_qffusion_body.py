"""Whole-body (OpenPose) conditions for Qffusion on a real video: detection, the OpenPose rendering, interpolation,
crops, training data and editing."""

import numpy as np
import pytest
import torch

from zeroshot.errors import ZeroshotError
from zeroshot.poses import PoseSequence
from zeroshot.poses.skeleton import JOINT
from zeroshot.qffusion import QffusionConfig, QffusionPipeline, edit_video, render_conditions
from zeroshot.qffusion.body import detect_body_landmarks, interpolate_poses
from zeroshot.qffusion.data import QuadrantGridDataset, prepare_video
from zeroshot.testing import build_random_components, sample_video_path
from zeroshot.video import Fit, Video, read_video, write_video

NECK, NOSE = JOINT["neck"], JOINT["nose"]
NOSE_RED, NECK_ORANGE = (255, 0, 0), (255, 85, 0)  # OpenPose's colours of joints 0 and 1
RIGHT_SHOULDER, LEFT_SHOULDER, LEFT_WRIST = JOINT["right_shoulder"], JOINT["left_shoulder"], JOINT["left_wrist"]


@pytest.fixture(scope="module")
def video():
    return read_video(sample_video_path("carphone"), max_frames=8)


@pytest.fixture(scope="module")
def landmarks(video):
    return detect_body_landmarks(video.frames, show_progress=False)


def test_openpose_keypoints_and_rendering(video, landmarks):
    assert isinstance(landmarks, PoseSequence) and landmarks.size == (176, 144)
    assert landmarks.body.shape == (8, 18, 3)
    body = landmarks.body[0]
    assert (body[[NOSE, NECK, RIGHT_SHOULDER, LEFT_SHOULDER], 2] > 0.5).all()
    assert body[NOSE, 1] < body[NECK, 1] and body[RIGHT_SHOULDER, 0] < body[LEFT_SHOULDER, 0]
    images = render_conditions("body", landmarks, 352, 288)
    assert images.shape == (8, 288, 352, 3)
    # OpenPose conventions: each joint a filled circle of radius 4 in its colour, on black
    for joint, colour in ((NOSE, NOSE_RED), (NECK, NECK_ORANGE)):
        x, y = int(body[joint, 0] * 352), int(body[joint, 1] * 288)
        assert tuple(images[0, y, x]) == colour
    assert tuple(images[0, 0, 0]) == (0, 0, 0)
    with pytest.raises(ZeroshotError, match=r"No person was found in the test frames.*--condition face"):
        detect_body_landmarks(np.zeros((2, 64, 64, 3), np.uint8), video=False, show_progress=False,
                              what="the test frames")  # fmt: skip


def test_interpolation_and_crops(landmarks):
    start, end = landmarks[0], landmarks[7]
    end.body[0, LEFT_WRIST] = (0.9, 0.9, 1.0)
    start.body[0, LEFT_WRIST] = 0.0
    path = interpolate_poses(start, end, 5)
    assert np.array_equal(path.body[0], start.body[0]) and np.array_equal(path.body[-1], end.body[0])
    np.testing.assert_allclose(path.body[2, NECK], (start.body[0, NECK] + end.body[0, NECK]) / 2, atol=1e-6)
    assert (path.body[1:-1, LEFT_WRIST] == 0).all()  # present at one end only: missing in between
    cropped = landmarks[0].fitted(Fit((176, 144), 1.0, (176, 144), 0, 0, (88, 144)))  # the left half of the frame
    right = landmarks.body[0, :, 0] >= 0.5
    assert (cropped.body[0, right, 2] == 0).all()
    kept = (landmarks.body[0, :, 2] > 0) & ~right
    np.testing.assert_allclose(cropped.body[0, kept, 0], landmarks.body[0, kept, 0] * 2, atol=1e-6)


def test_body_training_data_and_editing(video, landmarks, tmp_path):
    path = write_video(video.frames, tmp_path / "clip.mp4", video.fps)
    prepared = prepare_video(path, tmp_path / "cache", resolution=32, crop_scale=1.5, condition="body")
    again = prepare_video(path, tmp_path / "cache", resolution=32, crop_scale=1.5, condition="body")
    assert isinstance(prepared.landmarks, PoseSequence) and prepared.frames.shape == (8, 32, 32, 3)
    assert np.array_equal(prepared.landmarks.body, again.landmarks.body)
    sample = QuadrantGridDataset([prepared], (1, 1), condition="body")[0]
    assert sample["conditions"].shape == (4, 3, 32, 32) and sample["conditions"].max() == 1.0

    components = build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=4)
    pipe = QffusionPipeline.from_components(components)
    config = QffusionConfig(condition="body", rendering="openpose-v1", resolution=64, crop_scale=1.2)
    clip = Video(video.frames[:5], video.fps)
    result = edit_video(pipe, config, clip, clip.frames[0], clip.frames[-1], num_inference_steps=2,
                        show_progress=False, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.video.frames.shape == clip.frames.shape and result.conditions.shape == (5, 64, 64, 3)
    assert np.array_equal(result.video.frames[0], clip.frames[0])
    # the neck the detector found in each frame, drawn where it lies in that frame's crop
    for frame, (left, top, right, _) in enumerate(result.crop_boxes):
        x, y = landmarks.body[frame, NECK, :2] * (176, 144)
        column, row = round((x - left) / (right - left) * 64), round((y - top) / (right - left) * 64)
        window = result.conditions[frame, row - 1 : row + 2, column - 1 : column + 2].reshape(-1, 3)
        assert NECK_ORANGE in {tuple(pixel) for pixel in window}
