"""QGA fine-tuning on a tiny model and a real clip: the widened UNet starts as Stable Diffusion, training overfits,
every batch is seen once per epoch (epochs that do not divide into optimizer steps included), resuming is exact, the
result loads into the edit pipeline, several processes work, and bad runs are explained."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from zeroshot.cli import run
from zeroshot.loading import load_components
from zeroshot.prompts import encode_texts
from zeroshot.qffusion import QffusionPipeline, edit_video, load_qffusion_components
from zeroshot.qffusion.data import QuadrantGridDataset, prepare_video
from zeroshot.qffusion.training import TrainingSettings, _grid_loss, train_qga, widen_conv_in
from zeroshot.testing import sample_video_path
from zeroshot.video import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    video = read_video(sample_video_path("carphone"), max_frames=14)
    write_video(video.frames, folder / "carphone.mp4", video.fps)
    return folder


@pytest.fixture(scope="module")
def settings(tiny_model_paths, data_folder, tmp_path_factory):
    return TrainingSettings(
        model=str(tiny_model_paths.model),
        data=str(data_folder),
        output_dir=str(tmp_path_factory.mktemp("run") / "full"),
        resolution=32,
        interval="1:2",
        crop_scale=2.0,  # the face fills half the crop, which is smaller than the frame
        learning_rate=2e-3,
        warmup_steps=2,
        max_steps=24,
        gradient_accumulation=2,
        checkpoint_every=12,
        keep_checkpoints=0,
        num_workers=0,
        cpu=True,
        offline=True,
        show_progress=False,
    )


#: The clip's samples: 11 starts at interval 1 and 8 at interval 2, one per batch; 2 batches per optimizer step, so
#: each epoch ends with a step of one batch.
BATCHES_PER_EPOCH = 19


@pytest.fixture(scope="module")
def full_run(settings):
    """The uninterrupted run, and the dataset indices it read, in order (one sample per batch)."""
    seen = []
    read = QuadrantGridDataset.__getitem__

    def recording(dataset, index):
        seen.append(index)
        return read(dataset, index)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QuadrantGridDataset, "__getitem__", recording)
        final = train_qga(settings)
    return final, seen


def test_widened_unet_computes_what_stable_diffusion_computed(tiny_components):
    base = copy.deepcopy(tiny_components.unet)
    widened = widen_conv_in(copy.deepcopy(tiny_components.unet))
    assert widened.config.in_channels == 12 and widened.conv_in.weight[:, :8].abs().sum() == 0
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 4, 8, 8, generator=generator)
    grids = torch.randn(2, 8, 8, 8, generator=generator) * 3  # reference and condition channels: anything
    text = torch.randn(2, 77, 32, generator=generator)
    with torch.no_grad():
        expected = base(noisy, 300, text).sample
        actual = widened(torch.cat([grids, noisy], dim=1), 300, text).sample
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def _fixed_loss(unet, components, video):
    """The loss over every sample of the clip, with fixed noise and timesteps."""
    dataset = QuadrantGridDataset([video], (1, 1))
    batch = {key: torch.stack([dataset[i][key] for i in range(len(dataset))]) for key in ("frames", "conditions")}
    text = encode_texts(components.tokenizer, components.text_encoder, [""])
    with torch.no_grad():
        scheduler = DDPMScheduler.from_config(components.scheduler.config)
        losses = [
            _grid_loss(batch, unet, components.vae, text, scheduler, torch.Generator().manual_seed(s))
            for s in range(4)
        ]
    return float(torch.stack(losses).mean())


def test_training_overfits_a_clip(full_run, settings, tiny_model_paths):
    log = [json.loads(line) for line in (Path(settings.output_dir) / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 25))
    assert log[0]["lr"] == pytest.approx(1e-3) and log[-1]["lr"] == pytest.approx(2e-3)  # warm-up over 2 steps
    video = prepare_video(
        Path(settings.data) / "carphone.mp4", Path(settings.output_dir) / "data-cache", resolution=32, crop_scale=2.0
    )  # the cache the run wrote
    assert video.frames.shape == (14, 32, 32, 3)
    base = load_components(str(tiny_model_paths.model), None, device="cpu")
    trained, config = load_qffusion_components(str(full_run[0]), device="cpu")
    before = _fixed_loss(widen_conv_in(base.unet), base, video)
    after = _fixed_loss(trained.unet, trained, video)
    assert after < 0.6 * before, (before, after)
    assert config.resolution == 32 and config.frame_interval == "1:2" and config.condition == "face"


def test_every_batch_is_seen_once_per_epoch(full_run, settings):
    """24 steps of 2 batches over epochs of 19: steps 10 and 20 end their epochs with one batch, and the next epoch
    still starts at its first batch (a position derived from step * accumulation would skip it)."""
    _, seen = full_run
    assert len(seen) == 2 * BATCHES_PER_EPOCH + 8 + 1  # accelerate reads one batch ahead, to see the data end
    first, second, third = seen[:BATCHES_PER_EPOCH], seen[BATCHES_PER_EPOCH : 2 * BATCHES_PER_EPOCH], seen[-9:]
    assert sorted(first) == sorted(second) == list(range(BATCHES_PER_EPOCH))
    assert first != second and len(set(third)) == 9  # reshuffled every epoch
    log = [json.loads(line) for line in (Path(settings.output_dir) / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [0] * 10 + [1] * 10 + [2] * 4


def test_resumed_run_ends_where_the_uninterrupted_run_ends(full_run, settings, tmp_path):
    """Interrupted at step 12, after the short step that ended the first epoch: 23 batches in, not 24."""
    interrupted = replace(settings, output_dir=str(tmp_path / "resumed"), max_steps=12)
    train_qga(interrupted)
    assert sorted(p.name for p in Path(interrupted.output_dir).glob("checkpoint-*")) == ["checkpoint-12"]
    state = json.loads((Path(interrupted.output_dir) / "checkpoint-12" / "training_state.json").read_text())
    assert state["batches"] == BATCHES_PER_EPOCH + 4 and state["num_processes"] == 1
    log_path = Path(interrupted.output_dir) / "log.jsonl"
    with log_path.open("a") as log:  # what a run killed after its checkpoint at 12 leaves: steps 13, 14 and a half
        log.writelines(json.dumps({"step": step, "epoch": 1, "loss": 0.5}) + "\n" for step in (13, 14))
        log.write('{"step": 15, "ep')
    train_qga(replace(interrupted, max_steps=24, resume="latest"))
    full = load_file(Path(settings.output_dir) / "checkpoint-24" / "unet.safetensors")
    resumed = load_file(Path(interrupted.output_dir) / "checkpoint-24" / "unet.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=1e-7, msg=name)
    log = [json.loads(line) for line in (Path(interrupted.output_dir) / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 25))


def test_trained_checkpoints_load_into_the_edit_pipeline(full_run, settings, tiny_model_paths, data_folder):
    video = read_video(data_folder / "carphone.mp4")
    unet_file = Path(settings.output_dir) / "checkpoint-24" / "unet.safetensors"
    (prepared,) = (Path(settings.output_dir) / "data-cache").iterdir()
    trained_boxes = json.loads((prepared / "meta.json").read_text())["crop_boxes"]
    for checkpoint in (full_run[0], unet_file):
        components, config = load_qffusion_components(str(checkpoint), model=str(tiny_model_paths.model))
        assert (config.crop, config.crop_scale, config.crop_smoothing) == ("subject", 2.0, 5.0)
        pipe = QffusionPipeline.from_components(components)
        start, end = video.frames[0], video.frames[-1]
        result = edit_video(pipe, config, video, start, end, num_inference_steps=1, show_progress=False)
        assert result.video.frames.shape == video.frames.shape
        assert np.array_equal(result.video.frames[0], video.frames[0])
        assert result.conditions.shape[1:3] == (32, 32)  # the checkpoint's training resolution
        assert result.crop_boxes.tolist() == trained_boxes  # the crops the checkpoint learned on this clip
        assert trained_boxes[0][2] - trained_boxes[0][0] < 144


def test_whole_frames_keep_their_aspect_ratio(data_folder, tmp_path):
    prepared = prepare_video(data_folder / "carphone.mp4", tmp_path, resolution=96, crop="full", show_progress=False)
    assert prepared.frames.shape == (14, 96, 128, 3)  # 176x144 to a shorter side of 96, sides multiples of 32
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "meta.json").read_text())["crop_boxes"] == [[0, 0, 176, 144]] * 14
    sample = QuadrantGridDataset([prepared], (1, 1))[0]
    assert sample["frames"].shape == sample["conditions"].shape == (4, 3, 96, 128)


def test_two_processes(settings, tmp_path, capsys):
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "scripts" / "train_qga.py"),
        "--model", settings.model, "--data", settings.data, "--out", str(output), "--resolution", "32",
        "--interval", "1", "--max-steps", "2", "--checkpoint-every", "2", "--num-workers", "0", "--cpu", "--offline",
        "--no-progress", "--warmup-steps", "0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained model:") == 1
    checkpoint = output / "checkpoint-2"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert len((output / "log.jsonl").read_text().splitlines()) == 2
    assert (output / "final" / "qffusion.json").is_file()
    assert not [path.name for path in output.iterdir() if path.name.startswith(".")]  # no staging left behind
    resume = [*command[6:], "--resume", "latest"]  # one process this time
    assert "processes (2 -> 1)" in _train_script_error(capsys, resume)


def _train_script_error(capsys, argv):
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train_qga.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = run(module.main, argv)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err
    return captured.err


def test_train_script_errors(full_run, settings, tmp_path, capsys):
    common = ["--model", settings.model, "--cpu", "--offline", "--no-progress", "--num-workers", "0"]
    run_args = ["--data", settings.data, "--resolution", "32", "--interval", "1:2", *common]
    message = _train_script_error(capsys, [*run_args, "--out", settings.output_dir])
    assert "already holds checkpoints (newest checkpoint-24). Continue with --resume latest" in message
    changed = [*run_args[:3], "64", *run_args[4:], "-o", settings.output_dir, "--resume", "latest"]
    message = _train_script_error(capsys, changed)
    assert "Cannot resume from" in message and "resolution (32 -> 64)" in message
    accumulation = [*run_args, "--out", settings.output_dir, "--resume", "latest", "--gradient-accumulation", "3"]
    assert "gradient_accumulation (2 -> 3)" in _train_script_error(capsys, accumulation)
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _train_script_error(capsys, ["--data", str(empty), "--out", str(tmp_path / "o"), *common])
    assert "No videos" in message
    message = _train_script_error(
        capsys, ["--data", settings.data, "--out", str(tmp_path / "o"), "--interval", "0", *common]
    )
    assert "--interval must be at least 1" in message
    message = _train_script_error(
        capsys, ["--data", settings.data, "--out", str(tmp_path / "o"), "--crop", "face", *common]
    )
    assert message.strip() == "error: --crop must be 'subject' or 'full', got 'face'."
    message = _train_script_error(
        capsys,
        ["--data", settings.data, "--out", str(tmp_path / "o2"), "--resolution", "32", "--interval", "6",
         *common],
    )  # fmt: skip
    assert "No video is long enough for four frames 6 apart (19 frames); the longest has 14" in message
    assert not (tmp_path / "o2").exists()  # the refused run's data cache and folder are gone


def test_scripts_teach_and_refuse_bad_settings_without_loading_torch(tmp_path):
    """`--help` of edit.py and train_qga.py, and train_qga.py's settings errors, must not pay for torch."""
    code = (
        "import runpy, sys\n"
        "for argv in ([sys.argv[1], '--help'], [sys.argv[2], '--help'],\n"
        "             [sys.argv[2], '--data', 'd', '--out', sys.argv[3], '--max-steps', '0']):\n"
        "    sys.argv = argv\n"
        "    try:\n        runpy.run_path(argv[0], run_name='__main__')\n"
        "    except SystemExit as exit:\n        print('exit', exit.code)\n"
        "print('heavy:', sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    )
    scripts = [str(ROOT / "scripts" / name) for name in ("edit.py", "train_qga.py")]
    result = subprocess.run(
        [sys.executable, "-c", code, *scripts, str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("exit 0") == 2 and "exit 2" in result.stdout and "heavy: []" in result.stdout
    assert "error: --max-steps must be at least 1, got 0." in result.stderr and "Traceback" not in result.stderr
