"""PoseAnimate end to end on tiny random models, the real astronaut photo and the bundled pose sequence: the pipeline,
windows against one batch, frame 0 against PACM's own reconstruction, and scripts/animate.py for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroshot import PoseAnimatePipeline
from zeroshot.pacm import PACMSettings, reconstruct_source
from zeroshot.poseanimate import prepare_source
from zeroshot.poses import PoseSequence, load_poses
from zeroshot.video import load_image, read_video

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "animate.py"
IMAGE = ROOT / "zeroshot" / "assets" / "astronaut.jpg"
POSES = ROOT / "zeroshot" / "assets" / "wave.json"
SIZE = 64


@pytest.fixture(scope="module")
def pipe(tiny_components):
    return PoseAnimatePipeline.from_components(tiny_components)


@pytest.fixture(scope="module")
def wave():
    """The first 5 poses of the bundled wave: the arm rises."""
    return load_poses(POSES)[np.arange(5)]


def _animate(pipe, wave, **options):
    options.setdefault("pacm_settings", PACMSettings(mode="direct", num_inference_steps=5))
    options.setdefault("transition_frames", 2)
    options.setdefault("height", SIZE)
    options.setdefault("width", SIZE)
    return pipe(load_image(IMAGE), wave, "a photo of an astronaut", show_progress=False, **options)


def test_frames_windows_and_report(pipe, wave):
    result = _animate(pipe, wave, window=16, output_type="latent")
    assert result.num_transition == 2
    assert result.frames.shape == (1 + 2 + 5, 4, SIZE // 8, SIZE // 8)
    assert len(result.poses) == 8 and result.pose_images.shape == (8, SIZE, SIZE, 3)
    # The poses of the animation: the source pose first, then the transition, then the aligned target poses.
    assert result.poses.size == (SIZE, SIZE)
    np.testing.assert_array_equal(result.pose_images, result.poses.render())
    # Windows of 1 and 3 frames (3 does not divide 8) give the frames of one batch.
    for window in (1, 3):
        windowed = _animate(pipe, wave, window=window, output_type="latent")
        torch.testing.assert_close(windowed.frames, result.frames, rtol=1e-4, atol=1e-5)
    # Direct inversion: frame 0 retraces the source latent exactly.
    assert result.report["reconstruction"]["frame0_latent_relative_error"] < 1e-4
    # The other frames follow their own poses: they differ from the source and from each other.
    differences = (result.frames[1:] - result.frames[:1]).flatten(1).norm(dim=1)
    assert (differences > 1e-3).all()
    report = result.report
    assert set(report["stages"]) == {"poses", "mask", "encode", "ddim_inversion", "source", "frames", "generation"}
    assert report["stages"]["generation"]["forward"] == 2 * 8 * 5  # two guidance branches, 8 frames, 5 steps
    assert report["unet_evaluations"]["forward_per_frame"] == pytest.approx(report["unet_evaluations"]["forward"] / 8)
    assert report["peak_memory_bytes"] >= 0 and report["settings"]["subject"] == "astronaut"


def _pacm_inputs(components, pose_images):
    from zeroshot.imaging import encode_latents, to_condition_tensor, to_model_tensor
    from zeroshot.prompts import encode_prompt

    source = prepare_source(load_image(IMAGE), SIZE, SIZE, mask=None)
    latent = encode_latents(components.vae, to_model_tensor(np.asarray(source.image)))
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    poses = to_condition_tensor(pose_images)
    return latent, prompt, poses


def test_frame_zero_is_pacms_reconstruction_of_the_source(pipe, tiny_components, wave):
    """Paper mode: dual-consistency attention, decoupling and windows leave frame 0 exactly as PACM reconstructs it
    without any hook."""
    from zeroshot.pacm import run_pacm

    settings = PACMSettings(num_inference_steps=4, source_inner_steps=2, learning_rate=5e-2)
    result = _animate(pipe, wave[np.arange(2)], pacm_settings=settings, window=2, output_type="latent")
    latent, prompt, poses = _pacm_inputs(tiny_components, result.pose_images)
    pacm = run_pacm(tiny_components, latent, prompt, poses[:1], poses[1:], settings, show_progress=False)
    reference = reconstruct_source(tiny_components, pacm, poses[:1])[0]
    torch.testing.assert_close(result.frames[0], reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(result.frames[1], reference, atol=1e-3)


@torch.no_grad()
def _diffusers_reference(components, pacm, poses, frame):
    """Frame `frame` sampled with diffusers' own DDIMScheduler, ControlNet and UNet: its pose image, its per-step
    embeddings (the source's for frame 0), classifier-free guidance, and direct mode's offsets."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(components.scheduler.config)
    scheduler.set_timesteps(len(pacm.timesteps))
    latents = pacm.latents[-1][None].clone()
    pose = poses[frame : frame + 1].repeat(2, 1, 1, 1)
    for step, timestep in enumerate(scheduler.timesteps):
        text = torch.cat(pacm.step_embeddings(step, [frame]))
        model_input = latents.repeat(2, 1, 1, 1)
        down, mid = components.controlnet(model_input, timestep, text, controlnet_cond=pose, return_dict=False)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        unconditional, conditional = components.unet(model_input, timestep, text, **residuals).sample.chunk(2)
        noise = unconditional + pacm.guidance_scale * (conditional - unconditional)
        latents = scheduler.step(noise, timestep, latents).prev_sample
        if pacm.source_offsets is not None:
            latents = latents + pacm.source_offsets[step]
    return latents[0]


@pytest.mark.parametrize("mode", ["paper", "direct"])
def test_generation_gives_each_frame_its_pose_embeddings_and_offsets(mode, wave):
    """With attention weights (0, 0, 1) and no decoupling the frames are independent, so each must equal plain
    guided sampling with diffusers' own scheduler, its own pose image and its own embeddings."""
    from zeroshot.generation import generate_latents
    from zeroshot.pacm import ControlledDenoiser, DDIMSchedule, run_pacm
    from zeroshot.testing import build_random_components

    components = build_random_components("tiny", controlnet_std=2.0)  # a ControlNet that reacts to the pose
    # A large learning rate and several steps per frame move the frames' embeddings well away from the source's.
    settings = PACMSettings(
        mode=mode,
        num_inference_steps=4,
        source_inner_steps=2,
        frame_inner_steps=4,
        learning_rate=0.5,
        early_stop_epsilon=0.0,
        early_stop_slope=0.0,
    )
    pose_images = PoseAnimatePipeline.from_components(components).prepare_poses(
        prepare_source(load_image(IMAGE), SIZE, SIZE, mask=None).pose, wave[np.arange(3)], 0
    )[1]
    latent, prompt, poses = _pacm_inputs(components, pose_images)
    pacm = run_pacm(components, latent, prompt, poses[:1], poses[1:], settings, show_progress=False)
    generated = generate_latents(
        ControlledDenoiser(components),
        DDIMSchedule.from_scheduler(components.scheduler, 4),
        pacm,
        pose_images,
        None,
        lambdas=(0.0, 0.0, 1.0),
        decoupling=None,
        window=2,
        show_progress=False,
    )
    for frame in range(4):
        reference = _diffusers_reference(components, pacm, poses, frame)
        torch.testing.assert_close(generated[frame], reference, rtol=1e-4, atol=1e-5, msg=f"frame {frame}")
    # The comparison can tell poses apart: frame 3 sampled with the source pose differs from frame 3.
    wrong_pose = _diffusers_reference(components, pacm, poses[[0, 1, 2, 0]], 3)
    assert (wrong_pose - generated[3]).abs().max() > 100 * 1e-5


def test_rendered_pose_images_are_used_as_they_are(pipe, wave):
    from zeroshot.poses import RenderedPoses

    rendered = RenderedPoses(wave.render(128, 128))
    result = _animate(pipe, rendered, transition_frames=None, output_type="latent")
    assert result.poses is None and result.num_transition == 0 and len(result.frames) == 6
    with pytest.raises(Exception, match="cannot be aligned to the source or get transition frames"):
        _animate(pipe, rendered, transition_frames=3)


def test_bad_pipeline_options_are_explained(pipe, wave):
    from zeroshot.errors import ZeroshotError

    with pytest.raises(ZeroshotError, match="multiples of 8"):
        _animate(pipe, wave, height=60)
    with pytest.raises(ZeroshotError, match="--subject WORD"):
        pipe(load_image(IMAGE), wave, "a photo", height=SIZE, width=SIZE, show_progress=False)
    with pytest.raises(ZeroshotError, match="summing to 1"):
        _animate(pipe, wave, lambdas=(0.5, 0.5, 0.5))


# ---- scripts/animate.py ------------------------------------------------------------------------------------------


def _run(arguments, models, tmp_path):
    command = [sys.executable, str(SCRIPT), *arguments, "--model", str(models.model)]
    command += ["--controlnet", str(models.controlnet), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)


@pytest.fixture(scope="module")
def animation(tiny_model_paths, tmp_path_factory):
    """One real run of the script: 12 wave poses and 2 transition frames at 64x64, paper mode with few steps."""
    folder = tmp_path_factory.mktemp("animate")
    arguments = ["--image", str(IMAGE), "--poses", str(POSES), "--out", str(folder / "wave.mp4"), "--size", "64"]
    arguments += ["--prompt", "a photo of an astronaut", "--steps", "4", "--source-inner-steps", "2"]
    arguments += ["--transition-frames", "2", "--seed", "3"]
    result = _run(arguments, tiny_model_paths, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, arguments, result


def test_script_writes_video_poses_and_report(animation):
    folder, _, result = animation
    assert sorted(path.name for path in folder.iterdir()) == [
        "cache",
        "wave.mp4",
        "wave.poses.json",
        "wave.report.json",
    ]
    video = read_video(folder / "wave.mp4")
    assert video.frames.shape == (1 + 2 + 12, 64, 64, 3) and video.fps == pytest.approx(8.0)
    report = json.loads((folder / "wave.report.json").read_text())
    expected = {"settings", "seed", "stages", "unet_evaluations", "peak_memory_bytes", "reconstruction", "fps"}
    assert expected <= set(report) and report["seed"] == 3 and report["frames"] == 15
    for stage in ("poses", "mask", "encode", "ddim_inversion", "source", "frames", "generation", "decode"):
        assert report["stages"][stage]["seconds"] >= 0, stage
    assert report["stages"]["source"]["backward"] > 0  # paper mode optimises
    assert {"frame0_latent_relative_error", "frame0_psnr_vs_vae_round_trip"} <= set(report["reconstruction"])
    assert set(report["unet_evaluations"]["per_stage_per_frame"]) == {
        "ddim_inversion",
        "source",
        "frames",
        "generation",
    }
    poses = load_poses(folder / "wave.poses.json")
    assert isinstance(poses, PoseSequence) and len(poses) == 15 and poses.size == (64, 64)
    assert "wave.mp4: 15 frames (2 transition)" in result.stdout
    assert result.stderr.startswith(f"animating {IMAGE} with the poses of {POSES} into {folder / 'wave.mp4'} (64x64")
    summary = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[:-1]}
    assert summary["stage"] == ["seconds", "UNet", "fwd", "UNet", "bwd", "cache"]
    for stage in ("poses", "mask", "encode", "ddim_inversion", "source", "frames", "generation", "decode", "total"):
        assert stage in summary, stage
    frames = report["stages"]["frames"]
    assert summary["frames"][1:3] == [str(frames["forward"]), str(frames["backward"])]


def test_script_second_run_uses_the_cache_and_gives_the_same_frames(animation, tiny_model_paths):
    folder, arguments, _ = animation
    again = [*arguments]
    again[again.index("--out") + 1] = str(folder / "again.mp4")
    result = _run(again, tiny_model_paths, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((folder / "again.report.json").read_text())
    assert all(report["stages"][stage]["cached"] for stage in ("ddim_inversion", "source", "frames"))
    assert report["stages"]["source"]["forward"] == 0
    assert any(line.startswith("source") and line.endswith("cached") for line in result.stdout.splitlines())
    np.testing.assert_array_equal(read_video(folder / "again.mp4").frames, read_video(folder / "wave.mp4").frames)


def test_evaluate_scores_a_generated_clip(animation):
    from zeroshot.evaluation import OFFLINE_METRICS

    folder, _, _ = animation
    command = [sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(folder / "wave.mp4"), "--source", str(IMAGE)]
    command += ["--poses", str(folder / "wave.poses.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((folder / "wave.metrics.json").read_text())["metrics"]
    assert set(OFFLINE_METRICS) <= set(metrics)
    # Undefined figures (no joint re-detected; no face whose head pose matches the source's) are written as null.
    defined = [name for name in OFFLINE_METRICS if name != "pose_keypoint_error" and not name.startswith("face_")]
    assert all(np.isfinite(metrics[name]) for name in defined) and metrics["face_frames_compared"] >= 0


def _load_script():
    """scripts/animate.py as a module, to run its `main` in-process through `zeroshot.cli.run` as the script does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("animate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": "missing.png"}, "does not exist"),
        ({"--poses": "not-poses.txt"}, "not-poses.txt"),
        ({"--size": "60x64"}, "must be positive multiples of 8"),
        ({"--inversion": "magic"}, "invalid choice: 'magic'"),
        ({"--lambdas": "1,1,1"}, "summing to 1"),
        ({"--out": "/proc/sys/wave.mp4"}, "is not writable"),
        ({"--out": "clip.avi"}, "use a .mp4 or .gif file or a folder path"),
        ({"--transition-frames": "-1"}, "argument --transition-frames: -1 must be at least 0"),
    ],
)
def test_script_rejects_bad_input_clearly_and_writes_nothing(change, message, tiny_model_paths, tmp_path, capsys):
    """Checked before any model loads, so the script's `main` runs in-process (through `zeroshot.cli.run`, as the
    script does); the subprocess test below covers a failure after loading."""
    from zeroshot.cli import run

    (tmp_path / "not-poses.txt").write_text("hello")
    values = {"--image": str(IMAGE), "--poses": str(POSES), "--out": str(tmp_path / "out" / "wave.mp4")}
    local = (".png", ".txt", ".avi")
    values.update({key: str(tmp_path / value) if value.endswith(local) else value for key, value in change.items()})
    arguments = [item for pair in values.items() for item in pair]
    arguments += ["--model", str(tiny_model_paths.model), "--controlnet", str(tiny_model_paths.controlnet)]
    try:
        status = run(_load_script().main, arguments)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    stderr = capsys.readouterr().err
    assert status == 2 and message in stderr and "Traceback" not in stderr
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


def test_failure_after_loading_the_models_leaves_no_output(tiny_model_paths, tmp_path):
    """A subject word the prompt lacks is found by the tokenizer, after the models loaded: the run stops with one
    line, and the output folder stays empty."""
    arguments = ["--image", str(IMAGE), "--poses", str(POSES), "--out", str(tmp_path / "o" / "w.mp4"), "--size", "64"]
    result = _run([*arguments, "--subject", "zebra"], tiny_model_paths, tmp_path)
    assert result.returncode == 2 and "The subject 'zebra' does not occur in the prompt" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_no_person_is_found_before_the_models_load(tiny_model_paths, tmp_path, capsys):
    from zeroshot.cli import run

    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    arguments = ["--image", str(tmp_path / "grey.png"), "--poses", str(POSES), "--out", str(tmp_path / "o" / "w.mp4")]
    arguments += ["--model", str(tmp_path / "no-such-model")]  # never reached
    assert run(_load_script().main, arguments) == 2
    assert "No person found in the source image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_step_callback_sees_every_step_and_can_interrupt(pipe, wave):
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append((step, timestep, tuple(tensors["latents"].shape)))
        if step == 1:
            pipeline.interrupt = True
        return {"latents": tensors["latents"] * 1.0}

    two = wave[np.arange(2)]
    result = _animate(pipe, two, transition_frames=0, output_type="latent", callback_on_step_end=callback)
    assert [step for step, _, _ in seen] == [0, 1] and seen[0][2] == (3, 4, SIZE // 8, SIZE // 8)
    assert result.report["interrupted"] is True
    full = _animate(pipe, two, transition_frames=0, output_type="latent")
    assert full.report["interrupted"] is False and not torch.allclose(full.frames, result.frames)
