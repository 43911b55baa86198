"""scripts/evaluate.py on a real clip: every offline metric, through the real command line, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.evaluation import OFFLINE_METRICS, evaluate_animation
from zeroshot.poses import PoseSequence, detect_source_pose, write_openpose_json
from zeroshot.testing import astronaut
from zeroshot.video import write_video

SCRIPT = Path(__file__).parents[1] / "scripts" / "evaluate.py"


@pytest.fixture(scope="module")
def panning_clip(tmp_path_factory):
    """The astronaut photo panned 4 pixels a frame, and the source pose moved along: a clip whose poses are known."""
    folder = tmp_path_factory.mktemp("clip")
    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256), Image.LANCZOS))
    Image.fromarray(photo).save(folder / "source.png")
    frames = np.stack([np.roll(photo, 4 * i, axis=1) for i in range(4)])
    pose = detect_source_pose(photo)
    body = np.repeat(pose.body, 4, axis=0)
    body[:, :, 0] += 4 * np.arange(4)[:, None] / 256
    write_openpose_json(PoseSequence(body, size=(256, 256)), folder / "clip.poses.json")
    write_video(frames, folder / "clip.gif", fps=8)
    write_video(frames, folder / "frames", fps=8)
    return folder, frames, photo


def test_evaluation_of_a_known_clip(panning_clip):
    folder, frames, photo = panning_clip
    poses = PoseSequence(np.zeros((4, 18, 3)), size=(256, 256))
    with pytest.raises(Exception, match="no frame with two or more confident joints"):
        evaluate_animation(frames, Image.fromarray(photo), poses)
    from zeroshot.poses import read_openpose_json

    scores = evaluate_animation(frames, Image.fromarray(photo), read_openpose_json(folder / "clip.poses.json"))
    assert set(scores) == set(OFFLINE_METRICS)
    assert scores["frame0_psnr"] == float("inf") and scores["frame0_ssim"] == pytest.approx(1.0)
    assert scores["pose_pck"] > 0.9 and scores["pose_detected_fraction"] > 0.9
    assert scores["warping_error"] < 0.01


@pytest.mark.parametrize("animation", ["frames", "clip.gif"])
def test_script_writes_every_offline_metric(panning_clip, animation):
    folder, _, _ = panning_clip
    command = [sys.executable, str(SCRIPT), str(folder / animation), "--source", str(folder / "source.png")]
    command += ["--poses", str(folder / "clip.poses.json"), "--json", str(folder / f"{animation}.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads((folder / f"{animation}.json").read_text())
    assert set(record["metrics"]) == set(OFFLINE_METRICS) and record["frames"] == 4
    # PSNR of identical pictures (frame 0, and the panned faces in lossless PNGs) is infinite, written as null.
    finite = [name for name in OFFLINE_METRICS if name not in ("frame0_psnr", "face_psnr")]
    assert (
        all(np.isfinite(record["metrics"][name]) for name in finite) and record["metrics"]["face_frames_compared"] == 3
    )
    assert "lpips" in record["not_computed"] and "not computed: needs --lpips-alexnet PATH" in result.stdout


def test_script_errors_are_one_line(panning_clip, tmp_path):
    folder, frames, _ = panning_clip
    write_video(frames[:3], tmp_path / "short.gif", fps=8)
    cases = {
        "missing": ([str(tmp_path / "nothing.mp4")], "does not exist"),
        "count": ([str(tmp_path / "short.gif")], "has 3 frames but the target poses 4"),
    }
    for arguments, message in cases.values():
        command = [sys.executable, str(SCRIPT), *arguments, "--source", str(folder / "source.png")]
        command += ["--poses", str(folder / "clip.poses.json")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr


def test_frames_without_a_person_count_as_missed():
    from zeroshot.evaluation import detect_frame_poses

    grey = np.full((2, 64, 64, 3), 128, np.uint8)
    poses = detect_frame_poses(grey)
    assert poses.body.shape == (2, 18, 3) and not poses.visible.any()
