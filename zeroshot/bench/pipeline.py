"""The whole PoseAnimate pipeline: wall time of every stage, UNet evaluations per frame and peak memory, for the
paper mode and the fast modes side by side in one run, and what the window does to peak memory.

The source is the real astronaut photo; the targets are its detected pose with both forearms rising and falling
(synthetic, offline). Every run makes `--frames` frames: frame 0 (the source) and `--frames - 1` targets, with no
transition frames. Defaults run the tiny random models on the CPU (64x64, 8 frames, 10 steps, median of 3 runs, about
a minute on 2 cores). On a GPU, `--arch sd15 --random-weights` builds Stable Diffusion 1.5's and the OpenPose
ControlNet's shapes with random weights (no download) and runs 16 frames at 512x512 with 50 steps, in fp16. Each mode
runs at every window (frames per UNet call in generation and decoding; PACM chunks its frames by its default, 4):
windows change speed and memory only, and the last table checks that the frames are the same to float round-off.
Every run also refines the faces (`--refine-face`, default strength 0.3, crops of `--size`) and its cost is shown
beside the base generation's, in UNet evaluations and seconds; `--no-refine-face` leaves it out.

The fast modes make their character masks in generation's own UNet calls; each fast mode also runs once more at the
first window with the separate PACM mask pass they used before (`separate_mask_pass=True`), and a table sets the two
side by side: UNet evaluations, the share saved against the expected 2F/(4F+5) (direct) or F/(3F+3)
(negative-prompt) for F target frames, and seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atomic import write_json
from ..cli import real_number, whole_number
from ..defaults import MAX_OUTPUT_SIDE
from ..errors import ZeroshotError
from ..face import DEFAULT_STRENGTH, FaceRefinement
from ..loading import resolve_device, resolve_dtype
from ..outputs import check_output
from ..pacm import PACM_MODES, PACMSettings
from ..poseanimate import PoseAnimatePipeline, prepare_source
from ..poses import PoseSequence, detect_source_pose
from ..poses.skeleton import JOINT_NAMES
from ..testing import astronaut, build_random_components
from . import describe_device, format_table

logger = logging.getLogger(__name__)

#: The pipeline's stages in the order they run, as `report["stages"]` names them.
STAGES: tuple[str, ...] = ("poses", "mask", "encode", "ddim_inversion", "source", "frames", "generation", "decode")
#: The face refinement pass, as `report["stages"]` names it (after decoding; measured beside the base run).
FACE_STAGE = "face_refinement"
#: The UNet evaluations shown per stage (the others are always 0: the inversion and generation take no gradient).
EVALUATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ddim_inversion", "forward"),
    ("source", "forward"),
    ("source", "backward"),
    ("frames", "forward"),
    ("frames", "backward"),
    ("generation", "forward"),
)
#: Defaults of `--frames`, `--size`, `--steps` and `--rounds` for each `--arch`.
ARCH_DEFAULTS: dict[str, dict[str, int]] = {
    "tiny": {"frames": 8, "size": 64, "steps": 10, "rounds": 3},
    "sd15": {"frames": 16, "size": 512, "steps": 50, "rounds": 1},
}
PROMPT = "a photo of an astronaut"
SUBJECT = "astronaut"


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in allowed]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed)}, got {text!r}")
        return list(dict.fromkeys(values))

    return parse


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCH_DEFAULTS), default="tiny", help="model shapes (default: tiny)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights of --arch; needed with sd15 (this benchmark loads no weights); tiny is always random",
    )
    parser.add_argument(
        "--frames", type=whole_number(2, 256), help="frames of the video, frame 0 included (default: 8 tiny, 16 sd15)"
    )
    parser.add_argument(
        "--size",
        type=whole_number(8, MAX_OUTPUT_SIDE),
        help="width and height in pixels, a multiple of 8 (default: 64 tiny, 512 sd15)",
    )
    parser.add_argument("--steps", type=whole_number(1, 1000), help="DDIM steps (default: 10 tiny, 50 sd15)")
    parser.add_argument(
        "--modes",
        type=_choices(PACM_MODES),
        default=list(PACM_MODES),
        help="PACM modes to compare; the first is the speed-up baseline (default: paper,negative-prompt,direct)",
    )
    parser.add_argument(
        "--windows",
        type=_positive_ints,
        default=[16, 4],
        help="frames per UNet call in generation and decoding; the first is the reference (default: 16,4)",
    )
    parser.add_argument(
        "--rounds",
        type=whole_number(1, 1000),
        help="timed runs of each mode and window, interleaved (default: 3 tiny, 1 sd15)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="weight dtype; auto is fp16 on CUDA and fp32 elsewhere (default: %(default)s)",
    )
    parser.add_argument(
        "--refine-face",
        type=real_number(0.0, 1.0),
        default=DEFAULT_STRENGTH,
        metavar="STRENGTH",
        help="strength of the face refinement pass measured beside the base generation (default: %(default)s)",
    )
    parser.add_argument(
        "--no-refine-face", action="store_true", help="leave the face refinement pass out of every run"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure and report to PATH")


@dataclass
class Run:
    """One mode at one window: per round, the wall time of each stage and of the whole; the last round's frames and
    latents; or why it could not run."""

    mode: str
    window: int
    separate_mask_pass: bool = False
    stage_rounds: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)
    frames: np.ndarray | None = None
    latents: torch.Tensor | None = None
    failure: str | None = None

    def stage_seconds(self, stage: str) -> float:
        return statistics.median(stages[stage] for stages in self.stage_rounds)

    @property
    def total_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_memory_bytes(self) -> int:
        return max(report["peak_memory_bytes"] for report in self.reports)


def arm_wave_poses(source: PoseSequence, num_frames: int) -> PoseSequence:
    """`num_frames` poses: `source` (one frame) with both forearms rising in front of the body and falling back,
    over one period. Elbows and wrists are placed from the shoulders, so they need not have been detected.

    Args:
        source ([`~zeroshot.poses.PoseSequence`]): one detected pose with both shoulders.
        num_frames (`int`): poses to make.
    """
    names = {name: index for index, name in enumerate(JOINT_NAMES)}
    points = source.pixels()[0]
    if not source.visible[0, [names["right_shoulder"], names["left_shoulder"]]].all():
        raise ZeroshotError("The benchmark's source pose needs both shoulders; the detector missed one.")
    length = 0.6 * np.linalg.norm(points[names["right_shoulder"]] - points[names["left_shoulder"]])
    body = np.repeat(source.body, num_frames, axis=0)
    # Each forearm turns from hanging down to 150 degrees (pointing up and inwards) and back.
    lift = np.radians(150.0) * (1 - np.cos(2 * np.pi * np.arange(1, num_frames + 1) / num_frames)) / 2
    for side, outward in (("right", -1.0), ("left", 1.0)):
        if outward * (points[names[f"{side}_shoulder"]][0] - points[names["neck"]][0]) < 0:
            outward = -outward  # the person faces away from the camera
        elbow = points[names[f"{side}_shoulder"]] + length * np.array([outward * np.sin(0.35), np.cos(0.35)])
        wrists = elbow + length * np.stack([-outward * np.sin(lift), np.cos(lift)], axis=-1)
        for joint, position in ((f"{side}_elbow", elbow), (f"{side}_wrist", wrists)):
            body[:, names[joint], :2] = np.clip(position / np.asarray(source.size), 0.0, 1.0)
            body[:, names[joint], 2] = 1.0
    face = None if source.face is None else np.repeat(source.face, num_frames, axis=0)
    return PoseSequence(body, size=source.size, face=face, source="arm wave")


def _release_memory(device: torch.device) -> None:
    """Frees what earlier runs left behind, so that the next run's peak counts its own memory: on the CPU, the peak is
    the growth of resident memory, which freed blocks kept by the C allocator would hide."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _settings(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the architecture's defaults filled in, checked before any model is built."""
    if args.arch == "sd15" and not args.random_weights:
        raise ZeroshotError(
            "--arch sd15 needs --random-weights: this benchmark builds Stable Diffusion 1.5's shapes with random "
            "weights and loads no weights (time real weights with scripts/animate.py, whose report.json has the same "
            "figures)."
        )
    for name, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.size % 8:
        raise ZeroshotError(f"--size must be a multiple of 8, got {args.size}.")
    if args.json is not None:
        check_output(args.json, what="--json")
    return args


def main(args: argparse.Namespace) -> None:
    args = _settings(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    components = build_random_components(args.arch, seed=0).to(device, dtype if dtype != torch.float32 else None)
    pipe = PoseAnimatePipeline.from_components(components)
    image = Image.fromarray(astronaut())
    targets = arm_wave_poses(detect_source_pose(image, name="astronaut"), args.frames - 1)
    print(
        f"{describe_device(device)}; {args.arch} models with random weights ({dtype}), {args.size}x{args.size}, "
        f"{args.frames} frames, {args.steps} DDIM steps, median of {args.rounds} run(s)"
    )
    runs = [Run(mode, window) for mode in args.modes for window in args.windows]
    mask_pass_runs = [Run(mode, args.windows[0], separate_mask_pass=True) for mode in args.modes if mode != "paper"]
    # One step of every run first, untimed: mediapipe's graphs, kernels and allocator pools warm up.
    for run in runs + mask_pass_runs:
        _animate(pipe, image, targets, run, args, steps=1)
    for _ in range(args.rounds):
        for run in runs + mask_pass_runs:
            if run.failure is None:
                _animate(pipe, image, targets, run, args, steps=args.steps)
    _print_tables(runs, args, device)
    mask_pass = _mask_pass_comparison(runs, mask_pass_runs, args.frames - 1)
    _print_mask_pass(mask_pass, args)
    if args.json is not None:
        document = _document(runs, args, device, dtype)
        document["mask_pass"] = mask_pass
        write_json(args.json, document)
        print(f"\nwrote {args.json}")


def _animate(
    pipe: PoseAnimatePipeline,
    image: Image.Image,
    targets: PoseSequence,
    run: Run,
    args: argparse.Namespace,
    steps: int,
) -> None:
    """One run of the pipeline; with `steps == args.steps` its figures are added to `run`.

    The source pose and mask are found here with [`prepare_source`], as the pipeline would find them, and handed to
    it: mediapipe's memory then stays out of the pipeline's peak (on the CPU, where the peak is the growth of resident
    memory, it would swamp the models' at small sizes). Their time is added to the `poses` stage.
    """
    device = pipe.unet.device
    start = time.perf_counter()
    source = prepare_source(image, args.size, args.size, mask="selfie")
    preparation = time.perf_counter() - start
    _release_memory(device)
    final: dict[str, torch.Tensor] = {}

    def keep_final_latents(pipe: PoseAnimatePipeline, step: int, timestep: int, tensors: dict) -> None:
        if step == steps - 1:
            final["latents"] = tensors["latents"].clone()

    # Crops of the canvas's size; at the tiny default of 64x64 the astronaut's face is 13 pixels across, below the
    # pipeline's default minimum of 16, which the benchmark lowers (it measures cost, not looks).
    faces = None if args.no_refine_face else FaceRefinement(args.refine_face, face_size=args.size, min_face_size=8)
    call_start = time.perf_counter()
    try:
        output = pipe(
            image,
            targets,
            PROMPT,
            subject=SUBJECT,
            height=args.size,
            width=args.size,
            pacm_settings=PACMSettings(mode=run.mode, num_inference_steps=steps),
            window=run.window,
            transition_frames=0,
            source=source,
            show_progress=sys.stderr.isatty(),
            callback_on_step_end=keep_final_latents,
            face_refinement=faces,
            separate_mask_pass=run.separate_mask_pass,
        )
    except torch.cuda.OutOfMemoryError:
        run.failure = "out of memory"
    if run.failure is not None:  # outside the `except` block, whose traceback holds the run's tensors
        logger.warning("%s at window %d ran out of GPU memory; the other runs go on.", run.mode, run.window)
        _release_memory(device)
        return
    seconds = preparation + time.perf_counter() - call_start
    if steps != args.steps:
        return
    reported = output.report["stages"]
    stages = {stage: reported[stage]["seconds"] for stage in (*STAGES, FACE_STAGE) if stage in reported}
    stages["poses"] += preparation
    run.stage_rounds.append(stages)
    run.seconds.append(seconds)
    run.reports.append(output.report)
    run.frames, run.latents = output.frames, final["latents"].cpu()


def _reference(runs: list[Run], run: Run) -> Run:
    """The run of the same mode at the first window (the reference for memory and frames)."""
    return next(other for other in runs if other.mode == run.mode)


def _baseline(runs: list[Run], run: Run) -> Run:
    """The run of the first mode at the same window (the reference for speed-ups)."""
    return next(other for other in runs if other.window == run.window)


def _differences(runs: list[Run], run: Run) -> tuple[float, int] | None:
    """Largest differences of the final latents and of the `uint8` frames from the same mode's at the first window."""
    reference = _reference(runs, run)
    if run.failure is not None or reference.failure is not None:
        return None
    latents = float((run.latents - reference.latents).abs().max())
    frames = int(np.abs(run.frames.astype(np.int16) - reference.frames.astype(np.int16)).max())
    return latents, frames


def _print_tables(runs: list[Run], args: argparse.Namespace, device: torch.device) -> None:
    header = ["mode", "window", *STAGES, "total", f"speed-up vs {args.modes[0]}"]
    rows = []
    for run in runs:
        if run.failure is not None:
            rows.append((run.mode, run.window, *[""] * len(STAGES), run.failure, ""))
            continue
        base = _baseline(runs, run)
        speed_up = base.total_seconds / run.total_seconds if base.failure is None else ""
        rows.append((run.mode, run.window, *map(run.stage_seconds, STAGES), run.total_seconds, speed_up))
    print("\nWall time per stage, seconds (ddim_inversion, source and frames are PACM's)")
    print(format_table(header, rows))

    header = ["mode", *(f"{stage} {way[0]}wd" for stage, way in EVALUATION_COLUMNS), "total fwd", "total bwd"]
    header.append("frame-0 error")
    rows = []
    for mode in args.modes:
        run = next((run for run in runs if run.mode == mode and run.failure is None), None)
        if run is None:
            continue
        report = run.reports[-1]
        evaluations = report["unet_evaluations"]
        per_stage = evaluations["per_stage_per_frame"]
        counts = [per_stage[stage][way] for stage, way in EVALUATION_COLUMNS]
        error = report["reconstruction"]["frame0_latent_relative_error"]
        rows.append(
            (mode, *counts, evaluations["forward_per_frame"], evaluations["backward_per_frame"], f"{error:.2e}")
        )
    print(
        "\nUNet evaluations per frame of the video (one latent through the UNet and the ControlNet; a guided step is"
        "\n2), and frame 0's relative distance to the source latent"
    )
    print(format_table(header, rows))

    costs = [(run, _face_cost(run)) for run in runs if run.failure is None and run.window == args.windows[0]]
    if any(cost is not None for _, cost in costs):
        header = ["mode", "base evals", "face evals", "face/base evals", "base s", "face s", "face/base s"]
        rows = [
            (run.mode, cost["base_evaluations"], cost["face_evaluations"], f"{cost['evaluation_ratio']:.0%}")
            + (cost["base_seconds"], cost["face_seconds"], f"{cost['seconds_ratio']:.0%}")
            for run, cost in costs
            if cost is not None
        ]
        print(
            f"\nFace refinement (strength {args.refine_face:g}, {args.size}x{args.size} crops) beside the base "
            f"generation, at window {args.windows[0]}: UNet evaluations (forward + backward) and seconds"
        )
        print(format_table(header, rows))

    header = ["mode", "window", "peak MiB", "vs first window", "max |latent diff|", "max |frame diff|"]
    rows = []
    for run in (run for run in runs if run.failure is None):
        reference = _reference(runs, run)
        measured = reference.failure is None and reference.peak_memory_bytes > 0
        ratio = run.peak_memory_bytes / reference.peak_memory_bytes if measured else ""
        latents, frames = _differences(runs, run) or ("", "")
        latents = latents if latents == "" else f"{latents:.1e}"
        rows.append((run.mode, run.window, f"{run.peak_memory_bytes / 2**20:.0f}", ratio, latents, frames))
    print(
        f"\nPeak memory ({_memory_kind(device)}) by window, and the largest difference of the final latents and of the"
        "\nuint8 frames from the same mode's at the first window: float round-off only (windows change no result)"
    )
    print(format_table(header, rows))


def _mask_pass_comparison(runs: list[Run], mask_pass_runs: list[Run], num_targets: int) -> list[dict]:
    """Per fast mode, at the first window: UNet evaluations (forward + backward) and seconds with the masks made in
    generation and with the separate PACM mask pass, the share of evaluations saved, and the share expected."""
    expected = {
        "direct": 2 * num_targets / (4 * num_targets + 5),
        "negative-prompt": num_targets / (3 * num_targets + 3),
    }
    rows = []
    for separate in mask_pass_runs:
        in_generation = next(run for run in runs if run.mode == separate.mode and run.window == separate.window)
        if separate.failure is not None or in_generation.failure is not None:
            continue
        evaluations, seconds = zip(_without_face(in_generation), _without_face(separate), strict=True)
        evaluations = dict(zip(("in_generation", "separate"), evaluations, strict=True))
        seconds = dict(zip(("in_generation", "separate"), seconds, strict=True))
        rows.append(
            {
                "mode": separate.mode,
                "window": separate.window,
                "evaluations_in_generation": evaluations["in_generation"],
                "evaluations_separate_pass": evaluations["separate"],
                "evaluations_saved": 1 - evaluations["in_generation"] / evaluations["separate"],
                "evaluations_saved_expected": expected[separate.mode],
                "seconds_in_generation": seconds["in_generation"],
                "seconds_separate_pass": seconds["separate"],
                "speed_up": seconds["separate"] / seconds["in_generation"],
            }
        )
    return rows


def _without_face(run: Run) -> tuple[int, float]:
    """The run's UNet evaluations (forward + backward) and seconds, its face refinement pass left out."""
    cost = _face_cost(run)
    if cost is not None:
        return cost["base_evaluations"], cost["base_seconds"]
    stages = run.reports[-1]["stages"].values()
    return sum(stage["forward"] + stage["backward"] for stage in stages), run.total_seconds


def _print_mask_pass(rows: list[dict], args: argparse.Namespace) -> None:
    if not rows:
        return
    header = ["mode", "evals: masks in generation", "evals: separate pass", "saved", "expected", "s: in generation"]
    header += ["s: separate pass", "speed-up"]
    table = [
        (row["mode"], row["evaluations_in_generation"], row["evaluations_separate_pass"])
        + (f"{row['evaluations_saved']:.1%}", f"{row['evaluations_saved_expected']:.1%}")
        + (row["seconds_in_generation"], row["seconds_separate_pass"], row["speed_up"])
        for row in rows
    ]
    print(
        f"\nFast modes at window {args.windows[0]}: character masks made in generation's UNet calls against the "
        "separate\nPACM mask pass (UNet evaluations, forward + backward, and seconds, face refinement left out)"
    )
    print(format_table(header, table))


def _face_cost(run: Run) -> dict[str, float] | None:
    """The face refinement pass's UNet evaluations and seconds beside the base run's (everything else), or `None`
    when the run had no face pass."""
    stages = run.reports[-1]["stages"]
    if FACE_STAGE not in stages:
        return None
    base = sum(stage["forward"] + stage["backward"] for name, stage in stages.items() if name != FACE_STAGE)
    face = stages[FACE_STAGE]["forward"] + stages[FACE_STAGE]["backward"]
    face_seconds = run.stage_seconds(FACE_STAGE)
    base_seconds = run.total_seconds - face_seconds
    return {
        "base_evaluations": base,
        "face_evaluations": face,
        "evaluation_ratio": face / base,
        "base_seconds": base_seconds,
        "face_seconds": face_seconds,
        "seconds_ratio": face_seconds / base_seconds,
    }


def _memory_kind(device: torch.device) -> str:
    return "allocated GPU memory" if device.type == "cuda" else "growth of the process's resident memory"


def _document(runs: list[Run], args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    document = {
        "device": describe_device(device),
        "arch": args.arch,
        "dtype": str(dtype).removeprefix("torch."),
        "size": args.size,
        "frames": args.frames,
        "steps": args.steps,
        "rounds": args.rounds,
        "runs": [],
    }
    for run in runs:
        entry: dict[str, object] = {"mode": run.mode, "window": run.window, "failure": run.failure}
        if run.failure is None:
            differences = _differences(runs, run)
            entry.update(
                seconds=run.total_seconds,
                stage_seconds={stage: run.stage_seconds(stage) for stage in STAGES},
                peak_memory_bytes=run.peak_memory_bytes,
                max_latent_difference=None if differences is None else differences[0],
                max_frame_difference=None if differences is None else differences[1],
                face_refinement=_face_cost(run),
                report=run.reports[-1],
            )
        document["runs"].append(entry)
    return document
