"""Face refinement: boxes from poses (face keypoints, head joints, smoothing, a real video), the pass on crops with the
tiny models (strength 0, paste-back leaves every pixel outside the feather mask, frame 0 in direct mode, windows),
and `scripts/animate.py --refine-face` with its bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroshot.errors import ZeroshotError
from zeroshot.face import FaceRefinement, check_source_face, face_boxes
from zeroshot.face.crops import crop_image, paste_mask
from zeroshot.pacm import PACMSettings
from zeroshot.poses import PoseSequence, load_poses
from zeroshot.poses.skeleton import JOINT

ROOT = Path(__file__).parents[1]
IMAGE = ROOT / "zeroshot" / "assets" / "astronaut.jpg"
POSES = ROOT / "zeroshot" / "assets" / "wave.json"
SIZE = 128  # the astronaut's face is about 26 pixels across at 128x128 (13 at 64x64: too small to refine)
FACE_SIZE = 64
STEPS = 5


# ---- boxes -------------------------------------------------------------------------------------------------------


def _head(nose, neck, size=(200, 100), frames=1):
    """Poses with only a nose and a neck (pixels), `frames` times."""
    body = np.zeros((frames, 18, 3))
    body[:, JOINT["nose"]] = (nose[0] / size[0], nose[1] / size[1], 1.0)
    body[:, JOINT["neck"]] = (neck[0] / size[0], neck[1] / size[1], 1.0)
    return PoseSequence(body, size=size)


def test_boxes_from_face_points_and_from_head_joints():
    # Head joints: centred on them, side 1.4 times their distance to the neck (in pixels, on a non-square canvas).
    boxes = face_boxes(_head((120, 30), (120, 70)), smoothing=0)
    np.testing.assert_allclose(boxes.centers[0], (120, 30))
    assert boxes.sides[0] == pytest.approx(1.4 * 40) and not boxes.from_face_points[0]
    # Face keypoints win: the centre of their bounding box, side 1.8 times its larger side; hidden points ignored.
    face = np.zeros((1, 70, 3))
    points = np.array([[100, 20], [130, 20], [100, 60], [130, 60], [115, 40]], dtype=np.float64)
    face[0, :5, :2] = points / (200, 100)
    face[0, :5, 2] = 1.0
    face[0, 5] = (0.99, 0.99, 0.0)
    poses = PoseSequence(_head((120, 30), (120, 70)).body, size=(200, 100), face=face)
    boxes = face_boxes(poses, smoothing=0)
    np.testing.assert_allclose(boxes.centers[0], (115, 40))
    assert boxes.sides[0] == pytest.approx(1.8 * 40) and boxes.from_face_points[0]
    # No head joint: no box.
    body = np.zeros((1, 18, 3))
    body[0, JOINT["neck"]] = (0.5, 0.5, 1.0)
    assert not face_boxes(PoseSequence(body, size=(64, 64))).visible[0]


def test_smoothing_keeps_steady_motion_and_damps_jitter_within_runs():
    frames = 16
    nose = np.stack([60 + 3.0 * np.arange(frames), np.full(frames, 30.0)], 1)
    body = np.zeros((frames, 18, 3))
    body[:, JOINT["nose"], :2] = nose / 200
    body[:, JOINT["neck"], :2] = (nose + (0, 40)) / 200
    body[:, [JOINT["nose"], JOINT["neck"]], 2] = 1.0
    body[11] = 0.0  # no face in frame 11: it splits the frames into two runs, 0-10 and 12-15
    boxes = face_boxes(PoseSequence(body, size=(200, 200)), smoothing=1.5)
    assert list(np.flatnonzero(~boxes.visible)) == [11]
    # A symmetric kernel leaves steady motion where it sees the same on both sides (frame 5, the middle of 0-10).
    assert boxes.centers[5, 0] == pytest.approx(nose[5, 0], abs=1e-9)
    np.testing.assert_allclose(boxes.sides[boxes.visible], 56.0)
    # Frame 10 ends its run: it is averaged over frames 0-10 only, so it lags (frame 12, beyond the gap, is unused).
    weights = np.exp(-0.5 * (np.arange(11) - 10) ** 2 / 1.5**2)
    assert boxes.centers[10, 0] == pytest.approx((weights * nose[:11, 0]).sum() / weights.sum())
    # Alternating jitter of 4 pixels is damped.
    jittery = body.copy()
    jittery[:, [JOINT["nose"], JOINT["neck"]], 0] += (4.0 * (-1) ** np.arange(frames) / 200)[:, None]
    raw, smooth = (face_boxes(PoseSequence(jittery, size=(200, 200)), smoothing=s) for s in (0, 1.5))
    inner = np.arange(3, 8)
    assert (
        np.abs(smooth.centers[inner, 0] - nose[inner, 0]).max()
        < 0.3 * np.abs(raw.centers[inner, 0] - nose[inner, 0]).max()
    )


def test_boxes_are_stable_on_poses_of_a_real_video():
    """carphone (a man talking in a car), poses by mediapipe: every frame has a box holding the nose and eyes, and
    smoothing removes most of the frame-to-frame jitter of the raw boxes."""
    from zeroshot.poses import extract_video_poses
    from zeroshot.testing import sample_video_path

    poses = extract_video_poses(sample_video_path("carphone"), max_frames=30, show_progress=False).poses
    raw, boxes = face_boxes(poses, smoothing=0), face_boxes(poses)
    assert boxes.visible.all()
    head = poses.pixels()[:, [JOINT["nose"], JOINT["right_eye"], JOINT["left_eye"]]]
    offsets = np.abs(head - boxes.centers[:, None]) / boxes.sides[:, None, None]
    assert (offsets < 0.35).all()  # well inside the box, whose half side is 0.5
    assert 0.3 < boxes.sides.mean() / poses.size[1] < 0.8  # a head-and-shoulders shot
    jitter = {name: np.abs(np.diff(b.centers, 2, axis=0)).mean() for name, b in (("raw", raw), ("smooth", boxes))}
    assert jitter["smooth"] < 0.5 * jitter["raw"]
    assert np.abs(np.diff(boxes.sides)).max() < 0.03 * boxes.sides.mean()


def test_source_face_checks_say_what_is_wrong():
    with pytest.raises(ZeroshotError, match="needs a face in the source image"):
        check_source_face(PoseSequence(np.zeros((1, 18, 3)), size=(64, 64)), 16)
    with pytest.raises(ZeroshotError, match=r"only 12 pixels across at the output size 200x100; .* at least 16"):
        check_source_face(_head((120, 30), (120, 45.43)), 16)  # box 21.6 px, face 12 px
    assert check_source_face(_head((120, 30), (120, 70)), 16).visible[0]


# ---- crops and paste-back ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_face():
    """The astronaut photo at 256x256, its detected pose and face box."""
    from PIL import Image

    from zeroshot.poses import detect_source_pose
    from zeroshot.testing import astronaut

    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256), Image.LANCZOS))
    pose = detect_source_pose(photo)
    return photo, pose, face_boxes(pose, smoothing=0)


@pytest.mark.parametrize("size", [64, 512])
def test_crop_then_uncrop_puts_every_pixel_back_in_place(astronaut_face, size):
    """Cropping to a smaller or a larger square and putting the crop back gives the photo again, up to resampling
    blur, and exactly in place: the same crop moved by a quarter pixel in any direction matches worse."""
    import cv2

    from zeroshot.face.crops import uncrop_image

    photo, pose, boxes = astronaut_face
    crop = crop_image(photo, boxes, 0, size)
    back = uncrop_image(crop, boxes, 0, (256, 256))
    inside = paste_mask(pose, boxes, 0) > 0

    def error(dx, dy):
        moved = cv2.warpAffine(back, np.float32([[1, 0, dx], [0, 1, dy]]), (256, 256))
        return np.abs(moved - photo.astype(np.float32))[inside].mean()

    in_place = error(0, 0)
    assert in_place < (6.0 if size == 64 else 4.0)
    assert in_place < min(error(dx, dy) for dx, dy in ((0.25, 0), (-0.25, 0), (0, 0.25), (0, -0.25)))
    # The crop shows the face: the nose keypoint's pixel and the crop's pixel at the mapped place agree.
    nose = pose.pixels()[0, JOINT["nose"]]
    u, v = (nose - np.array(boxes.corners(0)[:2])) / boxes.sides[0] * size
    assert np.abs(crop[int(v), int(u)].astype(int) - photo[int(nose[1]), int(nose[0])].astype(int)).max() < 40


def test_crop_poses_land_where_the_crop_of_the_rendered_pose_draws_them(astronaut_face):
    """The nose (drawn in pure red) of the pose moved into the crop sits where the crop of the full-canvas rendering
    shows it; the eyes stay on their sides, and a shoulder outside the crop is missing."""
    from zeroshot.face.crops import crop_poses

    _, pose, boxes = astronaut_face
    cropped = crop_poses(pose, boxes, [0], 128)
    drawn = crop_image(pose.render()[0], boxes, 0, 128, nearest=True)
    ys, xs = np.nonzero((drawn == (255, 0, 0)).all(-1))
    assert len(xs) > 10
    np.testing.assert_allclose(cropped.pixels()[0, JOINT["nose"]], (xs.mean() + 0.5, ys.mean() + 0.5), atol=1.5)
    assert cropped.size == (128, 128) and cropped.visible[0, JOINT["nose"]]
    right, left = cropped.pixels()[0, JOINT["right_eye"], 0], cropped.pixels()[0, JOINT["left_eye"], 0]
    assert right < left  # the person faces the camera: their right eye is on the picture's left
    shoulder = JOINT["right_shoulder"]
    assert pose.visible[0, shoulder] and not cropped.visible[0, shoulder]  # outside the crop: missing


def test_paste_mask_follows_the_face_hull_when_there_are_face_points():
    """Face points on an ellipse of semi-axes 20 x 25 pixels: the mask is the hull grown by 15%, its feathered edge
    (weight one half) at 23 pixels from the centre, and 0 beyond the feather and outside the box."""
    angles = np.linspace(0, 2 * np.pi, 70, endpoint=False)
    face = np.zeros((1, 70, 3))
    face[0, :, 0], face[0, :, 1], face[0, :, 2] = (
        (100 + 20 * np.cos(angles)) / 200,
        (50 + 25 * np.sin(angles)) / 100,
        1,
    )
    poses = PoseSequence(np.zeros((1, 18, 3)), size=(200, 100), face=face)
    weight = paste_mask(poses, face_boxes(poses, smoothing=0), 0)
    assert weight[50, 100] == pytest.approx(1.0, abs=1e-4) and weight[50, 123] == pytest.approx(0.5, abs=0.08)
    assert weight[50, 77] == pytest.approx(0.5, abs=0.08) and weight[50, 133:].max() == 0 and weight[:, :67].max() == 0


def test_paste_back_matches_colour_at_the_seam_and_keeps_the_outside(astronaut_face):
    from zeroshot.face.crops import paste_face

    photo, pose, boxes = astronaut_face
    weight = paste_mask(pose, boxes, 0)
    # A refined face whose only change is a colour cast: the seam's colour matching takes it out entirely.
    cast = photo.astype(np.float32) + np.array([25.0, -10.0, 5.0])
    np.testing.assert_allclose(paste_face(photo, cast, weight).astype(int), photo.astype(int), atol=1)
    # A real change inside the face stays, weighted by the mask; outside the mask nothing changes.
    changed = photo.astype(np.float32).copy()
    changed[..., 0] = 255.0 - changed[..., 0]
    pasted = paste_face(photo, changed, weight)
    np.testing.assert_array_equal(pasted[weight == 0], photo[weight == 0])
    core = weight > 0.99
    assert core.sum() > 100 and np.abs(pasted[core].astype(int) - photo[core].astype(int)).max() > 100


# ---- the pass on crops -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def animation(tiny_components):
    """A short animation of the astronaut (direct mode), its source on the canvas and its character masks."""
    from zeroshot import PoseAnimatePipeline
    from zeroshot.poseanimate import prepare_source
    from zeroshot.prompts import encode_prompt
    from zeroshot.video import load_image

    pipe = PoseAnimatePipeline.from_components(tiny_components)
    image = load_image(IMAGE)
    result = pipe(
        image,
        load_poses(POSES)[np.arange(3)],
        "a photo of an astronaut",
        height=SIZE,
        width=SIZE,
        pacm_settings=PACMSettings(mode="direct", num_inference_steps=STEPS),
        transition_frames=1,
        show_progress=False,
    )
    source = prepare_source(image, SIZE, SIZE)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut")
    masks = [source.mask] * len(result.frames)
    return result, np.asarray(source.image), prompt, masks


def _refine(components, animation, **options):
    from zeroshot.face.refinement import refine_faces

    result, source, prompt, masks = animation
    settings = FaceRefinement(strength=options.pop("strength", 0.6), face_size=FACE_SIZE)
    return refine_faces(
        components,
        result.frames,
        source,
        result.poses,
        prompt,
        settings,
        PACMSettings(mode="direct", num_inference_steps=STEPS),
        masks=masks,
        show_progress=False,
        **options,
    )


@pytest.fixture(scope="module")
def refined(tiny_components, animation):
    return _refine(tiny_components, animation, window=16)


def test_strength_zero_gives_the_input_frames_back(tiny_components, animation):
    unchanged = _refine(tiny_components, animation, strength=0.0)
    np.testing.assert_array_equal(unchanged.frames, animation[0].frames)
    assert unchanged.stages == {} and unchanged.boxes.visible.all()


def test_pixels_outside_the_feather_mask_are_unchanged(refined, animation):
    frames = animation[0].frames
    assert refined.refined_frames == list(range(len(frames))) and refined.skipped_frames["no_face"] == []
    for frame in refined.refined_frames:
        weight = paste_mask(animation[0].poses, refined.boxes, frame)
        changed = (refined.frames[frame] != frames[frame]).any(-1)
        assert not (changed & (weight == 0)).any(), frame
        # The face itself is replaced: most pixels of the mask's core change, and none outside the box.
        assert changed[weight > 0.9].mean() > 0.5, frame
        left, top, right, bottom = refined.boxes.corners(frame)
        ys, xs = np.nonzero(weight)
        assert xs.min() >= np.floor(left) and xs.max() < np.ceil(right) and ys.min() >= np.floor(top)
        assert ys.max() < np.ceil(bottom) and 0.05 < (weight > 0).mean() < 0.5


def test_direct_mode_frame_zero_is_the_source_crops_round_trip(tiny_components, refined, animation):
    from zeroshot.imaging import decode_latents, encode_latents, to_model_tensor

    crop = crop_image(animation[1], refined.boxes, 0, FACE_SIZE)
    round_trip = decode_latents(tiny_components.vae, encode_latents(tiny_components.vae, to_model_tensor(crop)))[0]
    difference = np.abs(refined.crops[0].astype(int) - round_trip.astype(int))
    assert difference.max() <= 1
    # The other frames are not the source's crop.
    assert np.abs(refined.crops[1:].astype(int) - round_trip.astype(int)).max() > 20


def test_windowed_equals_one_batch(tiny_components, refined, animation):
    for window in (1, 2):
        windowed = _refine(tiny_components, animation, window=window)
        torch.testing.assert_close(windowed.latents, refined.latents, rtol=1e-4, atol=1e-5, msg=f"window {window}")
    # The comparison can see the anchoring: attention to each crop itself only gives other latents.
    alone = _refine(tiny_components, animation, lambdas=(0.0, 0.0, 1.0))
    assert (alone.latents[1:] - refined.latents[1:]).abs().max() > 100 * 1e-5


def test_frames_without_a_face_or_with_a_tiny_one_are_skipped_and_left_as_they_are(tiny_components, animation):
    import dataclasses

    from zeroshot.face.refinement import refine_faces

    result, source, prompt, masks = animation
    body = result.poses.body.copy()
    head = [JOINT[name] for name in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")]
    body[3, head] = 0.0
    # Frame 4 (alone in its run, so not smoothed with others): the head 4 pixels above the neck, a 3-pixel face.
    body[4, head] = 0.0
    body[4, JOINT["nose"]] = (body[4, JOINT["neck"], 0], body[4, JOINT["neck"], 1] - 4 / SIZE, 1.0)
    poses = dataclasses.replace(result.poses, body=body)
    settings = FaceRefinement(strength=0.6, face_size=FACE_SIZE)
    pacm_settings = PACMSettings(mode="direct", num_inference_steps=STEPS)
    refined = refine_faces(
        tiny_components,
        result.frames,
        source,
        poses,
        prompt,
        settings,
        pacm_settings,
        masks=masks,
        show_progress=False,
    )
    assert refined.skipped_frames == {"no_face": [3], "too_small": [4]} and refined.boxes.to_list()[3] is None
    assert refined.refined_frames == [0, 1, 2] and len(refined.crops) == 3
    np.testing.assert_array_equal(refined.frames[3:], result.frames[3:])
    assert (refined.frames[2] != result.frames[2]).any()


def test_bad_face_settings_are_refused_before_any_work(tiny_components, animation):
    from zeroshot import PoseAnimatePipeline
    from zeroshot.video import load_image

    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\], got 1.5"):
        FaceRefinement(strength=1.5)
    with pytest.raises(ValueError, match=r"face_size must be a positive multiple of 8 .* got 500"):
        FaceRefinement(face_size=500)
    pipe = PoseAnimatePipeline.from_components(tiny_components)
    with pytest.raises(ValueError, match="face_refinement works on decoded frames: use output_type='np'"):
        pipe(load_image(IMAGE), load_poses(POSES), output_type="latent", face_refinement=FaceRefinement())
    with pytest.raises(ZeroshotError, match=r"only 13 pixels across at the output size 64x64"):
        pipe(load_image(IMAGE), load_poses(POSES), height=64, width=64, face_refinement=FaceRefinement())


def test_refinement_costs_are_reported(refined):
    # 5 DDIM steps: the source crop's inversion (5) and direct-mode source stage (2 x 5), then int(0.6 * 5) = 3
    # guided steps for each of the 5 crops.
    assert {name: stage["forward"] for name, stage in refined.stages.items()} == {
        "ddim_inversion": 5,
        "source": 10,
        "generation": 2 * 5 * 3,
    }
    assert refined.stage_stats()["forward"] == 45 and refined.stage_stats()["backward"] == 0


# ---- face figures of scripts/evaluate.py -------------------------------------------------------------------------


def test_face_scores_compare_faces_where_the_head_pose_allows_it():
    """The astronaut panned 4 pixels a frame with a little noise, its pose moved along: faces match the source's and
    the re-detected head joints sit on the targets. A face scrambled in frame 2 lowers the figures; a head turned in
    frame 3 (the nose moved within the face) takes that frame out of the comparison."""
    from PIL import Image

    from zeroshot.evaluation import detect_frame_poses
    from zeroshot.face.evaluation import face_scores
    from zeroshot.poses import detect_source_pose
    from zeroshot.testing import astronaut

    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256), Image.LANCZOS))
    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(photo, 4 * i, axis=1) for i in range(4)])
    frames = np.clip(frames + rng.integers(-3, 4, frames.shape), 0, 255).astype(np.uint8)
    pose = detect_source_pose(photo)
    body = np.repeat(pose.body, 4, axis=0)
    body[:, :, 0] += 4 * np.arange(4)[:, None] / 256
    poses = PoseSequence(body, size=(256, 256))
    detected = detect_frame_poses(frames)
    scores = face_scores(frames, photo, poses, detected)
    assert scores["face_frames_compared"] == 3 and scores["face_psnr"] > 25 and scores["face_ssim"] > 0.8
    assert scores["face_keypoint_error"] < 0.05
    scrambled = frames.copy()
    left, top, right, bottom = (int(v) for v in face_boxes(poses).corners(2))
    region = scrambled[2, top:bottom, left:right]
    scrambled[2, top:bottom, left:right] = rng.permutation(region.reshape(-1, 3)).reshape(region.shape)
    worse = face_scores(scrambled, photo, poses, detected)
    assert worse["face_psnr"] < scores["face_psnr"] - 3 and worse["face_ssim"] < scores["face_ssim"] - 0.1
    turned = body.copy()
    turned[3, JOINT["nose"], 0] += 0.1 * face_boxes(poses).sides[3] / 256
    assert face_scores(frames, photo, PoseSequence(turned, size=(256, 256)), detected)["face_frames_compared"] == 2


# ---- scripts/animate.py --refine-face ----------------------------------------------------------------------------


def _script(name):
    """scripts/NAME as a module, to run its `main` in-process through `zeroshot.cli.run` as the script does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script_run(tiny_model_paths, tmp_path_factory):
    """One real run of animate.py with --refine-face: 13 poses at 128x128, direct mode, 4 steps, strength 0.5."""
    folder = tmp_path_factory.mktemp("face")
    arguments = ["--image", str(IMAGE), "--poses", str(POSES), "--out", str(folder / "wave.mp4"), "--size", "128"]
    arguments += ["--prompt", "a photo of an astronaut", "--steps", "4", "--inversion", "direct"]
    arguments += ["--transition-frames", "1", "--refine-face", "0.5", "--face-size", "64"]
    arguments += ["--model", str(tiny_model_paths.model), "--controlnet", str(tiny_model_paths.controlnet)]
    arguments += ["--device", "cpu", "--cache-dir", str(folder / "cache")]
    command = [sys.executable, str(ROOT / "scripts" / "animate.py"), *arguments]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_script_refines_faces_and_reports_boxes_and_cost(script_run):
    from zeroshot.video import read_video

    report = json.loads((script_run / "wave.report.json").read_text())
    frames = report["frames"]
    assert read_video(script_run / "wave.mp4").frames.shape == (frames, 128, 128, 3)
    face = report["face_refinement"]
    assert len(face["boxes"]) == frames and all(box is not None for box in face["boxes"])
    assert face["refined_frames"] == list(range(frames)) and face["steps"] == 2
    assert face["settings"]["strength"] == 0.5 and face["settings"]["face_size"] == 64
    # The source crop's inversion and direct-mode source stage (4 and 2 x 4), then 2 guided steps of every crop.
    stage = report["stages"]["face_refinement"]
    assert stage["forward"] == 4 + 8 + 2 * 2 * frames and stage["seconds"] > 0
    assert report["unet_evaluations"]["per_stage_per_frame"]["face_refinement"]["forward"] == stage["forward"] / frames
    assert report["unet_evaluations"]["forward"] == sum(s["forward"] for s in report["stages"].values())


def test_evaluate_adds_face_figures(script_run, capsys):
    from zeroshot.cli import run
    from zeroshot.face.evaluation import FACE_METRICS

    arguments = [str(script_run / "wave.mp4"), "--source", str(IMAGE), "--poses", str(script_run / "wave.poses.json")]
    assert run(_script("evaluate.py").main, arguments) == 0
    metrics = json.loads((script_run / "wave.metrics.json").read_text())["metrics"]
    assert set(FACE_METRICS) <= set(metrics) and "face_psnr" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--refine-face": "1.5"}, "--refine-face STRENGTH must lie in [0, 1], got 1.5."),
        ({"--refine-face": "0.3", "--face-size": "500"}, "--face-size must be a positive multiple of 8"),
        ({"--face-size": "512"}, "--face-size sets the crop size of the face refinement pass: add --refine-face."),
        ({"--refine-face": None, "--size": "64"}, "is only 13 pixels across at the output size 64x64; face "),
        (
            {"--refine-face": None, "--source-pose": "headless.json"},
            "Face refinement needs a face in the source image",
        ),
        ({"--refine-face": None, "--poses": "rendered"}, "cannot be used for --refine-face"),
    ],
)
def test_script_rejects_bad_face_input_before_loading_models(change, message, tmp_path, capsys):
    from PIL import Image

    from zeroshot.cli import run
    from zeroshot.poses import detect_source_pose, write_openpose_json, write_pose_images

    image = Image.open(IMAGE)
    pose = detect_source_pose(image)
    pose.body[0, [JOINT[name] for name in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")]] = 0.0
    write_openpose_json(pose, tmp_path / "headless.json")
    write_pose_images(load_poses(POSES)[np.arange(2)], tmp_path / "rendered", width=64, height=64)
    values = {"--image": str(IMAGE), "--poses": str(POSES), "--out": str(tmp_path / "out" / "wave.mp4")}
    values |= {"--size": "128", "--model": str(tmp_path / "no-such-model")}  # never reached
    values |= {
        key: str(tmp_path / value) if value in ("headless.json", "rendered") else value
        for key, value in change.items()
    }
    arguments = [item for key, value in values.items() for item in ((key,) if value is None else (key, value))]
    status = run(_script("animate.py").main, arguments)
    stderr = capsys.readouterr().err
    assert status == 2 and message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
