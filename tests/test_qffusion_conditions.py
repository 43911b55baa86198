"""Face conditions on real video frames: MediaPipe landmarks, the documented rendering, crops, interpolation and
frames without a face."""

import numpy as np
import pytest
from PIL import Image

from zeroshot.errors import ZeroshotError
from zeroshot.qffusion.conditions import (
    detect_portrait_landmarks,
    render_portrait_conditions,
    render_portrait_frame,
)
from zeroshot.testing import sample_video_path
from zeroshot.video import Fit, read_video

LIPS_RED = (255, 0, 0)
SHOULDER_YELLOW = (255, 255, 0)
UPPER_LIP, LOWER_LIP, LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER = 13, 14, 291, 61
LEFT_EYE_CENTRE, RIGHT_EYE_CENTRE = 473, 468  # iris centres


@pytest.fixture(scope="module")
def frames():
    return read_video(sample_video_path("carphone"), max_frames=6).frames


@pytest.fixture(scope="module")
def landmarks(frames):
    return detect_portrait_landmarks(frames, show_progress=False)


def test_face_mesh_and_shoulders_on_a_real_video(frames, landmarks):
    assert landmarks.face.shape == (6, 478, 3) and landmarks.pose.shape == (6, 4, 3)
    face = landmarks.face[0]
    # the man's face: eyes above the mouth, his left eye on the image's right, the mouth between the eyes
    assert face[[LEFT_EYE_CENTRE, RIGHT_EYE_CENTRE], 1].max() < face[[UPPER_LIP, LOWER_LIP], 1].min()
    assert face[LEFT_EYE_CENTRE, 0] > face[RIGHT_EYE_CENTRE, 0]
    assert face[RIGHT_EYE_CENTRE, 0] < face[UPPER_LIP, 0] < face[LEFT_EYE_CENTRE, 0]
    box = landmarks.subject_boxes()[0]
    assert 0.2 < box[0] < box[2] < 0.8 and 0.05 < box[1] < box[3] < 0.8
    # both shoulders seen, below the chin, his left shoulder on the image's right
    assert (landmarks.pose[:, :2, 2] > 0.5).all()
    assert (landmarks.pose[0, :2, 1] > face[152, 1]).all() and landmarks.pose[0, 0, 0] > landmarks.pose[0, 1, 0]


def test_rendering_follows_the_specification(landmarks):
    face, pose = landmarks.face[0], landmarks.pose[0]
    image = render_portrait_frame(face, pose, 256, 192)
    assert image.shape == (192, 256, 3) and image.dtype == np.uint8
    assert np.array_equal(image, render_portrait_frame(face, pose, 256, 192))  # a function of the landmarks alone
    scale = np.array([256, 192])

    def colour_at(point):
        x, y = np.round(point * scale).astype(int)
        return tuple(image[y, x])

    # the lips contour is drawn in red at its corners (the last part drawn, so nothing covers it)
    for corner in (LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER):
        assert colour_at(face[corner, :2]) == LIPS_RED
    quarter = (3 * pose[0, :2] + pose[1, :2]) / 4  # a quarter along the shoulder line, away from the neck line
    assert colour_at(quarter) == SHOULDER_YELLOW
    assert tuple(image[0, 0]) == (0, 0, 0) and tuple(image[-1, 0]) == (0, 0, 0)  # black where nothing is drawn
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    for expected in [(255, 255, 255), (0, 255, 0), (255, 0, 128), (255, 128, 0), (0, 128, 255), (64, 64, 64)]:
        assert expected in colours


def test_rendering_hides_unseen_shoulders_and_scales_line_width(landmarks):
    face, pose = landmarks.face[0], landmarks.pose[0].copy()
    pose[:, 2] = 0.1
    image = render_portrait_frame(face, pose, 256, 192)
    assert not np.all(image == SHOULDER_YELLOW, axis=-1).any()
    widths = []
    for size in (128, 512):
        drawn = render_portrait_frame(landmarks.face[0], landmarks.pose[0], size, size)
        column = drawn[:, size // 2]
        widths.append(np.all(column == SHOULDER_YELLOW, axis=-1).sum())
    assert widths[1] >= 3 * widths[0] > 0  # thickness max(1, round(min(W, H) / 128)), doubled for the shoulders


def test_cropped_landmarks_match_detection_on_the_crop(frames, landmarks):
    crop = np.asarray(Image.fromarray(frames[0]).crop((20, 0, 150, 130)))  # 130x130 from (20, 0)
    detected = detect_portrait_landmarks(crop[None], video=False, show_progress=False)
    transformed = landmarks[0].fitted(Fit((176, 144), 1.0, (176, 144), 20, 0, (130, 130)))
    error = np.abs(detected.face[0, :, :2] - transformed.face[0, :, :2])
    assert np.median(error) < 0.02 and error.max() < 0.08


def test_interpolation(landmarks):
    start, end = landmarks[0], landmarks[5]
    path = start.interpolate(end, 5)
    assert len(path) == 5
    np.testing.assert_allclose(path.face[0], start.face[0])
    np.testing.assert_allclose(path.face[-1], end.face[0], atol=1e-6)
    np.testing.assert_allclose(path.face[2], (start.face[0] + end.face[0]) / 2, atol=1e-6)
    np.testing.assert_allclose(path.pose[1], 0.75 * start.pose[0] + 0.25 * end.pose[0], atol=1e-6)
    assert render_portrait_conditions(path, 64, 48).shape == (5, 48, 64, 3)


def test_frames_without_a_face_are_interpolated_and_no_face_at_all_is_an_error(frames):
    black = np.zeros_like(frames[0])
    with_gap = np.stack([frames[0], black, frames[2]])
    result = detect_portrait_landmarks(with_gap, video=False, show_progress=False)
    alone = detect_portrait_landmarks(frames[[0, 2]], video=False, show_progress=False)
    np.testing.assert_allclose(result.face[1], (alone.face[0] + alone.face[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(result.face[[0, 2]], alone.face, atol=1e-6)
    with pytest.raises(ZeroshotError, match="No face was found in the test frames"):
        detect_portrait_landmarks(np.stack([black, black]), video=False, show_progress=False, what="the test frames")
