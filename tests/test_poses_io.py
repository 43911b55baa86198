"""Reading and writing poses: OpenPose JSON round trips, OpenPose's own output, our single-file form, rendered pose
images and videos, one loader for all of them, and a clear message for every bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from zeroshot.errors import ZeroshotError
from zeroshot.poses import (
    PoseSequence,
    RenderedPoses,
    load_poses,
    load_source_pose,
    looks_rendered,
    read_openpose_json,
    write_openpose_json,
    write_pose_images,
)
from zeroshot.poses.skeleton import JOINT
from zeroshot.testing import astronaut, sample_video_path
from zeroshot.video import read_video


def _random_poses(frames=5, size=(320, 240), seed=0, fps=12.5, extras=True):
    rng = np.random.default_rng(seed)
    body = np.concatenate([rng.uniform(0.05, 0.95, (frames, 18, 2)), rng.uniform(0.2, 1.0, (frames, 18, 1))], -1)
    body[rng.uniform(size=(frames, 18)) < 0.2] = 0.0
    face = hands = None
    if extras:
        face = np.concatenate([rng.uniform(0.3, 0.6, (frames, 70, 2)), rng.uniform(0.1, 1, (frames, 70, 1))], -1)
        hands = np.concatenate([rng.uniform(0.1, 0.9, (frames, 2, 21, 2)), np.ones((frames, 2, 21, 1))], -1)
        hands[1, 0] = 0.0  # frame 1 has no left hand
    return PoseSequence(body, size=size, fps=fps, face=face, hands=hands)


def _assert_same_poses(actual, expected):
    assert actual.size == expected.size and len(actual) == len(expected)
    for name in ("body", "face", "hands"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert (a is None) == (e is None), name
        if e is not None:
            np.testing.assert_array_equal(a[..., 2] > 0, e[..., 2] > 0)
            present = e[..., 2] > 0
            np.testing.assert_allclose(a[present], e[present], rtol=0, atol=1e-12, err_msg=name)


def test_single_file_round_trip_keeps_canvas_fps_face_and_hands(tmp_path):
    poses = _random_poses()
    path = write_openpose_json(poses, tmp_path / "poses.json")
    loaded = read_openpose_json(path)
    _assert_same_poses(loaded, poses)
    assert loaded.fps == 12.5 and loaded.source == str(path)
    # OpenPose's conventions in the file: pixels, COCO-18 triples, zeros for missing points.
    document = json.loads(path.read_text())
    assert (document["canvas_width"], document["canvas_height"]) == (320, 240)
    person = document["frames"][2]["people"][0]
    values = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    present = poses.body[2, :, 2] > 0
    np.testing.assert_allclose(values[present, :2], poses.body[2, present, :2] * [320, 240], rtol=1e-15)
    assert (values[~present] == 0).all()
    assert len(person["face_keypoints_2d"]) == 210 and len(person["hand_right_keypoints_2d"]) == 63
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.json"]


def test_folder_round_trip_as_openpose_writes_it(tmp_path):
    poses = _random_poses(frames=12, extras=False)
    folder = write_openpose_json(poses, tmp_path / "frames")
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "frame_000000000000_keypoints.json" and len(names) == 12
    loaded = load_poses(folder)
    _assert_same_poses(loaded, poses)
    assert loaded.fps is None
    with pytest.raises(ZeroshotError, match="is a folder that is not empty"):
        write_openpose_json(poses, folder)


def _openpose_frame(people):
    return {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p} for p in people]}


def test_reads_openpose_body25_output_in_natural_order_with_the_canvas_given(tmp_path):
    rng = np.random.default_rng(3)
    body25 = [np.concatenate([rng.uniform(10, 630, (25, 1)), rng.uniform(10, 470, (25, 1)), np.ones((25, 1))], 1)]
    body25.append(body25[0] + 5.0 * np.array([1, 1, 0]))
    folder = tmp_path / "openpose"
    folder.mkdir()
    for index in (2, 10):  # natural order: 2 before 10 (plain sorting would put 10 first)
        frame = body25[0] if index == 2 else body25[1]
        path = folder / f"dance_{index}_keypoints.json"
        path.write_text(json.dumps(_openpose_frame([frame.reshape(-1).tolist()])))
    with pytest.raises(ZeroshotError, match="in pixels but not the size of the canvas"):
        read_openpose_json(folder)
    poses = read_openpose_json(folder, size=(640, 480))
    assert poses.size == (640, 480)
    coco_from_body25 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # BODY_25 adds mid-hip at 8
    for frame, expected in enumerate(body25):
        np.testing.assert_allclose(poses.pixels()[frame], expected[coco_from_body25, :2], atol=1e-9)
    assert poses.pixels()[0, JOINT["right_hip"], 0] == pytest.approx(body25[0][9, 0])


def test_normalised_coordinates_and_several_people(tmp_path):
    weak, strong = np.full((18, 3), 0.3), np.full((18, 3), 0.6)
    weak[:, 2], strong[:, 2] = 0.2, 0.9
    path = tmp_path / "frame.json"
    path.write_text(json.dumps(_openpose_frame([weak.reshape(-1).tolist(), strong.reshape(-1).tolist()])))
    with pytest.raises(ZeroshotError, match="normalised keypoints but not the size of the canvas"):
        read_openpose_json(path)
    poses = read_openpose_json(path, size=(100, 50))
    np.testing.assert_allclose(poses.body[0], strong)  # the most confident person, coordinates kept as they are


def _write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _frames_document(frames, width=100, height=100):
    return {"format": "zeroshot-poses", "canvas_width": width, "canvas_height": height, "frames": frames}


def _frame(values):
    return {"people": [{"pose_keypoints_2d": values}]}


GOOD = [50.0, 50.0, 1.0] * 18


@pytest.mark.parametrize(
    "name, document, message",
    [
        ("syntax.json", '{"frames": [{"people": []},\n  {"people": [}]}',
         r"'.*syntax.json' is not valid JSON \(line 2"),
        ("short.json", _frames_document([_frame(GOOD)] * 3 + [_frame(GOOD[:-1])]), r"short.json', frame 3, person 0: "
         r"pose_keypoints_2d has 53 numbers; expected 54 \(18 points x 3\) or 75"),
        ("text.json", _frames_document([_frame(GOOD), _frame(["a"] * 54)]), r"text.json', frame 1.*not numbers"),
        ("people.json", _frames_document([{"persons": []}]), r"people.json', frame 0: expected an OpenPose frame"),
        ("empty.json", _frames_document([]), r"empty.json' holds no frames"),
        ("empty_list.json", [], r"empty_list.json' holds no frames"),
        ("nobody.json", _frames_document([{"people": []}] * 4), r"no person in any of its 4 frames"),
        ("outside.json", [_frame(GOOD), _frame(GOOD[:12] + [150.0, 50.0, 1.0] + GOOD[15:])],
         r"outside.json', frame 1: the right_wrist keypoint at \(150.0, 50.0\) lies outside the 100x100 canvas. "
         r"Is the canvas size right\? Give the width and height"),
        ("canvas.json", [dict(_frame(GOOD), canvas_width=100, canvas_height=100), dict(_frame(GOOD), canvas_width=90,
         canvas_height=100)], r"canvas.json', frame 1: canvas 90x100 differs from the first frame's 100x100"),
        ("scalar.json", 3, r"scalar.json' is not OpenPose JSON"),
    ],
)  # fmt: skip
def test_bad_json_gives_the_file_frame_and_fix(tmp_path, name, document, message):
    path = _write(tmp_path, name, document)
    with pytest.raises(ZeroshotError, match=message):
        load_poses(path, size=(100, 100))


def test_bad_folders_and_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZeroshotError, match=r"holds neither OpenPose \.json files nor pose images"):
        load_poses(tmp_path / "empty")
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a_0_keypoints.json").write_text(json.dumps(_frame(GOOD)))
    (folder / "a_1_keypoints.json").write_text('{"people": [{"pose_keypoints_2d": [1, 2]}]}')
    with pytest.raises(ZeroshotError, match=r"a_1_keypoints.json', person 0: pose_keypoints_2d has 2 numbers"):
        load_poses(folder, size=(100, 100))
    with pytest.raises(ZeroshotError, match=r"missing.json' do not exist"):
        load_poses(tmp_path / "missing.json")
    with pytest.raises(ZeroshotError, match=r"Cannot tell what .*poses.txt' holds"):
        load_poses(_write(tmp_path, "poses.txt", "hello"))
    with pytest.raises(ZeroshotError, match=r"Cannot read .*broken.mp4' as a video"):
        load_poses(_write(tmp_path, "broken.mp4", "not a video"))


def test_rendered_pose_images_and_videos_load_as_rendered(tmp_path):
    poses = _random_poses(frames=6, size=(96, 64), extras=False)
    folder = write_pose_images(poses, tmp_path / "pose_images")
    loaded = load_poses(folder)
    assert isinstance(loaded, RenderedPoses) and loaded.size == (96, 64)
    np.testing.assert_array_equal(loaded.frames, poses.render())
    video = write_pose_images(poses, tmp_path / "poses.mp4", width=192, height=128, fps=10)
    loaded_video = load_poses(video)
    assert isinstance(loaded_video, RenderedPoses) and len(loaded_video) == 6 and loaded_video.fps == 10
    # Real footage and a real photo are not mistaken for renders.
    assert not looks_rendered(read_video(sample_video_path("carphone"), max_frames=30).frames)
    assert not looks_rendered(astronaut()[None])
    assert looks_rendered(loaded_video.frames)


def test_photo_and_video_of_a_person_give_keypoints(tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    pose = load_poses(photo)
    assert isinstance(pose, PoseSequence) and len(pose) == 1 and pose.visible[0, JOINT["neck"]]
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(noise)
    with pytest.raises(ZeroshotError, match=r"No person found in the pose photo .*noise.png': give a photo or video"):
        load_poses(noise)  # a target pose, not the source image: --source-pose would not help


def test_source_pose_given_by_the_user(tmp_path):
    single = _write(tmp_path, "source.json", _openpose_frame([GOOD]))
    pose = load_source_pose(single, (200, 100))  # pixels without a canvas: the image's
    assert pose.size == (200, 100) and np.allclose(pose.body[0, :, :2], [0.25, 0.5])
    bigger = _write(tmp_path, "big.json", dict(_openpose_frame([GOOD]), canvas_width=400, canvas_height=200))
    assert np.allclose(load_source_pose(bigger, (200, 100)).body[0, :, :2], [0.125, 0.25])
    with pytest.raises(ZeroshotError, match="holds 2 frames; give one frame"):
        load_source_pose(_write(tmp_path, "two.json", [_frame(GOOD), _frame(GOOD)]), (200, 100))
    with pytest.raises(ZeroshotError, match="does not have the shape of the 200x100 source image"):
        load_source_pose(_write(tmp_path, "square.json", _frames_document([_frame(GOOD)])), (200, 100))
