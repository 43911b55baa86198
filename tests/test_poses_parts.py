"""Face (OpenPose's 70 points) and hands (21 each) from mediapipe's holistic model, offline, on real pictures: the
layout of the points checked against facts of the iBUG face and the hand skeleton, hands on the right wrists, carried
through extraction and repair, and one clear line when they are asked for but not visible."""

import numpy as np
import pytest

from zeroshot.poses import MediapipePoseDetector, RepairSettings, detect_source_pose, extract_poses, make_detector
from zeroshot.poses.skeleton import JOINT
from zeroshot.testing import astronaut, sample_video_path
from zeroshot.video import read_video


@pytest.fixture(scope="module")
def jumper(sports2d_demo_video):
    """Frame 30 of the sports2d demo, cropped to the person on the box (500x500), arms spread, facing the camera."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(sports2d_demo_video))
    width, height = next(reader)["size"]
    for index, data in enumerate(reader):
        if index == 30:
            frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            break
    reader.close()
    return np.ascontiguousarray(frame[0:500, 400:900])


def test_face_points_follow_the_openpose_layout_on_a_real_face():
    pose = detect_source_pose(astronaut(), face=True)
    face = pose.face[0, :, :2] * 512
    assert (pose.face[0, :, 2] > 0).all()
    jaw, brows, nose, mouth = face[0:17], face[17:27], face[27:36], face[48:68]
    right_eye, left_eye, pupils = face[36:42], face[42:48], face[68:70]
    # She faces the camera: her right (jaw start, right brow and eye) on the image's left.
    assert jaw[0, 0] < jaw[8, 0] < jaw[16, 0] and np.argmax(jaw[:, 1]) in (7, 8, 9)  # the chin is lowest
    assert right_eye[:, 0].max() < left_eye[:, 0].min() and brows[:5, 0].mean() < brows[5:, 0].mean()
    assert brows[:, 1].max() < min(right_eye[:, 1].min(), left_eye[:, 1].min()) + 3  # brows above the eyes
    for pupil, eye in zip(pupils, (right_eye, left_eye), strict=True):  # each pupil inside its own eye
        assert (eye.min(0) <= pupil).all() and (pupil <= eye.max(0)).all()
    assert nose[:4, 1].tolist() == sorted(nose[:4, 1].tolist())  # the bridge runs down to the tip
    assert np.linalg.norm(face[30] - pose.pixels()[0, JOINT["nose"]]) < 10  # the tip is the body's nose
    assert nose[4:, 1].max() < mouth[:, 1].min() and mouth[:, 1].max() < jaw[8, 1]  # nose, mouth, chin
    assert mouth[0, 0] < mouth[6, 0]  # mouth corners: her right first


def test_hands_are_on_their_own_wrists(jumper):
    pose = detect_source_pose(jumper, hands=True)
    hands, body = pose.hands[0, ..., :2] * 500, pose.pixels()[0]
    found = (pose.hands[0, ..., 2] > 0).all(axis=1)
    assert found.tolist() == [False, True]  # her right hand, raised; the left one is out of sight
    right = hands[1]
    assert np.linalg.norm(right[0] - body[JOINT["right_wrist"]]) < 10
    assert np.linalg.norm(right[0] - body[JOINT["left_wrist"]]) > 100
    for finger in range(5):  # each finger runs away from the wrist, joint after joint
        chain = right[[0, *range(4 * finger + 1, 4 * finger + 5)]]
        distances = np.linalg.norm(chain - right[0], axis=-1)
        assert distances[-1] == distances.max() and distances[-1] > distances[1]


def test_face_is_carried_through_extraction_and_repair():
    video = read_video(sample_video_path("carphone"), max_frames=40)
    with MediapipePoseDetector(video=True, face=True) as detector:
        extraction = extract_poses(video, detector, repair=RepairSettings(), show_progress=False)
    face, raw = extraction.poses.face, extraction.raw.face
    assert face.shape == (40, 70, 3) and (face[..., 2] > 0).mean() > 0.95
    shown = (raw[..., 2] > 0) & (face[..., 2] > 0)
    moved = np.linalg.norm((face[..., :2] - raw[..., :2]) * video.size, axis=-1)[shown]
    assert 0 < np.median(moved) < 2  # smoothed, not displaced
    assert extraction.poses.hands is None


def test_face_or_hands_not_visible_give_one_warning_line(caplog):
    with caplog.at_level("WARNING", logger="zeroshot.poses.extract"):
        pose = detect_source_pose(astronaut(), face=True, hands=True, name="astronaut.png")
    assert not (pose.hands[..., 2] > 0).any() and (pose.face[..., 2] > 0).all()
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "The hands were asked for but not visible in the source image 'astronaut.png': the poses carry none"
    )
    assert make_detector("mediapipe", face=True).face
