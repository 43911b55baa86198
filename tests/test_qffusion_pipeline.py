"""QffusionPipeline on tiny random models under every kind of diffusers scheduler, and dual-frame editing of a real
video, odd-sized included (the API and scripts/edit.py)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from zeroshot.cli import run
from zeroshot.errors import ZeroshotError
from zeroshot.qffusion import QffusionConfig, QffusionPipeline, edit_video, save_qffusion_model, smooth_jump_cut
from zeroshot.qffusion.checkpoint import save_unet_weights
from zeroshot.testing import SD15_SCHEDULER_CONFIG, build_random_components, sample_video_path
from zeroshot.video import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 9


@pytest.fixture(scope="module")
def components12():
    return build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=3)


@pytest.fixture(scope="module")
def pipe(components12):
    return QffusionPipeline.from_components(components12)


@pytest.fixture(scope="module")
def checkpoint(components12, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qffusion") / "ckpt"
    return save_qffusion_model(components12, folder, QffusionConfig(resolution=32))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first frames of the real carphone video (a man talking in a car), as an .mp4 and decoded."""
    video = read_video(sample_video_path("carphone"), max_frames=CLIP_FRAMES)
    path = write_video(video.frames, tmp_path_factory.mktemp("clip") / "carphone.mp4", video.fps)
    return path, read_video(path)


@pytest.fixture(scope="module")
def odd_clip(tmp_path_factory):
    """The carphone clip cut to 175x143 (odd sides, which H.264 cannot store as they are), as a GIF and decoded."""
    video = read_video(sample_video_path("carphone"), max_frames=CLIP_FRAMES)
    path = write_video(video.frames[:, :143, :175], tmp_path_factory.mktemp("odd") / "carphone.gif", video.fps)
    return path, read_video(path)


def _edited(frame):
    """A stand-in for an edit made in an image editor: warmer colours and a dark band (sunglasses, say)."""
    edited = frame.astype(np.int16)
    edited[..., 0] += 40
    edited[40:55, 60:120] //= 4
    return np.clip(edited, 0, 255).astype(np.uint8)


def _random_images(count, seed, size=32):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _run(pipe, conditions, seed=0, **kwargs):
    start, end = _random_images(2, 99)
    options = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(seed), "show_progress": False}
    options.update(kwargs)
    return pipe(start, end, conditions, **options)


def test_references_are_the_first_and_last_frames(pipe):
    start, end = _random_images(2, 99)
    result = _run(pipe, _random_images(7, 1))
    assert result.frames.shape == (7, 32, 32, 3) and result.frames.dtype == np.uint8
    assert np.array_equal(result.frames[0], start) and np.array_equal(result.frames[-1], end)
    assert len(result.schedule) == 3 and result.schedule.kind == "qgp"
    assert not pipe.unet._forward_pre_hooks and not pipe.unet._forward_hooks  # hook removed after the call


@torch.no_grad()
def test_one_grid_matches_a_hand_driven_hook_loop(pipe, components12):
    """Four frames are one grid (0, 1, 2, 3): frames 1 and 2 must be tiles b and c of a DDIM loop over the hook with
    the references in tiles a and d and the conditions in order, noise drawn as documented (pair, then corners)."""
    from diffusers import DDIMScheduler

    from hooks import QuadrantGridHook, install_quadrant_grid_hook, unpack_pair

    start, end = _random_images(2, 99)
    conditions = _random_images(4, 8)
    frames = _run(pipe, conditions, output_type="latent").frames

    def encode(images):
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        return components12.vae.encode(tensor).latent_dist.mode() * components12.vae.config.scaling_factor

    references, condition_latents = encode(np.stack([start, end])), encode(conditions)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 4, 8, generator=generator)
    corner_noise = torch.randn(2, 1, 4, 4, 4, generator=generator)
    scheduler = DDIMScheduler.from_config(components12.scheduler.config)
    scheduler.set_timesteps(2)
    ids = components12.tokenizer([""], padding="max_length", return_tensors="pt").input_ids
    text = components12.text_encoder(ids)[0]
    hook = QuadrantGridHook(scheduler.alphas_cumprod)
    hook.set_grid(references[:1], references[1:], list(condition_latents[:, None]), corner_noise=list(corner_noise))
    latents = noise
    with install_quadrant_grid_hook(components12.unet, hook):
        for t in scheduler.timesteps:
            latents = scheduler.step(components12.unet(latents, t, text).sample, t, latents).prev_sample
    tile_b, tile_c = unpack_pair(latents)
    torch.testing.assert_close(frames[1:3], torch.cat([tile_b, tile_c]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frames[[0, 3]], references, rtol=1e-5, atol=1e-5)


def test_batched_grids_equal_grids_one_at_a_time(pipe):
    conditions = _random_images(10, 2)
    batched = _run(pipe, conditions, batch_size=3, output_type="latent").frames
    single = _run(pipe, conditions, batch_size=1, output_type="latent").frames
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_first_qgp_wave_is_a_four_frame_run(pipe):
    conditions = _random_images(10, 3)
    long = _run(pipe, conditions, output_type="latent").frames
    short = _run(pipe, conditions[[0, 3, 6, 9]], output_type="latent").frames
    torch.testing.assert_close(long[[3, 6]], short[[1, 2]], rtol=1e-5, atol=1e-5)


def test_qgp_propagates_through_generated_frames_naive_does_not(pipe):
    """Changing frame 6's condition changes every frame QGP derives from frames 3 and 6, but only frames 3 and 6
    (the grid (0, 3, 6, 9)) in the naive order, whose references are always frames 0 and 9."""
    conditions = _random_images(10, 4)
    changed = conditions.copy()
    changed[6] = _random_images(1, 5)[0]
    for schedule, expected in (("qgp", set(range(1, 9))), ("naive", {3, 6})):
        before = _run(pipe, conditions, schedule=schedule, output_type="latent").frames
        after = _run(pipe, changed, schedule=schedule, output_type="latent").frames
        differs = {i for i in range(10) if not torch.allclose(before[i], after[i], atol=1e-6)}
        assert differs == expected, schedule


SCHEDULERS = {
    "ddim": DDIMScheduler.from_config,
    "dpm++": DPMSolverMultistepScheduler.from_config,
    "euler": EulerDiscreteScheduler.from_config,  # fractional timesteps
    "heun": HeunDiscreteScheduler.from_config,  # two UNet calls per step
    "lms": LMSDiscreteScheduler.from_config,  # step() takes no generator
    "pndm": lambda config: PNDMScheduler.from_config(config, skip_prk_steps=True),  # as SD-1.5 ships it
    "unipc": UniPCMultistepScheduler.from_config,
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_any_scheduler_and_hook_removed_on_error(pipe, name):
    """Every scheduler runs, keeps no history from one batch of grids to the next (batched == one grid at a time),
    reports every UNet call to the callback, and leaves no hook behind when the loop fails."""
    default = pipe.scheduler
    pipe.scheduler = SCHEDULERS[name](SD15_SCHEDULER_CONFIG)
    try:
        conditions = _random_images(10, 6)  # waves of 1 and 3 grids
        calls = []

        def count(pipe, step, timestep, kwargs):
            calls.append(len(kwargs["grids"]))

        batched = _run(pipe, conditions, batch_size=3, output_type="latent", callback_on_step_end=count).frames
        single = _run(pipe, conditions, batch_size=1, output_type="latent").frames
        torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)  # batched convolutions round differently
        assert torch.isfinite(batched).all() and batched[1:-1].std() > 0
        pipe.scheduler.set_timesteps(2)
        assert calls == [1] * len(pipe.scheduler.timesteps) + [3] * len(pipe.scheduler.timesteps)

        def failing_callback(pipe, step, timestep, kwargs):
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError, match="stop"):
            _run(pipe, _random_images(5, 6), callback_on_step_end=failing_callback)
        assert not pipe.unet._forward_pre_hooks and not pipe.unet._forward_hooks
    finally:
        pipe.scheduler = default


def test_scheduler_that_cannot_make_the_schedule_is_explained(pipe):
    default = pipe.scheduler
    pipe.scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # Runge-Kutta warm-up: at least 4 steps
    try:
        with pytest.raises(ZeroshotError, match="PNDMScheduler cannot make a schedule of 2 steps"):
            _run(pipe, _random_images(4, 6))
        assert _run(pipe, _random_images(4, 6), num_inference_steps=4).frames.shape == (4, 32, 32, 3)
    finally:
        pipe.scheduler = default


def test_pipeline_rejects_bad_settings(pipe):
    with pytest.raises(ZeroshotError, match="32x30 is not made of positive multiples of 8"):
        _run(pipe, _random_images(4, 7), height=30)
    with pytest.raises(ZeroshotError, match=r"Got 1 condition image.*at least 2"):
        _run(pipe, _random_images(1, 7))
    with pytest.raises(ZeroshotError, match="batch_size must be at least 1"):
        _run(pipe, _random_images(4, 7), batch_size=0)
    with pytest.raises(ValueError, match="Unknown schedule 'spiral'"):
        _run(pipe, _random_images(4, 7), schedule="spiral")


def test_edit_odd_sized_real_video_in_subject_crops_pasted_back(pipe, odd_clip):
    _, video = odd_clip
    start, end = _edited(video.frames[0]), _edited(video.frames[-1])
    options = {"num_inference_steps": 2, "show_progress": False}
    config = QffusionConfig(resolution=32, crop_scale=2.0)  # the face fills half a crop smaller than the frame
    result = edit_video(pipe, config, video, start, end, **options)
    assert video.frames.shape == (CLIP_FRAMES, 143, 175, 3)
    assert result.video.frames.shape == video.frames.shape and result.video.fps == video.fps
    assert np.array_equal(result.video.frames[0], start) and np.array_equal(result.video.frames[-1], end)
    assert result.conditions.shape == (CLIP_FRAMES, 32, 32, 3)  # the checkpoint's square crops, at its resolution
    assert result.conditions.max() == 255  # the face was found and drawn
    boxes = result.crop_boxes
    side = boxes[0, 2] - boxes[0, 0]
    assert 60 < side < 143 and (boxes[:, 2:] - boxes[:, :2] == side).all()  # around the face, smaller than the frame
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 175).all() and (boxes[:, 3] <= 143).all()
    middle = zip(video.frames[1:-1], result.video.frames[1:-1], boxes[1:-1], strict=True)
    for frame, edited, (left, top, right, bottom) in middle:
        outside = np.ones(frame.shape[:2], bool)
        outside[top:bottom, left:right] = False
        assert np.array_equal(edited[outside], frame[outside])  # the input's pixels, bit for bit
        assert not np.array_equal(edited[~outside], frame[~outside])  # generated inside
    # a checkpoint trained on whole frames edits whole frames: shorter side 32, aspect kept, multiples of 8
    full = edit_video(pipe, QffusionConfig(resolution=32, crop="full"), video, start, end, **options)
    assert full.conditions.shape == (CLIP_FRAMES, 32, 40, 3) and (full.crop_boxes == [0, 0, 175, 143]).all()


def test_jump_cut_transition(pipe, clip):
    _, video = clip
    start, end = video.frames[0], _edited(video.frames[-1])
    result = smooth_jump_cut(
        pipe, QffusionConfig(resolution=32), start, end, 5, 12.5, num_inference_steps=2, show_progress=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert result.video.frames.shape == (5, *start.shape) and result.video.fps == 12.5
    assert np.array_equal(result.video.frames[0], start) and np.array_equal(result.video.frames[-1], end)


# ---- scripts/edit.py ------------------------------------------------------------------------------------------------


def _edit_script():
    spec = importlib.util.spec_from_file_location("edit_script", ROOT / "scripts" / "edit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_edit_script_writes_the_whole_odd_sized_video(checkpoint, odd_clip, tmp_path):
    """The reported failure: a 175x143 clip edited to an .mp4 (H.264 needs even sides) must come out whole."""
    path, video = odd_clip
    Image.fromarray(_edited(video.frames[0])).save(tmp_path / "start.png")
    Image.fromarray(_edited(video.frames[-1])).save(tmp_path / "end.png")
    out = tmp_path / "edited.mp4"
    command = [
        sys.executable, str(ROOT / "scripts" / "edit.py"), "--video", str(path),
        "--start", str(tmp_path / "start.png"), "--end", str(tmp_path / "end.png"), "--checkpoint", str(checkpoint),
        "-o", str(out), "--steps", "2", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = read_video(out)
    assert len(written) == CLIP_FRAMES and written.fps == pytest.approx(video.fps, rel=0.01)
    assert written.size == (176, 144)  # the writer repeats the last row and column
    first = written.frames[0, :143, :175].astype(float)
    assert np.abs(first - _edited(video.frames[0])).mean() < np.abs(first - video.frames[0]).mean()  # the edit
    report = json.loads((tmp_path / "edited.report.json").read_text())  # named as scripts/animate.py names it
    assert report["frames"] == CLIP_FRAMES and report["grids"] > 0 and report["output"] == str(out)
    assert report["crop"] == "subject" and report["working_size"] == [32, 32]
    assert len(report["crop_boxes"]) == CLIP_FRAMES and all(
        0 <= left < right <= 175 for left, _, right, _ in report["crop_boxes"]
    )
    assert set(report["seconds"]) == {"landmarks", "conditions", "generation"}
    summary = [line.split()[0] for line in result.stdout.splitlines()]
    assert summary[:5] == ["stage", "landmarks", "conditions", "generation", "total"]
    assert report["settings"]["model"] is None and report["settings"]["fps"] is None  # neither was used


def _script_error(capsys, argv):
    status = run(_edit_script().main, argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err
    return captured.err


def test_edit_script_errors(checkpoint, clip, tiny_components, tiny_model_paths, tmp_path, capsys):
    path, video = clip
    start, end = tmp_path / "start.png", tmp_path / "end.png"
    Image.fromarray(video.frames[0]).save(start)
    Image.fromarray(video.frames[-1]).save(end)
    common = ["--start", str(start), "--end", str(end), "--steps", "1", "--device", "cpu", "--no-progress"]
    out = ["-o", str(tmp_path / "out.mp4")]

    message = _script_error(capsys, ["--video", str(path), "--checkpoint", str(tiny_model_paths.model), *common, *out])
    assert "takes 4 input channels: it is a plain Stable Diffusion UNet" in message and "train_qga.py" in message
    four = save_unet_weights(tiny_components.unet, tmp_path / "sd.safetensors", QffusionConfig())
    message = _script_error(capsys, ["--video", str(path), "--checkpoint", str(four), *common, *out])
    assert "takes 4 input channels: it is a plain Stable Diffusion UNet" in message

    missing = ["--video", str(path), "--checkpoint", str(checkpoint), *common, *out]
    missing[missing.index(str(end))] = str(tmp_path / "nowhere.png")
    assert "nowhere.png' does not exist" in _script_error(capsys, missing)

    Image.fromarray(video.frames[0]).resize((64, 64)).save(tmp_path / "small.png")
    wrong_size = ["--video", str(path), "--checkpoint", str(checkpoint), *common, *out]
    wrong_size[wrong_size.index(str(start))] = str(tmp_path / "small.png")
    message = _script_error(capsys, wrong_size)
    assert "The start image is 64x64 but the video's frames are 176x144" in message
    # checked before any model loads: a checkpoint that cannot load is not reached
    wrong_size[wrong_size.index(str(checkpoint))] = str(four)
    assert "The start image is 64x64" in _script_error(capsys, wrong_size)

    Image.new("RGB", video.size).save(tmp_path / "black.png")
    no_face = ["--video", str(path), "--checkpoint", str(checkpoint), *common, *out]
    no_face[no_face.index(str(end))] = str(tmp_path / "black.png")
    assert _script_error(capsys, no_face).startswith("error: No face was found in the end image.")
    write_video(video.frames[:1], tmp_path / "one.gif", video.fps)
    one_frame = ["--video", str(tmp_path / "one.gif"), "--checkpoint", str(checkpoint), *common, *out]
    assert "The video has 1 frame; editing needs at least 2" in _script_error(capsys, one_frame)
    copied = shutil.copytree(checkpoint, tmp_path / "copied")
    (copied / "qffusion.json").write_text(QffusionConfig(condition="body", resolution=32).to_json())
    message = _script_error(capsys, ["--video", str(path), "--checkpoint", str(copied), *common, *out])
    assert "qffusion.json' disagrees with the settings its UNet weights were saved with: condition 'body'" in message

    too_short = ["--start", str(start), "--end", str(end), "--jump-cut", "2", "--checkpoint", str(four), *common[4:]]
    with pytest.raises(SystemExit) as exit:  # refused as it is parsed
        run(_edit_script().main, [*too_short, *out])
    assert exit.value.code == 2 and "argument --jump-cut: 2 must be at least 3" in capsys.readouterr().err

    assert "Pass --video IN" in _script_error(capsys, ["--checkpoint", str(checkpoint), *common, *out])
    assert "does not exist" in _script_error(
        capsys, ["--video", str(path), "--checkpoint", str(tmp_path / "no-ckpt"), *common, *out]
    )


def test_edit_script_error_exits_without_traceback(checkpoint, tmp_path):
    command = [
        sys.executable, str(ROOT / "scripts" / "edit.py"), "--video", str(tmp_path / "none.mp4"), "--start",
        str(tmp_path / "s.png"), "--end", str(tmp_path / "e.png"), "--checkpoint", str(checkpoint),
        "-o", str(tmp_path / "out.mp4"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: Image") and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"editing {tmp_path / 'none.mp4'} from")  # the first line says what will happen
    assert not (tmp_path / "out.mp4").exists()
