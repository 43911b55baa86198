"""The shared checking machinery of the scripts: argparse types, values that start with `-`, output paths, bounded
work, the stage summary, and OpenPose canvases of any size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zeroshot.cli import ArgumentParser, image_size, real_number, stage_summary, whole_number
from zeroshot.errors import ZeroshotError
from zeroshot.outputs import SPARE_BYTES, check_output
from zeroshot.poses import PoseSequence, load_poses, pose_alignment_transition


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="p")
    parser.add_argument("--size", type=image_size(8))
    parser.add_argument("--offset", type=whole_number())
    parser.add_argument("--rate", type=real_number(above=0))
    parser.add_argument("--weights", type=lambda text: [float(part) for part in text.split(",")])
    parser.add_argument("--verbose", action="store_true")
    return parser


def _error(parser: ArgumentParser, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        parser.parse_args(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_values_starting_with_a_dash_reach_the_options_own_check(capsys):
    parser = _parser()
    assert parser.parse_args(["--offset", "-3", "--weights", "-1,2", "--verbose"]).weights == [-1.0, 2.0]
    assert parser.parse_args(["--offset", "-3"]).offset == -3
    message = _error(parser, ["--size", "-64x64"], capsys)
    assert message == "p: error: argument --size: -64x64 is not a valid size: width and height must be positive " \
        "multiples of 8"  # fmt: skip
    assert "'-inf' is not a finite number" in _error(parser, ["--rate", "-inf"], capsys)
    # An option (or an abbreviation of one) after an option is still an option: argparse's own message.
    assert "expected one argument" in _error(parser, ["--size", "--verbose"], capsys)
    assert "expected one argument" in _error(parser, ["--size", "--verb"], capsys)
    assert "expected one argument" in _error(parser, ["--size", "--"], capsys)


def test_number_types_state_the_range_and_the_reason(capsys):
    parser = ArgumentParser(prog="p")
    parser.add_argument("--n", type=whole_number(2, 10, why="ten is plenty"))
    parser.add_argument("--x", type=real_number(0, 1))
    assert parser.parse_args(["--n", "10", "--x", "0"]).n == 10
    assert _error(parser, ["--n", "11"], capsys).endswith("argument --n: 11 must be at most 10 (ten is plenty)")
    assert _error(parser, ["--n", "1"], capsys).endswith("argument --n: 1 must be at least 2")
    assert _error(parser, ["--n", "2.0"], capsys).endswith("argument --n: '2.0' is not a whole number")
    assert _error(parser, ["--x", "1e400"], capsys).endswith("argument --x: '1e400' is not a finite number")
    assert _error(parser, ["--x", "nan"], capsys).endswith("argument --x: 'nan' is not a finite number")
    assert _error(parser, ["--x", "1.5"], capsys).endswith("argument --x: 1.5 must be at most 1")


def test_canvas_sizes_of_any_shape_are_accepted():
    canvas = image_size()
    assert canvas("854x480") == (854, 480) and canvas("1768X994") == (1768, 994) and canvas("7") == (7, 7)
    with pytest.raises(Exception, match="must be positive"):
        canvas("0x480")


def test_openpose_pixels_on_an_854x480_canvas(tmp_path):
    """OpenPose's output from an ordinary 854x480 video: pixel keypoints, normalised by the canvas given."""
    pixels = np.array([[427.0 + 10 * joint, 60.0 + 20 * joint, 0.9] for joint in range(18)])
    (tmp_path / "frame.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": pixels.ravel().tolist()}]}))
    poses = load_poses(tmp_path / "frame.json", size=(854, 480))
    assert poses.size == (854, 480)
    np.testing.assert_allclose(poses.body[0, :, 0], pixels[:, 0] / 854)
    np.testing.assert_allclose(poses.body[0, :, 1], pixels[:, 1] / 480)


def test_output_checks(tmp_path):
    (tmp_path / "taken.mp4").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZeroshotError, match="names a folder, but a file is written there"):
        check_output(tmp_path / "taken.mp4", what="--out")
    with pytest.raises(ZeroshotError, match="is a file; give a missing or empty folder"):
        check_output(tmp_path / "file", folder=True)
    with pytest.raises(ZeroshotError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "deeper" / "x.json")
    with pytest.raises(ZeroshotError, match="Not enough free disk space for --json"):
        check_output(tmp_path / "x.json", what="--json", expected_bytes=2**62)
    assert check_output(tmp_path / "new" / "x.json", expected_bytes=1024) == tmp_path / "new" / "x.json"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "taken.mp4"]  # nothing made, nothing left
    assert SPARE_BYTES > 0


def test_transition_frames_are_capped():
    body = np.concatenate([np.full((1, 18, 2), 0.5), np.ones((1, 18, 1))], axis=-1)
    pose = PoseSequence(body, (64, 64))
    with pytest.raises(ValueError, match=r"transition_frames must lie in \[0, 120\] \(every frame costs a full"):
        pose_alignment_transition(pose, pose, transition_frames=121)


def test_stage_summary_lists_every_stage_in_order():
    stages = {
        "load models": {"seconds": 3.25},
        "source": {"seconds": 2.0, "forward": 40, "backward": 20, "cached": False, "frames_from_cache": 0},
        "frames": {"seconds": 1.0, "forward": 8, "backward": 8, "cached": False, "frames_from_cache": 3},
        "generation": {"seconds": 0.5, "forward": 12, "backward": 0, "cached": True},
    }
    lines = stage_summary(stages).splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        ["load", "models"], ["source", "2.0"], ["frames", "1.0"], ["generation", "0.5"], ["total", "6.8"]
    ]  # fmt: skip
    assert lines[2].split()[2:] == ["40", "20"] and lines[3].endswith("3 frames cached")
    assert lines[4].endswith("cached") and not lines[2].endswith("cached")
