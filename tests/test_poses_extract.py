"""Extraction on a real video (the script run for real, with its report and preview), gap filling against a float64
loop written here, and every bad input of the script as one clear line with a non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.cli import EXIT_USER_ERROR, run
from zeroshot.errors import ZeroshotError
from zeroshot.poses import (
    PoseSequence,
    RepairSettings,
    detect_source_pose,
    extract_poses,
    extract_video_poses,
    fill_missing_frames,
    read_openpose_json,
)
from zeroshot.poses.skeleton import JOINT
from zeroshot.testing import sample_video_path
from zeroshot.video import read_video, write_video

SCRIPT = Path(__file__).parents[1] / "scripts" / "extract_poses.py"
sys.path.insert(0, str(SCRIPT.parent))
import extract_poses as extract_script  # noqa: E402

MEDIAPIPE_NOISE = ("XNNPACK", "absl::InitializeLog", "W0000", "inference_feedback_manager")


@pytest.fixture(scope="module")
def carphone():
    return read_video(sample_video_path("carphone"))


def test_script_extracts_the_real_video_to_openpose_json(tmp_path, carphone):
    output, render, preview = tmp_path / "carphone.json", tmp_path / "carphone_poses.mp4", tmp_path / "check.mp4"
    video = sample_video_path("carphone")
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(video),
            "-o",
            str(output),
            "--render",
            str(render),
            "--preview",
            str(preview),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "a person found in 120 (100.0%), repaired " in completed.stdout
    assert not any(noise in completed.stderr for noise in MEDIAPIPE_NOISE), completed.stderr
    assert "Traceback" not in completed.stderr

    report = json.loads((tmp_path / "carphone.report.json").read_text())
    assert report["frames"] == report["frames_detected"] == 120 and report["fps"] == pytest.approx(29.97)
    assert report["repaired"] is True and report["people_seen"] == 1
    for key in ("mirrored_frames", "joints_rejected", "joints_filled"):
        assert isinstance(report[key], int) and report[key] >= 0, key
    # The preview: the skeleton over each frame (darkened), and a contact sheet beside it.
    shown = read_video(preview).frames
    assert shown.shape == carphone.frames.shape
    assert np.abs(shown.astype(int) - carphone.frames.astype(int) * 0.6).mean() < 12
    sheet = np.asarray(Image.open(tmp_path / "check.png"))
    assert sheet.shape[1] == 1280 and sheet.shape[2] == 3

    document = json.loads(output.read_text())
    assert document["fps"] == pytest.approx(29.97)
    assert (document["canvas_width"], document["canvas_height"]) == (176, 144)
    assert len(document["frames"]) == 120
    for frame in document["frames"]:
        (person,) = frame["people"]
        assert len(person["pose_keypoints_2d"]) == 54
        assert all(isinstance(value, float) for value in person["pose_keypoints_2d"])
    poses = read_openpose_json(output)
    assert len(poses) == 120 and poses.size == (176, 144) and poses.fps == pytest.approx(29.97)

    extraction = extract_poses(carphone, repair=RepairSettings(), show_progress=False, source=str(video))
    assert extraction.detected.mean() >= 0.9
    np.testing.assert_allclose(poses.body, extraction.poses.body, atol=1e-9)
    assert report == json.loads(json.dumps({"poses": str(output), **extraction.report()}))
    # Head and shoulders of a man talking: those joints in nearly every frame, nothing below the chest.
    visible = poses.visible.mean(axis=0)
    for name in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye"):
        assert visible[JOINT[name]] >= 0.9, name
    for name in ("right_knee", "left_knee", "right_ankle", "left_ankle"):
        assert visible[JOINT[name]] == 0, name
    assert len(read_video(render)) == 120


def test_frames_without_a_person_are_filled_and_counted(carphone):
    frames = carphone.frames.copy()
    frames[:3] = 128  # no one at the start
    frames[60:62] = 0  # nor for two frames in the middle
    extraction = extract_poses(frames, fps=carphone.fps, show_progress=False)
    np.testing.assert_array_equal(np.flatnonzero(~extraction.detected), [0, 1, 2, 60, 61])
    assert extraction.num_filled == 5 and "a person found in 115 (95.8%), 5 filled" in extraction.summary()
    body = extraction.poses.body
    np.testing.assert_array_equal(body[0], body[3])
    both = (body[59, :, 2] > 0) & (body[62, :, 2] > 0)
    np.testing.assert_allclose(body[60, both], body[59, both] + (body[62, both] - body[59, both]) / 3, atol=1e-12)
    assert extraction.poses.fps == carphone.fps


def test_fill_missing_frames_against_the_definition():
    body = np.zeros((6, 18, 3))
    body[1, :3] = [(0.1, 0.2, 1.0), (0.3, 0.3, 0.5), (0.4, 0.4, 0.8)]
    body[4, :2] = [(0.4, 0.8, 0.5), (0.6, 0.6, 1.0)]
    body[4, 5] = (0.9, 0.9, 1.0)
    poses = fill_missing_frames(PoseSequence(body, (10, 10)))
    np.testing.assert_array_equal(poses.body[0], body[1])  # before the first person: held
    np.testing.assert_array_equal(poses.body[5], body[4])  # after the last: held
    for frame, weight in [(2, 1 / 3), (3, 2 / 3)]:
        np.testing.assert_allclose(poses.body[frame, :2], (1 - weight) * body[1, :2] + weight * body[4, :2])
        np.testing.assert_array_equal(poses.body[frame, 2], body[1, 2])  # only before: copied
        np.testing.assert_array_equal(poses.body[frame, 5], body[4, 5])  # only after: copied
        assert not (poses.body[frame, 6:, 2] > 0).any()
    np.testing.assert_array_equal(poses.body[[1, 4]], body[[1, 4]])


def test_image_without_a_person_suggests_giving_the_source_pose():
    with pytest.raises(ZeroshotError, match=r"No person found in the source image 'sky.png'. Give the source pose"):
        detect_source_pose(np.full((96, 128, 3), 200, np.uint8), name="sky.png")


def _run_script(capsys, *argv):
    status = run(extract_script.main, [str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.err


def test_script_bad_inputs_give_one_line_and_the_fix(tmp_path, capsys):
    output = tmp_path / "out.json"
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    status, err = _run_script(capsys, broken, "-o", output)
    assert status == EXIT_USER_ERROR and err.startswith("error: Cannot read") and "Is it a video file?" in err

    nobody = write_video(np.full((6, 64, 64, 3), 90, np.uint8), tmp_path / "nobody.mp4", fps=6)
    status, err = _run_script(capsys, nobody, "-o", output, "--quiet")
    assert status == EXIT_USER_ERROR and "No person found in any of the 6 frames" in err
    assert not output.exists()

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    status, err = _run_script(capsys, sample_video_path(), "-o", occupied)
    assert status == EXIT_USER_ERROR and "is a folder that is not empty" in err

    status, err = _run_script(capsys, sample_video_path(), "-o", tmp_path / "poses.csv")
    assert status == EXIT_USER_ERROR and "give a .json file, or a folder path" in err
    with pytest.raises(SystemExit) as exit:  # refused by argparse, as it parses
        _run_script(capsys, sample_video_path(), "-o", output, "--max-gap", "-1")
    assert (
        exit.value.code == EXIT_USER_ERROR and "argument --max-gap: -1 must be at least 0" in capsys.readouterr().err
    )
    status, err = _run_script(capsys, sample_video_path(), "-o", output, "--no-repair", "--no-smooth")
    assert status == EXIT_USER_ERROR and "--no-repair keeps the detections as they are" in err
    status, err = _run_script(capsys, sample_video_path(), "-o", output, "--preview", tmp_path / "check.jpg")
    assert status == EXIT_USER_ERROR and "Cannot write a preview to" in err and "give a .png" in err
    (tmp_path / "check.mp4").mkdir()
    status, err = _run_script(capsys, sample_video_path(), "-o", output, "--preview", tmp_path / "check.mp4")
    assert status == EXIT_USER_ERROR and "names a folder, but a file is written there" in err
    assert not output.exists()


def test_script_detectors_of_the_extra_explain_what_is_missing(tmp_path, capsys):
    openpose = [sample_video_path(), "-o", tmp_path / "out.json", "--detector", "openpose"]
    status, err = _run_script(capsys, *openpose)
    assert status == EXIT_USER_ERROR and "needs its weights as a local folder" in err
    status, err = _run_script(capsys, *openpose, "--weights", tmp_path)
    assert "lacks body_pose_model.pth, hand_pose_model.pth, facenet.pth" in err
    assert "hf download lllyasviel/Annotators body_pose_model.pth" in err
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        (tmp_path / name).write_bytes(b"")
    # This environment (requirements-lock.txt) has no controlnet-aux: the message says which extra to install.
    status, err = _run_script(capsys, *openpose, "--weights", tmp_path)
    assert status == EXIT_USER_ERROR and 'pip install -e ".[detectors]"' in err


def test_script_failure_from_a_shell_has_no_traceback(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(broken), "-o", str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == EXIT_USER_ERROR
    assert completed.stderr.startswith("error: Cannot read") and completed.stderr.count("\n") == 1
    assert "Traceback" not in completed.stderr


def test_extract_video_poses_keeps_the_frame_rate():
    extraction = extract_video_poses(sample_video_path(), max_frames=10, show_progress=False)
    assert len(extraction.poses) == 10 and extraction.poses.fps == pytest.approx(29.97)


def test_script_says_when_a_video_has_one_frame(tmp_path, capsys, carphone):
    one = write_video(carphone.frames[:1], tmp_path / "one.mp4", fps=30)
    assert run(extract_script.main, [str(one), "-o", str(tmp_path / "one.json"), "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith(
        "1 frame of 176x144 at 30 fps: a person found in 1 (100.0%), a single frame: nothing to check "
        "over time (mirrors, jumps and gaps need several frames)"
    )
    assert len(read_openpose_json(tmp_path / "one.json")) == 1


def test_script_says_when_hands_asked_for_are_not_visible(tmp_path, caplog):
    output = tmp_path / "out.json"
    with caplog.at_level("WARNING", logger="zeroshot.poses.extract"):
        status = run(
            extract_script.main, [str(sample_video_path()), "-o", str(output), "--hands", "--max-frames", "3"]
        )
    assert status == 0 and len(read_openpose_json(output)) == 3
    (record,) = caplog.records
    assert record.getMessage().startswith("The hands were asked for but not visible in '")
