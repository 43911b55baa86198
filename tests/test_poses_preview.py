"""Previews: the skeleton drawn over a picture (checked against the rendering and the darkened picture, pixel by
pixel), marks, contact sheets, and `animate.py --preview-poses`, which stops before any model loads."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.cli import run
from zeroshot.poses import PoseSequence, contact_sheet, load_poses, overlay_poses, write_preview
from zeroshot.poses.repair import DETECTED, FILLED, MIRRORED
from zeroshot.poses.skeleton import JOINT
from zeroshot.testing import astronaut
from zeroshot.video import read_video

ROOT = Path(__file__).parents[1]
IMAGE, POSES = ROOT / "zeroshot" / "assets" / "astronaut.jpg", ROOT / "zeroshot" / "assets" / "wave.json"


def _load_animate():
    spec = importlib.util.spec_from_file_location("animate_script", ROOT / "scripts" / "animate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wave():
    return load_poses(POSES)


def test_overlay_is_the_render_over_the_darkened_picture(wave):
    picture = astronaut()
    poses = PoseSequence(wave.body[:3], (512, 512))
    frames = overlay_poses(picture, poses)
    assert frames.shape == (3, 512, 512, 3) and frames.dtype == np.uint8
    renders = poses.render(512, 512)
    for frame, render in zip(frames, renders, strict=True):
        drawn = render.any(axis=-1)
        assert drawn.mean() > 0.005
        np.testing.assert_array_equal(frame[drawn], render[drawn])
        np.testing.assert_array_equal(frame[~drawn], (picture[~drawn] * 0.6).astype(np.uint8))
    # One picture per pose (a video): each pose over its own frame.
    video = np.stack([picture, picture[::-1], picture[:, ::-1]])
    each = overlay_poses(video, poses)
    for index in range(3):
        np.testing.assert_array_equal(each[index], overlay_poses(video[index], poses[index])[0])


def test_marks_ring_swapped_and_filled_joints(wave):
    poses = PoseSequence(wave.body[:1], (512, 512))
    marks = np.full((1, 18), DETECTED, np.int8)
    marks[0, JOINT["right_shoulder"]], marks[0, JOINT["left_shoulder"]] = MIRRORED, FILLED
    marked = overlay_poses(np.zeros((512, 512, 3), np.uint8), poses, marks=marks)[0]
    plain = overlay_poses(np.zeros((512, 512, 3), np.uint8), poses)[0]
    for joint, color in ((JOINT["right_shoulder"], (255, 255, 0)), (JOINT["left_shoulder"], (255, 255, 255))):
        x, y = (poses.body[0, joint, :2] * 512).astype(int)
        ring = marked[y - 12 : y + 13, x - 12 : x + 13]
        assert (ring == color).all(axis=-1).sum() > 20, joint
    assert (marked != plain).any(axis=-1).sum() < 2 * 2 * np.pi * 10 * 3  # two rings, nothing else changed


def test_overlay_shrinks_and_checks_its_arguments(wave):
    poses = PoseSequence(wave.body[:2], (512, 512))
    assert overlay_poses(astronaut(), poses, max_size=128).shape == (2, 128, 128, 3)
    with pytest.raises(ValueError, match="image_or_frames must be uint8 RGB"):
        overlay_poses(astronaut().astype(np.float32), poses)
    with pytest.raises(ValueError, match="holds 3 frames for 2 poses"):
        overlay_poses(np.zeros((3, 8, 8, 3), np.uint8), poses)
    with pytest.raises(ValueError, match=r"marks must have shape \(2, 18\)"):
        overlay_poses(astronaut(), poses, marks=np.zeros((1, 18)))


def test_contact_sheet_spreads_frames_over_the_sequence():
    frames = np.zeros((30, 40, 60, 3), np.uint8)
    for index in range(30):
        frames[index, :, :, 0] = index * 8  # each frame its own red level
    sheet = contact_sheet(frames, count=6, columns=3, width=300)
    assert sheet.shape == (2 * 67, 300, 3)
    reds = [int(sheet[row * 67 + 60, column * 100 + 90, 0]) for row in range(2) for column in range(3)]
    assert reds == [8 * index for index in (0, 6, 12, 17, 23, 29)]  # np.linspace(0, 29, 6) rounded


def test_write_preview_by_suffix(tmp_path, wave):
    frames = overlay_poses(astronaut(), PoseSequence(wave.body[:4], (512, 512)), max_size=256)
    written = write_preview(frames, tmp_path / "check.mp4", fps=8)
    assert written == [tmp_path / "check.mp4", tmp_path / "check.png"]
    assert len(read_video(tmp_path / "check.mp4")) == 4
    assert write_preview(frames, tmp_path / "sheet.png", fps=8) == [tmp_path / "sheet.png"]
    assert not (tmp_path / "sheet.mp4").exists()


def test_animate_preview_poses_stops_before_any_model_loads(tmp_path, capsys, wave):
    preview = tmp_path / "check.mp4"
    arguments = ["--image", str(IMAGE), "--poses", str(POSES), "--out", str(tmp_path / "wave.mp4")]
    arguments += ["--preview-poses", str(preview), "--model", str(tmp_path / "no-such-model"), "--size", "256"]
    assert run(_load_animate().main, arguments) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "no model was loaded" in out and not (tmp_path / "wave.mp4").exists()
    frames = read_video(preview).frames
    transition = int(out.split("(")[1].split(" transition")[0])
    assert frames.shape == (1 + transition + len(wave), 256, 256, 3)
    sheet = np.asarray(Image.open(tmp_path / "check.png"))
    assert sheet.shape[1] == 1280

    status = run(_load_animate().main, [*arguments[:-4], "--preview-poses", str(tmp_path / "check.webp")])
    assert status == 2 and "Cannot write a preview to" in capsys.readouterr().err
