"""What the app's buttons do (`zeroshot.app.jobs`), without a browser: the preview shows exactly the poses a run
animates, every input is checked before the models are touched, files and figures match the report, the Qffusion
checkpoint is loaded once."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot import PoseAnimatePipeline
from zeroshot.app import jobs
from zeroshot.app.models import AppModels
from zeroshot.errors import ZeroshotError
from zeroshot.poseanimate import prepare_source
from zeroshot.poses import load_poses
from zeroshot.poses.preview import overlay_poses
from zeroshot.qffusion import QffusionConfig, save_qffusion_model
from zeroshot.testing import build_random_components, sample_video_path
from zeroshot.video import load_image, read_video

ASSETS = Path(__file__).resolve().parents[1] / "zeroshot" / "assets"
IMAGE, POSES = ASSETS / "astronaut.jpg", ASSETS / "wave.json"
SIZE = 64
OPTIONS = jobs.AnimateOptions(
    prompt="a photo of an astronaut", inversion="direct", steps=2, transition_frames=2, width=SIZE, height=SIZE
)


class Untouchable:
    """Models that fail the test when a job uses them: every input must be checked first."""

    def __getattr__(self, name):
        raise AssertionError(f"the job used the models ({name}) before its inputs were checked")


@pytest.fixture(scope="module")
def models(tiny_components):
    return AppModels(PoseAnimatePipeline.from_components(tiny_components), model="tiny", controlnet="tiny")


def test_preview_shows_the_poses_a_run_animates(models, tmp_path):
    """The preview is the run's own pose sequence (aligned, with its transition) over the run's own fitted image:
    checked against the poses the pipeline wrote to animation.poses.json, for a file of poses and the run's."""
    preview = jobs.preview_poses(IMAGE, POSES, OPTIONS)
    files = jobs.animate(models, IMAGE, POSES, OPTIONS, tmp_path)
    animated = load_poses(files.poses)
    assert len(preview) == len(animated) == 1 + 2 + len(load_poses(POSES))
    fitted = np.asarray(prepare_source(load_image(IMAGE), SIZE, SIZE, mask=None).image)
    np.testing.assert_array_equal(preview, overlay_poses(fitted, animated))
    # Mirrored target poses give another preview: it follows the poses, not just the image.
    mirrored = load_poses(POSES)
    mirrored.body[..., 0] = np.where(mirrored.body[..., 2] > 0, 1 - mirrored.body[..., 0], 0)
    from zeroshot.poses import write_openpose_json

    write_openpose_json(mirrored, tmp_path / "mirrored.json")
    assert not np.array_equal(jobs.preview_poses(IMAGE, tmp_path / "mirrored.json", OPTIONS)[3:], preview[3:])


def test_animate_writes_video_poses_and_report_that_agree(models, tmp_path):
    files = jobs.animate(models, IMAGE, POSES, OPTIONS, tmp_path)
    report = json.loads(files.report.read_text())
    assert len(read_video(files.video)) == report["frames"] == len(load_poses(files.poses))
    assert report["app_options"]["steps"] == 2 and report["settings"]["pacm"]["mode"] == "direct"
    assert report["model"] == "tiny" and report["poses_file"] == str(files.poses)
    figures = files.summary
    assert figures["frames"] == report["frames"] and figures["transition_frames"] == 2
    assert figures["unet_forward"] == sum(stage["forward"] for stage in report["stages"].values())
    assert figures["stages"]["generation"]["forward"] == 2 * report["frames"] * 2  # guidance branches x frames x steps
    table = jobs.figures_markdown(figures)
    assert (
        f"| generation | {report['stages']['generation']['seconds']:.2f} | {2 * report['frames'] * 2} | 0 |" in table
    )
    assert f"**{report['frames']} frames** (2 transition)" in table


@pytest.mark.parametrize(
    ("image", "poses", "options", "message"),
    [
        (None, POSES, OPTIONS, "Give an image of the character first."),
        (IMAGE, "", OPTIONS, r"Give the poses \(a video or a JSON file\) first."),
        (IMAGE, POSES, jobs.AnimateOptions(width=60, height=64), "multiples of 8 .* got 60x64"),
        (IMAGE, POSES, jobs.AnimateOptions(decoupling="both"), "Decoupling must be one of"),
        (IMAGE, POSES, jobs.AnimateOptions(transition_frames=-1), "Transition frames must be 0 or more, got -1"),
        (IMAGE, POSES, jobs.AnimateOptions(lambdas=(1.0, -1.0, 1.0)), r"Lambdas \(1.0, -1.0, 1.0\)"),
        (IMAGE, POSES, jobs.AnimateOptions(inversion="fast"), "Invalid setting: .*fast"),
        (IMAGE, POSES, jobs.AnimateOptions(steps=0), "Invalid setting"),
        (POSES, POSES, OPTIONS, "wave.json"),
        (IMAGE, "broken", OPTIONS, "is not valid JSON"),
        (IMAGE, POSES, jobs.AnimateOptions(face_strength=1.5), r"Face refinement: strength must lie in \[0, 1\]"),
        (IMAGE, POSES, jobs.AnimateOptions(face_strength=0.3, face_size=500), "face_size must be a positive multiple"),
        # the astronaut's face at 64x64 is too small to refine: found from the source pose, before the models
        (IMAGE, POSES, OPTIONS.__class__(**{**OPTIONS.__dict__, "face_strength": 0.3}), "is only 13 pixels across"),
    ],
)
def test_every_input_is_checked_before_the_models(image, poses, options, message, tmp_path):
    if poses == "broken":
        poses = tmp_path / "broken.json"
        poses.write_text('{"frames": [')
    with pytest.raises(ZeroshotError, match=message):
        jobs.animate(Untouchable(), image, poses, options, tmp_path)
    if image is not None and poses:  # the preview says the same, and loads no model either
        with pytest.raises(ZeroshotError, match=message):
            jobs.preview_poses(image, poses, options)
    assert not any(tmp_path.glob("animation*"))


def test_edit_jump_cut_loads_the_checkpoint_once(models, tmp_path):
    components = build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=3)
    checkpoint = str(save_qffusion_model(components, tmp_path / "ckpt", QffusionConfig(resolution=32)))
    clip = read_video(sample_video_path("carphone"), max_frames=9)  # a real face, which the conditions need
    start, end = clip.frames[0], np.minimum(clip.frames[-1].astype(int) + 40, 255).astype(np.uint8)
    Image.fromarray(start).save(tmp_path / "start.png")
    Image.fromarray(end).save(tmp_path / "end.png")
    options = jobs.EditOptions(jump_cut=5, fps=12.5, steps=2)
    first = tmp_path / "first"
    first.mkdir()
    video, report = jobs.edit(models, None, tmp_path / "start.png", tmp_path / "end.png", checkpoint, options, first)
    written = read_video(video)
    assert len(written) == 5 == json.loads(report.read_text())["frames"] and written.size == clip.size
    pipe = models.qffusion(checkpoint)
    assert models.qffusion(checkpoint) is pipe  # kept between runs
    # Checked before anything loads: the video and jump-cut mode exclude each other, the checkpoint must exist.
    with pytest.raises(ZeroshotError, match="remove the video"):
        jobs.edit(Untouchable(), tmp_path / "v.mp4", tmp_path / "start.png", tmp_path / "end.png", checkpoint,
                  options, tmp_path)  # fmt: skip
    with pytest.raises(ZeroshotError, match="No face was found in the start image"):  # landmarks before loading
        Image.fromarray(np.zeros_like(start)).save(tmp_path / "blank.png")
        jobs.edit(Untouchable(), None, tmp_path / "blank.png", tmp_path / "end.png", checkpoint, options, tmp_path)
    with pytest.raises(ZeroshotError, match="does not exist"):
        jobs.edit(Untouchable(), None, tmp_path / "start.png", tmp_path / "end.png", str(tmp_path / "none"),
                  options, tmp_path)  # fmt: skip


def test_app_script_refuses_a_taken_port_before_loading_anything(tmp_path):
    """`scripts/app.py` checks its address first: one `error:` line, exit status 2, and no torch imported."""
    code = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n    print('status', exit.code, sorted({'torch', 'gradio'} & set(sys.modules)))"
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        script = str(ASSETS.parents[1] / "scripts" / "app.py")
        argv = [sys.executable, "-c", code, script, "--port", str(port), "--work-dir", str(tmp_path / "runs")]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "status 2 []", result
    assert (
        result.stderr
        == f"error: Cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port or --host.\n"
    )


def test_extract_checks_its_inputs(tmp_path):
    message = r"The longest gap to fill must be 0 \(none\) or a positive number of seconds, got "
    with pytest.raises(ZeroshotError, match=message + "-1"):
        jobs.extract(sample_video_path("carphone"), -1.0, True, tmp_path)
    with pytest.raises(ZeroshotError, match=message + "nan"):
        jobs.extract(sample_video_path("carphone"), float("nan"), True, tmp_path)
    with pytest.raises(ZeroshotError, match=r"Give a video of a person first\."):
        jobs.extract(None, 0.25, True, tmp_path)
    assert not any(tmp_path.iterdir())


def test_animate_refines_faces_when_asked(models, tmp_path):
    """The face setting reaches the pipeline: the report has the refinement pass's boxes and its stage."""
    options = jobs.AnimateOptions(
        prompt="a photo of an astronaut",
        inversion="direct",
        steps=2,
        transition_frames=1,
        width=128,
        height=128,
        face_strength=0.5,
        face_size=64,
    )
    report = json.loads(jobs.animate(models, IMAGE, POSES, options, tmp_path).report.read_text())
    refinement = report["face_refinement"]
    assert refinement["settings"]["strength"] == 0.5 and refinement["settings"]["face_size"] == 64
    assert len(refinement["boxes"]) == report["frames"]
    assert report["stages"]["face_refinement"]["forward"] > 0
