"""Bad inputs, replayed from a table across every script and the Python API, as a new user would make them.

Each must end with exit status 2 and one `error:` line (or, from the API, a `TypeError` or `ValueError` naming the
argument, or the `ZeroshotError` of a missing file), no traceback, no file written, and before any model loads: the
loaders are replaced by a probe that fails the case if it is reached. Most cases run in-process through
`zeroshot.cli.run`, as the scripts do; a few run as real subprocesses, one of which also proves that argument errors
import no torch. A signal alarm guards against hangs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroshot.errors import ZeroshotError

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "zeroshot" / "assets" / "astronaut.jpg"
POSES = ROOT / "zeroshot" / "assets" / "wave.json"
#: A guard against hangs (not a speed test): a case still running after this long has hung.
HANG_SECONDS = 120

# Script, arguments (`{in}` is the folder of prepared inputs, `{out}` an empty folder), and the expected message.
ANIMATE = ["--image", str(IMAGE), "--poses", str(POSES), "--out", "{out}/w.mp4", "--offline"]
EDIT = ["--start", "{in}/still.png", "--end", "{in}/still.png", "--checkpoint", "{in}/ckpt", "--out", "{out}/e.mp4"]
EVALUATE = ["{in}/still.png", "--source", str(IMAGE), "--poses", str(POSES)]
TRAIN = ["--data", "{in}/folder", "--out", "{out}/run", "--offline"]

CASES = [
    # animate.py: numbers
    ("animate", [*ANIMATE, "--fps", "-8"], "argument --fps: -8 must be greater than 0"),
    ("animate", [*ANIMATE, "--fps", "nan"], "argument --fps: 'nan' is not a finite number"),
    ("animate", [*ANIMATE, "--fps", "0"], "argument --fps: 0 must be greater than 0"),
    ("animate", [*ANIMATE, "--fps", "inf"], "argument --fps: 'inf' is not a finite number"),
    ("animate", [*ANIMATE, "--fps", "-inf"], "argument --fps: '-inf' is not a finite number"),
    ("animate", [*ANIMATE, "--fps", "fast"], "argument --fps: 'fast' is not a number"),
    ("animate", [*ANIMATE, "--fps", "100000"], "argument --fps: 100000.0 must be at most 1000"),
    ("animate", [*ANIMATE, "--seed", "99999999999999999999"], "must be at most 4294967295 (NumPy's generator"),
    ("animate", [*ANIMATE, "--seed", "-1"], "argument --seed: -1 must be at least 0"),
    ("animate", [*ANIMATE, "--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
    ("animate", [*ANIMATE, "--size", "-64x64"], "-64x64 is not a valid size: width and height must be positive"),
    ("animate", [*ANIMATE, "--size", "60x64"], "width and height must be positive multiples of 8"),
    ("animate", [*ANIMATE, "--size", "0"], "0x0 is not a valid size"),
    ("animate", [*ANIMATE, "--size", "8192"], "8192x8192 is too large: at most 4096 pixels a side"),
    ("animate", [*ANIMATE, "--size", "wide"], "'wide' is not a size; write WIDTHxHEIGHT"),
    ("animate", [*ANIMATE, "--size", "64x64x64"], "'64x64x64' is not a size"),
    ("animate", [*ANIMATE, "--lambdas", "-1,1,1"], "lambdas must be three non-negative weights summing to 1"),
    ("animate", [*ANIMATE, "--lambdas", "1,1,1"], "summing to 1, got (1.0, 1.0, 1.0)"),
    ("animate", [*ANIMATE, "--lambdas", "nan,0.5,0.5"], "summing to 1, got (nan, 0.5, 0.5)"),
    ("animate", [*ANIMATE, "--lambdas", "0.5,0.5"], "summing to 1, got (0.5, 0.5)"),
    ("animate", [*ANIMATE, "--lambdas", "a,b,c"], "argument --lambdas: 'a,b,c'"),
    ("animate", [*ANIMATE, "--transition-frames", "1000000"], "1000000 must be at most 120 (a transition longer"),
    ("animate", [*ANIMATE, "--transition-frames", "-1"], "argument --transition-frames: -1 must be at least 0"),
    ("animate", [*ANIMATE, "--window", "0"], "argument --window: 0 must be at least 1"),
    ("animate", [*ANIMATE, "--window", "-3"], "argument --window: -3 must be at least 1"),
    ("animate", [*ANIMATE, "--steps", "0"], "argument --steps: 0 must be at least 1"),
    ("animate", [*ANIMATE, "--steps", "5000"], "5000 must be at most 1000 (the scheduler has 1000 training"),
    ("animate", [*ANIMATE, "--guidance", "nan"], "argument --guidance: 'nan' is not a finite number"),
    ("animate", [*ANIMATE, "--guidance", "0"], "argument --guidance: 0 must be greater than 0"),
    ("animate", [*ANIMATE, "--controlnet-scale", "nan"], "argument --controlnet-scale: 'nan' is not a finite"),
    ("animate", [*ANIMATE, "--controlnet-scale", "-1"], "argument --controlnet-scale: -1 must be at least 0"),
    ("animate", [*ANIMATE, "--learning-rate", "nan"], "argument --learning-rate: 'nan' is not a finite number"),
    ("animate", [*ANIMATE, "--learning-rate", "0"], "argument --learning-rate: 0 must be greater than 0"),
    ("animate", [*ANIMATE, "--learning-rate-decay", "-0.1"], "argument --learning-rate-decay: -0.1 must be at"),
    ("animate", [*ANIMATE, "--learning-rate-decay", "0.5"], "keep the learning rate positive over 50 steps"),
    ("animate", [*ANIMATE, "--early-stop", "nan", "0"], "argument --early-stop: 'nan' is not a finite number"),
    ("animate", [*ANIMATE, "--frame-chunk-size", "0"], "argument --frame-chunk-size: 0 must be at least 1"),
    ("animate", [*ANIMATE, "--mask-threshold", "1.5"], "mask_threshold=1.5 must lie in [0, 1)"),
    ("animate", [*ANIMATE, "--source-inner-steps", "-1"], "argument --source-inner-steps: -1 must be at least 0"),
    ("animate", [*ANIMATE, "--frame-inner-steps", "100000"], "100000 must be at most 1000 (each step is a UNet"),
    ("animate", [*ANIMATE, "--inversion", "magic"], "invalid choice: 'magic'"),
    ("animate", [*ANIMATE, "--dtype", "fp64"], "invalid choice: 'fp64'"),
    # animate.py: flags that conflict
    ("animate", [*ANIMATE, "--no-decoupling", "--literal-decoupling"], "not allowed with argument --no-decoupling"),
    ("animate", [*ANIMATE, "--no-decoupling", "--mask", "pose"], "--no-decoupling uses no character mask"),
    ("animate", [*ANIMATE, "--no-decoupling", "--subject", "man"], "--no-decoupling uses no character mask"),
    ("animate", [*ANIMATE, "--mask", "sam"], "--mask sam and --sam-checkpoint PATH"),
    ("animate", [*ANIMATE, "--sam-checkpoint", "{in}/still.png"], "--mask sam and --sam-checkpoint PATH"),
    # animate.py: outputs
    ("animate", [*ANIMATE, "--out", "{in}/clip.mp4"], "names a folder, but a file is written there"),
    ("animate", [*ANIMATE, "--out", "{in}/clip.mp4/"], "names a folder, but a file is written there"),
    ("animate", [*ANIMATE, "--out", "/proc/sys/w.mp4"], "is not writable"),
    ("animate", [*ANIMATE, "--out", "{out}/clip.avi"], "use a .mp4 or .gif file or a folder path"),
    ("animate", [*ANIMATE, "--out", "{in}/nonempty"], "is a folder that is not empty"),
    ("animate", [*ANIMATE, "--out", "{in}/plainfile"], "is a file; give a missing or empty folder"),
    ("animate", [*ANIMATE, "--out", "{in}/text.txt/w.mp4"], "is a file, not a folder"),
    ("animate", [*ANIMATE, "--out", "{in}/taken.mp4"], "the report file"),
    ("animate", [*ANIMATE, "--cache-dir", "{in}/text.txt"], "text.txt' is a file, not a folder"),
    ("animate", [*ANIMATE, "--cache-dir", "/proc/sys/cache"], "Cannot write --cache-dir"),
    # animate.py: inputs
    ("animate", [*ANIMATE, "--image", "{in}/missing.png"], "does not exist"),
    ("animate", [*ANIMATE, "--image", "{in}/folder"], "is a folder; give an image file"),
    ("animate", [*ANIMATE, "--image", "{in}/text.txt"], "is not an image that can be read"),
    ("animate", [*ANIMATE, "--image", "{in}/empty.png"], "is not an image that can be read"),
    ("animate", [*ANIMATE, "--image", "{in}/grey.png"], "No person found in the source image."),
    ("animate", [*ANIMATE, "--poses", "{in}/missing.json"], "do not exist"),
    ("animate", [*ANIMATE, "--poses", "{in}/text.txt"], "Cannot tell what"),
    ("animate", [*ANIMATE, "--poses", "{in}/folder"], "holds neither OpenPose .json files nor pose images"),
    ("animate", [*ANIMATE, "--poses", "{in}/grey.png"], "No person found in the pose photo"),
    ("animate", [*ANIMATE, "--poses", "{in}/broken.json"], "broken.json"),
    ("animate", [*ANIMATE, "--poses", "{in}/pixels.json"], "gives keypoints in pixels but not the size"),
    ("animate", [*ANIMATE, "--poses", "{in}/pixels.json", "--pose-size", "100x100"], "lies outside the 100x100"),
    ("animate", [*ANIMATE, "--poses", "{in}/infinite_fps.json"], "fps must be a positive finite number, got inf"),
    ("animate", [*ANIMATE, "--poses", "{in}/no_frames.json"], "holds no frames"),
    ("animate", [*ANIMATE, "--pose-size", "0x0"], "0x0 is not a valid size: width and height must be positive"),
    ("animate", [*ANIMATE, "--pose-size", "big"], "'big' is not a size"),
    ("animate", [*ANIMATE, "--source-pose", "{in}/missing.json"], "missing.json"),
    ("animate", [*ANIMATE, "--mask", "{in}/missing.png"], "Mask file"),
    # edit.py
    ("edit", EDIT, "Pass --video IN (editing), or --jump-cut N"),
    ("edit", [*EDIT, "--jump-cut", "5", "--video", "{in}/still.png"], "leave out --video"),
    ("edit", [*EDIT, "--jump-cut", "2"], "argument --jump-cut: 2 must be at least 3"),
    ("edit", [*EDIT, "--jump-cut", "1000000"], "1000000 must be at most 3000 (two minutes at 25 fps)"),
    ("edit", [*EDIT, "--jump-cut", "5", "--fps", "0"], "argument --fps: 0 must be greater than 0"),
    ("edit", [*EDIT, "--jump-cut", "5", "--fps", "nan"], "argument --fps: 'nan' is not a finite number"),
    ("edit", [*EDIT, "--jump-cut", "5", "--steps", "0"], "argument --steps: 0 must be at least 1"),
    ("edit", [*EDIT, "--jump-cut", "5", "--batch-size", "0"], "argument --batch-size: 0 must be at least 1"),
    ("edit", [*EDIT, "--jump-cut", "5", "--resolution", "4"], "argument --resolution: 4 must be at least 8"),
    ("edit", [*EDIT, "--jump-cut", "5", "--seed", "-5"], "argument --seed: -5 must be at least 0"),
    ("edit", [*EDIT, "--jump-cut", "5", "--checkpoint", "{in}/nockpt"], "The checkpoint"),
    ("edit", [*EDIT, "--jump-cut", "5", "--out", "{in}/clip.mp4"], "names a folder, but a file is written there"),
    ("edit", [*EDIT, "--jump-cut", "5", "--out", "{out}/e.avi"], "use a .mp4 or .gif file or a folder path"),
    ("edit", [*EDIT, "--video", "{in}/still.png", "--fps", "30"], "--fps is the frame rate of a jump cut"),
    ("edit", [*EDIT, "--jump-cut", "5", "--schedule", "magic"], "invalid choice: 'magic'"),
    ("edit", [*EDIT, "--jump-cut", "5", "--start", "{in}/missing.png"], "does not exist"),
    ("edit", [*EDIT, "--video", "{in}/missing.mp4"], "does not exist"),
    # evaluate.py
    ("evaluate", [*EVALUATE, "--fps", "0"], "argument --fps: 0 must be greater than 0"),
    ("evaluate", [*EVALUATE, "--fps", "-inf"], "argument --fps: '-inf' is not a finite number"),
    ("evaluate", ["{in}/missing.mp4", *EVALUATE[1:]], "does not exist"),
    ("evaluate", [*EVALUATE, "--json", "{in}/folder"], "names a folder, but a file is written there"),
    ("evaluate", [*EVALUATE, "--json", "/proc/sys/m.json"], "is not writable"),
    ("evaluate", [*EVALUATE, "--lpips-alexnet", "{in}/missing.pth"], "--lpips-alexnet"),
    ("evaluate", [*EVALUATE, "--lpips-linear", "{in}/still.png"], "also needs --lpips-alexnet PATH"),
    ("evaluate", [*EVALUATE, "--clip", "{in}/still.png"], "is not a folder (a CLIP model folder)"),
    ("evaluate", [*EVALUATE, "--lpips-alexnet", "{in}/text.txt"], "LPIPS AlexNet"),
    ("evaluate", [*EVALUATE[:2], "{in}/missing.png", *EVALUATE[3:]], "does not exist"),
    # extract_poses.py
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--max-gap", "nan"], "'nan' is not a finite number"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--max-gap", "-1"], "-1 must be at least 0"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--no-repair", "--no-smooth"], "--no-repair keeps"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--max-frames", "0"], "0 must be at least 1"),
    ("extract_poses", ["{in}/missing.mp4", "-o", "{out}/p.json"], "is not a file"),
    ("extract_poses", ["{in}/folder", "-o", "{out}/p.json"], "is not a file"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.txt"], "give a .json file, or a folder path"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{in}/nonempty"], "is a folder that is not empty"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{in}/folder.json"], "names a folder, but a file is written there"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--render", "{out}/r.avi"], "use a .mp4 or .gif"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--detector", "magic"], "invalid choice: 'magic'"),
    ("extract_poses", ["{in}/clip.gif", "-o", "{out}/p.json", "--detector", "openpose"], "weights"),
    # train_qga.py
    ("train_qga", [*TRAIN, "--learning-rate", "nan"], "--learning-rate must be a finite positive number, got nan"),
    ("train_qga", [*TRAIN, "--out", "{in}/text.txt"], "--out '{in}/text.txt' is a file"),
    ("train_qga", [*TRAIN, "--max-steps", "0"], "--max-steps must be at least 1, got 0"),
    ("train_qga", [*TRAIN, "--resolution", "33"], "--resolution must be a multiple of 32, got 33"),
    ("train_qga", [*TRAIN, "--resolution", "65536"], "--resolution must lie in [0, 4096]"),
    ("train_qga", [*TRAIN, "--interval", "0"], "--interval must be at least 1"),
    ("train_qga", [*TRAIN, "--interval", "a:b"], "--interval must be a number or a range LOW:HIGH"),
    ("train_qga", [*TRAIN, "--condition", "hands"], "--condition must be 'face' or 'body'"),
    ("train_qga", [*TRAIN, "--seed", "-1"], "--seed must lie in [0, 4294967295], got -1"),
    ("train_qga", [*TRAIN, "--num-workers", "100000"], "--num-workers must lie in [0, 64]"),
    ("train_qga", [*TRAIN, "--data", "{in}/missing"], "--data '{in}/missing' is not a folder"),
    ("train_qga", [*TRAIN, "--crop-scale", "inf"], "--crop-scale must be a finite positive number, got inf"),
    ("train_qga", [*TRAIN, "--mixed-precision", "fp8"], "--mixed-precision must be no, fp16 or bf16"),
    ("train_qga", [*TRAIN, "--warmup-steps", "ten"], "argument --warmup-steps: invalid int value: 'ten'"),
    # benchmark.py
    ("benchmark", ["qffusion", "--frames", "1"], "argument --frames: 1 must be at least 3"),
    ("benchmark", ["pacm", "--steps", "0"], "argument --steps: 0 must be at least 1"),
    ("benchmark", ["poses", "--frames", "0"], "argument --frames: 0 must be at least 1"),
    ("app", ["--port", "70000"], "argument --port: 70000 must be at most 65535"),
    ("app", ["--port", "-1"], "argument --port: -1 must be at least 0"),
    ("app", ["--port", "http"], "argument --port: 'http' is not a whole number"),
    ("app", ["--work-dir", "{in}/grey.png"], "Cannot create the work folder"),
    ("benchmark", ["pacm-memory", "--frames", "16", "0"], "argument --frames: 0 must be at least 1"),
    ("benchmark", ["pacm-memory", "--window", "nan"], "argument --window: 'nan' is not a whole number"),
    ("benchmark", ["pipeline", "--json", "{in}/folder"], "names a folder, but a file is written there"),
    ("benchmark", ["pipeline", "--size", "60"], "--size must be a multiple of 8, got 60"),
    ("benchmark", ["pipeline", "--frames", "1"], "argument --frames: 1 must be at least 2"),
    ("benchmark", ["pipeline", "--arch", "sd15"], "--arch sd15 needs --random-weights"),
    ("benchmark", ["attention", "--rounds", "0"], "argument --rounds: 0 must be at least 1"),
    ("benchmark", ["attention", "--sizes", "5x5"], "--sizes: '5x5' is not TOKENSxCHANNELS"),
    ("benchmark", ["magic"], "invalid choice: 'magic'"),
    ("benchmark", ["startup", "--rounds", "0"], "argument --rounds: 0 must be at least 1"),
]


class ModelLoaded(BaseException):
    """Raised by the probe that replaces every model loader: the case was not refused before the models."""


class Hung(BaseException):
    """Raised when a case runs past `HANG_SECONDS`."""


def _write_inputs(folder: Path) -> None:
    folder.mkdir()
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(folder / "grey.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "still.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "clip.gif")
    (folder / "text.txt").write_text("hello")
    (folder / "plainfile").write_text("hello")
    (folder / "empty.png").write_bytes(b"")
    (folder / "broken.json").write_text("{not json")
    keypoints = [value for index in range(18) for value in [300.0 + index, 50.0 + 20 * index, 0.9]]
    (folder / "pixels.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": keypoints}]}))
    wave = json.loads(POSES.read_text())
    (folder / "infinite_fps.json").write_text(json.dumps(wave | {"fps": math.inf}))  # json writes Infinity
    (folder / "no_frames.json").write_text(json.dumps(wave | {"frames": []}))
    for name in ("folder", "folder.json", "clip.mp4", "ckpt", "taken.report.json"):
        (folder / name).mkdir()
    (folder / "nonempty").mkdir()
    (folder / "nonempty" / "frame.png").write_bytes(b"x")


def _load_main(script: str):
    spec = importlib.util.spec_from_file_location(f"{script}_script", ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad") / "in"
    _write_inputs(folder)
    return folder


@pytest.fixture
def no_model_loads(monkeypatch):
    """Replaces every loader of weights and builder of models the scripts reach with a probe that stops the case."""
    import zeroshot.loading
    import zeroshot.qffusion
    import zeroshot.qffusion.training
    import zeroshot.testing

    def probe(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(zeroshot.loading, "load_components", probe)
    monkeypatch.setattr(zeroshot.qffusion, "load_qffusion_components", probe)
    monkeypatch.setattr(zeroshot.qffusion.training, "_train", probe)
    for module in ("pacm", "pipeline", "qffusion", "attention"):
        bench = importlib.import_module(f"zeroshot.bench.{module}")
        if hasattr(bench, "build_random_components"):
            monkeypatch.setattr(bench, "build_random_components", probe)


def _on_alarm(signum, frame):
    raise Hung


@pytest.mark.parametrize(("script", "arguments", "message"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_script_refuses_bad_input_before_the_models(
    script, arguments, message, inputs, tmp_path, capsys, no_model_loads
):
    from zeroshot.cli import run

    out = tmp_path / "out"
    out.mkdir()
    argv = [argument.replace("{in}", str(inputs)).replace("{out}", str(out)) for argument in arguments]
    message = message.replace("{in}", str(inputs))
    before = _files(inputs)
    main = _load_main(script)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_SECONDS)
    try:
        status = run(main, argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr
    assert sum("error:" in line for line in stderr.splitlines()) == 1, stderr
    assert _files(out) == set() and _files(inputs) == before


# ---- the Python API ------------------------------------------------------------------------------------------------

API_CASES = [
    ({"image": 123}, TypeError, "image must be a PIL image, a numpy array or a path, got int"),
    ({"image": None}, TypeError, "image must be a PIL image, a numpy array or a path, got NoneType"),
    ({"image": np.full((8, 8, 3), 2.0)}, ValueError, "image holds floats outside [0, 1]"),
    ({"image": np.full((8, 8, 3), np.nan)}, ValueError, "image holds floats outside [0, 1] (or not finite)"),
    ({"image": np.zeros((8, 8, 2), np.uint8)}, ValueError, "image must be an array [height, width] or"),
    ({"image": np.zeros((2, 8, 8, 3), np.uint8)}, ValueError, "got shape (2, 8, 8, 3)"),
    ({"image": np.zeros((8, 8, 3), np.int64)}, ValueError, "image must be an array of uint8, uint16 or floats"),
    ({"image": np.zeros((0, 8, 3), np.uint8)}, ValueError, "got shape (0, 8, 3)"),
    ({"poses": 42}, TypeError, "poses must be a PoseSequence, RenderedPoses or a path, got int"),
    ({"poses": {"frames": []}}, TypeError, "poses must be a PoseSequence, RenderedPoses or a path, got dict"),
    ({"poses": None}, TypeError, "poses must be a PoseSequence, RenderedPoses or a path, got NoneType"),
    ({"prompt": None}, TypeError, "prompt must be a str, got NoneType"),
    ({"prompt": ["a photo"]}, TypeError, "prompt must be a str, got list"),
    ({"negative_prompt": 1}, TypeError, "negative_prompt must be a str, got int"),
    ({"subject": 5}, TypeError, "subject must be a str or None, got int"),
    ({"lambdas": "0.7,0.15,0.15"}, TypeError, "lambdas must be a sequence of 3 numbers, got str"),
    ({"lambdas": (0.5, 0.5)}, ValueError, "lambdas must be 3 numbers, got [0.5, 0.5]"),
    ({"lambdas": (math.nan, 0.5, 0.5)}, ValueError, "lambdas must be finite"),
    ({"lambdas": ("a", "b", "c")}, ValueError, "lambdas must be 3 numbers"),
    ({"lambdas": 0.7}, TypeError, "lambdas must be a sequence of 3 numbers, got float"),
    ({"height": "512"}, TypeError, "height must be an int, got str"),
    ({"height": 0}, ValueError, "height must be in [1, 4096], got 0"),
    ({"width": 10**6}, ValueError, "width must be in [1, 4096], got 1000000"),
    ({"width": 64.0}, TypeError, "width must be an int, got float"),
    ({"window": 0}, ValueError, "window must be at least 1, got 0"),
    ({"window": 2.5}, TypeError, "window must be an int, got float"),
    ({"transition_frames": 10**6}, ValueError, "transition_frames must be in [0, 120], got 1000000"),
    ({"transition_frames": True}, TypeError, "transition_frames must be an int, got bool"),
    ({"pacm_settings": {}}, TypeError, "pacm_settings must be a PACMSettings, got dict"),
    ({"source": "me.png"}, TypeError, "source must be SourceInputs (from prepare_source), got str"),
    ({"output_type": "pil"}, ValueError, "output_type must be 'np' or 'latent', got 'pil'"),
    ({"cache_dir": 1}, TypeError, "cache_dir must be a path or None, got int"),
    ({"image": "missing.png"}, ZeroshotError, "Image 'missing.png' does not exist."),
    ({"poses": "missing.json"}, ZeroshotError, "Poses 'missing.json' do not exist."),
]


@pytest.fixture(scope="module")
def pipe(tiny_components):
    from zeroshot.poseanimate import PoseAnimatePipeline

    return PoseAnimatePipeline.from_components(tiny_components)


@pytest.mark.parametrize(("change", "error", "message"), API_CASES, ids=[str(i) for i in range(len(API_CASES))])
def test_api_refuses_bad_arguments_by_name(change, error, message, pipe, monkeypatch):
    """Each refused before any work: preparing the source (mediapipe) is replaced by a probe."""
    import zeroshot.poseanimate

    def probe(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(zeroshot.poseanimate, "prepare_source", probe)
    arguments = {"image": Image.open(IMAGE), "poses": POSES, "prompt": "a photo of an astronaut"} | change
    with pytest.raises(error) as caught:
        pipe(arguments.pop("image"), arguments.pop("poses"), arguments.pop("prompt"), show_progress=False, **arguments)
    assert message in str(caught.value)


def test_pacm_settings_refuse_non_finite_numbers():
    from zeroshot.pacm import PACMSettings

    for name in ("guidance_scale", "controlnet_conditioning_scale", "learning_rate", "mask_threshold"):
        with pytest.raises(ValueError, match=f"{name}=nan must be a finite number"):
            PACMSettings(**{name: math.nan})


# ---- real subprocesses ---------------------------------------------------------------------------------------------


def test_argument_errors_exit_2_in_one_line_without_importing_torch(tmp_path):
    """One refused case per script, run as the scripts are run, in one interpreter: exit 2, one `error:` line, no
    traceback, and no torch, diffusers or transformers imported (the benchmark, last, imports torch), also for an
    input file checked after parsing."""
    cases = [
        ["animate.py", *[a.replace("{out}", str(tmp_path)) for a in ANIMATE], "--fps", "0"],
        ["animate.py", *[a.replace("{out}", str(tmp_path)) for a in ANIMATE], "--image", "missing.png"],
        ["edit.py", "--start", "s.png", "--end", "e.png", "--checkpoint", "c", "--out", "o.mp4", "--jump-cut", "2"],
        ["evaluate.py", "a.mp4", "--source", "s.png", "--poses", "p.json", "--fps", "nan"],
        ["extract_poses.py", "v.mp4", "-o", "p.json", "--max-gap", "inf"],
        ["train_qga.py", "--data", "d", "--out", str(tmp_path / "run"), "--learning-rate", "nan"],
        ["benchmark.py", "qffusion", "--frames", "1"],
    ]
    code = (
        "import contextlib, io, json, runpy, sys\n"
        "results, cases, scripts = [], json.loads(sys.argv[1]), sys.argv[2]\n"
        "for argv in cases:\n"
        "    sys.argv = [scripts + '/' + argv[0], *argv[1:]]\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n            runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "        except SystemExit as exit:\n            results.append([exit.code, err.getvalue()])\n"
        "    results[-1].append(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))\n"
        "print(json.dumps(results))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases), str(ROOT / "scripts")],
        capture_output=True, text=True, timeout=HANG_SECONDS, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert len(results) == len(cases)
    for (status, stderr, heavy), case in zip(results, cases, strict=True):
        assert status == 2, (case, stderr)
        assert sum("error:" in line for line in stderr.splitlines()) == 1 and "Traceback" not in stderr, case
        # a benchmark's options are defined by its module, which needs torch; every other script's need nothing
        assert heavy == ([] if case[0] != "benchmark.py" else ["torch"]), case
    assert sorted(path.name for path in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("animate.py", [*ANIMATE, "--out", "{out}"], "is a folder that is not empty"),
        ("animate.py", [*ANIMATE, "--image", "{out}"], "is a folder; give an image file"),
        ("evaluate.py", [str(IMAGE), "--source", str(IMAGE), "--poses", str(POSES), "--json", "/proc/sys/x.json"],
         "is not writable"),
    ],
)  # fmt: skip
def test_input_errors_in_a_real_process(script, arguments, message, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    argv = [argument.replace("{out}", str(tmp_path)) for argument in arguments]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *argv], capture_output=True, text=True, timeout=HANG_SECONDS
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [
        line for line in result.stderr.splitlines() if line.startswith("error: ")
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.txt"]
