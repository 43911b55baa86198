"""Qffusion's crops: boxes tracked around the subject at the training scale (checked against positions and a Gaussian
written here), conditions drawn at known pixels of the crop, and the feathered paste-back, whose outside stays
bit-exact."""

import math

import numpy as np
import pytest

from zeroshot.errors import ZeroshotError
from zeroshot.poses import PoseSequence
from zeroshot.qffusion.conditions import (
    FACE_LANDMARKS,
    PortraitLandmarks,
    detect_portrait_landmarks,
    render_conditions,
)
from zeroshot.qffusion.crops import FEATHER_FRACTION, crop_boxes, crop_frames, crop_landmarks, paste_back
from zeroshot.qffusion.editing import reference_arrays
from zeroshot.testing import sample_video_path
from zeroshot.video import Video, read_video

WIDTH, HEIGHT = 320, 240
NOSE_RED, NECK_ORANGE, RIGHT_SHOULDER_YELLOW = (255, 0, 0), (255, 85, 0), (255, 170, 0)  # OpenPose's joint colours
LIPS_RED = (255, 0, 0)
LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER = 291, 61


def faces(centres, size=(40, 48)):
    """Face meshes whose bounding box is `size` pixels around each centre (pixels of a WIDTH x HEIGHT frame)."""
    rng = np.random.default_rng(0)
    face = np.zeros((len(centres), FACE_LANDMARKS, 3), np.float32)
    for index, (x, y) in enumerate(centres):
        points = rng.uniform(-0.5, 0.5, (FACE_LANDMARKS, 2)) * size
        points[:2] = [[-size[0] / 2, -size[1] / 2], [size[0] / 2, size[1] / 2]]  # the box's corners
        face[index, :, :2] = (points + (x, y)) / (WIDTH, HEIGHT)
    return PortraitLandmarks(face, np.zeros((len(centres), 4, 3), np.float32))


def test_subject_boxes_keep_the_training_scale_and_follow_the_face():
    centres = [(100 + 2 * t, 110) for t in range(30)]
    boxes = crop_boxes(faces(centres), (WIDTH, HEIGHT), crop_scale=2.5, crop_smoothing=3)
    side = 120  # 2.5 times the face's larger side, 48 pixels
    assert (boxes[:, 2] - boxes[:, 0] == side).all() and (boxes[:, 3] - boxes[:, 1] == side).all()
    # a Gaussian leaves a steady motion where its window is whole (3 sigma = 9 frames from each end)
    for t in range(9, 21):
        assert tuple(boxes[t]) == (100 + 2 * t - 60, 50, 100 + 2 * t + 60, 170)
    # without smoothing the box follows every frame, also at the ends
    boxes = crop_boxes(faces(centres), (WIDTH, HEIGHT), crop_scale=2.5, crop_smoothing=0)
    assert [box[0] for box in boxes] == [100 + 2 * t - 60 for t in range(30)]


def test_a_jump_of_one_frame_is_smoothed_by_a_gaussian():
    centres = [(160, 120)] * 31
    centres[15] = (190, 120)
    sigma = 2.0
    weights = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-6, 7)]
    boxes = crop_boxes(faces(centres), (WIDTH, HEIGHT), crop_scale=2.0, crop_smoothing=sigma)
    side = 96
    assert boxes[15, 0] == round(160 + 30 * 1 / sum(weights) - side / 2)
    assert boxes[14, 0] == round(160 + 30 * weights[5] / sum(weights) - side / 2)
    assert boxes[0, 0] == 160 - side // 2  # too far to feel it


def test_boxes_stay_inside_the_frame():
    boxes = crop_boxes(faces([(10, 230)] * 3), (WIDTH, HEIGHT), crop_scale=2.5)
    assert tuple(boxes[0]) == (0, 120, 120, 240)  # shifted inside, not shrunk
    big = crop_boxes(faces([(160, 120)] * 3, size=(200, 200)), (WIDTH, HEIGHT), crop_scale=2.5)
    assert tuple(big[0]) == (40, 0, 280, 240)  # capped at the frame's shorter side
    full = crop_boxes(faces([(10, 230)] * 3), (WIDTH, HEIGHT), crop="full")
    assert (full == [0, 0, WIDTH, HEIGHT]).all()
    with pytest.raises(ValueError, match="Unknown crop mode 'face'"):
        crop_boxes(faces([(10, 230)]), (WIDTH, HEIGHT), crop="face")


def test_body_conditions_are_drawn_at_known_pixels_of_the_crop():
    body = np.zeros((3, 18, 3))
    pixels = {0: (200, 100), 1: (200, 130), 2: (180, 130), 5: (220, 130), 8: (190, 190), 11: (210, 190)}
    for joint, (x, y) in pixels.items():
        body[:, joint] = (x / WIDTH, y / HEIGHT, 1.0)
    poses = PoseSequence(body, size=(WIDTH, HEIGHT))
    boxes = crop_boxes(poses, (WIDTH, HEIGHT), crop_scale=2.0, crop_smoothing=0)
    assert tuple(boxes[0]) == (110, 55, 290, 235)  # keypoints' box 40 x 90 around (200, 145), side 2 x 90 = 180
    images = render_conditions("body", crop_landmarks(poses, boxes, (WIDTH, HEIGHT)), 360, 360)  # 2x the box
    for joint, colour in ((0, NOSE_RED), (1, NECK_ORANGE), (2, RIGHT_SHOULDER_YELLOW)):
        x, y = pixels[joint]
        assert tuple(images[0, 2 * (y - 55), 2 * (x - 110)]) == colour
    assert tuple(images[0, 5, 5]) == (0, 0, 0)
    poses.body[1, :, 2] = 0  # nobody in the middle frame: it keeps its neighbours' box
    assert (crop_boxes(poses, (WIDTH, HEIGHT), crop_scale=2.0, crop_smoothing=0)[1] == boxes[1]).all()


@pytest.fixture(scope="module")
def carphone():
    return read_video(sample_video_path("carphone"), max_frames=3)


def test_face_conditions_are_drawn_at_known_pixels_of_the_crop(carphone):
    landmarks = detect_portrait_landmarks(carphone.frames, show_progress=False)
    width, height = carphone.size
    boxes = crop_boxes(landmarks, carphone.size, crop_scale=2.0)
    side = boxes[0, 2] - boxes[0, 0]
    face_boxes = landmarks.subject_boxes() * (width, height, width, height)
    face_size = np.median(np.maximum(face_boxes[:, 2] - face_boxes[:, 0], face_boxes[:, 3] - face_boxes[:, 1]))
    assert side == round(2.0 * face_size) < height  # the training scale: the face fills half the crop
    images = render_conditions("face", crop_landmarks(landmarks, boxes, carphone.size), 256, 256)
    for corner in (LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER):
        x, y = landmarks.face[0, corner, :2] * (width, height)
        pixel = np.round((np.array([x, y]) - boxes[0, :2]) / side * 256).astype(int)
        assert tuple(images[0, pixel[1], pixel[0]]) == LIPS_RED


def test_paste_back_leaves_the_outside_bit_exact():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
    boxes = np.array([[100, 40, 196, 136], [0, 144, 96, 240]])  # inside the frame; in its bottom-left corner
    # crops at the boxes' size, unchanged: the round trip gives the frames back, every pixel
    assert np.array_equal(paste_back(frames, crop_frames(frames, boxes, (96, 96)), boxes), frames)
    # grey crops at another size: blended in over a feathered edge, nothing outside the boxes touched
    grey = np.full((2, 32, 32, 3), 128, np.uint8)
    pasted = paste_back(frames, grey, boxes)
    feather = round(96 * FEATHER_FRACTION)
    for frame, result, (left, top, right, bottom) in zip(frames, pasted, boxes, strict=True):
        outside = np.ones((HEIGHT, WIDTH), bool)
        outside[top:bottom, left:right] = False
        assert np.array_equal(result[outside], frame[outside])
        assert (result[top + feather : bottom - feather, left + feather : right - feather] == 128).all()
    # the edge inside the frame: weight 1 / (feather + 1) of the crop; the frame's border: no feathering
    expected = 128 / (feather + 1) + frames[0, 80, 100].astype(float) * feather / (feather + 1)
    assert np.abs(pasted[0, 80, 100].astype(float) - expected).max() <= 0.5 + 1e-9
    assert (pasted[1, 239, 20:76] == 128).all() and (pasted[1, 170:220, 0] == 128).all()
    expected = 128 / (feather + 1) + frames[1, 144, 40].astype(float) * feather / (feather + 1)
    assert np.abs(pasted[1, 144, 40].astype(float) - expected).max() <= 0.5 + 1e-9


def test_references_are_checked_before_any_model(carphone):
    video = Video(carphone.frames, carphone.fps)
    black = np.zeros_like(carphone.frames[0])
    with pytest.raises(ZeroshotError, match=r"^No face was found in the start image\."):
        reference_arrays(black, carphone.frames[-1], video, condition="face")
    with pytest.raises(ZeroshotError, match=r"^No face was found in the end image\."):
        reference_arrays(carphone.frames[0], black, video, condition="face")
    with pytest.raises(ZeroshotError, match=r"^The video has 1 frame; editing needs at least 2"):
        reference_arrays(black, black, Video(carphone.frames[:1], carphone.fps), condition="face")
    with pytest.raises(ZeroshotError, match=r"^The end image is 64x32 but the video's frames are 176x144"):
        reference_arrays(carphone.frames[0], black[:32, :64], video, condition="face")
