"""PACM: UNet evaluations and wall time per stage for the paper mode and each fast mode, batched vs sequential
per-frame optimisation, measured side by side in one run; and how well each setting reconstructs frame 0 (the
source), next to the plain guidance-1 round trip and the unoptimised guided sampling.

Defaults run the tiny random models on the CPU. On a GPU, `--arch sd15 --random-weights` gives Stable Diffusion 1.5
shapes (512x512, 64x64 latents) with random weights; without `--random-weights`, `--model`/`--controlnet` load real
weights.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ..cli import add_model_arguments, load_components_from_args, whole_number
from ..imaging import encode_latents
from ..loading import resolve_device, resolve_dtype
from ..pacm import (
    STAGES,
    ControlledDenoiser,
    DDIMSchedule,
    EvaluationCounter,
    PACMResult,
    PACMSettings,
    reconstruct_source,
    relative_error,
    run_pacm,
)
from ..pacm.frames import frame_conditioning
from ..pacm.masks import subject_attention_recording
from ..pacm.source import SourceConditioning
from ..prompts import encode_prompt
from ..testing import astronaut, build_random_components
from . import compare, describe_device, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny", help="random model shapes (default: tiny)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="random weights of --arch (always for tiny); without it, sd15 loads --model and --controlnet",
    )
    parser.add_argument(
        "--steps", type=whole_number(1, 1000), default=50, help="DDIM steps of the paper mode (default: %(default)s)"
    )
    parser.add_argument(
        "--fast-steps",
        type=whole_number(1, 1000),
        default=20,
        help="DDIM steps of the fewer-steps fast mode (default: %(default)s)",
    )
    parser.add_argument("--frames", type=whole_number(1, 256), default=4, help="target frames (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=whole_number(1, 1000), default=3, help="timed runs per candidate (default: %(default)s)"
    )
    parser.add_argument(
        "--error-steps",
        type=whole_number(1, 1000),
        nargs="*",
        default=[10, 50],
        help="DDIM steps of the frame-0 reconstruction table; none skips it (default: 10 50)",
    )
    add_model_arguments(parser)


def _components(args: argparse.Namespace):
    if args.arch == "sd15" and not args.random_weights:
        return load_components_from_args(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    return build_random_components(args.arch, seed=0).to(device, dtype if dtype != torch.float32 else None)


def main(args: argparse.Namespace) -> None:
    components = _components(args)
    device = components.unet.device
    latent_size = components.unet.config.sample_size
    scale = 2 ** (len(components.vae.config.block_out_channels) - 1)
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, latent_size, latent_size, generator=generator)
    source_pose = torch.rand(1, 3, latent_size * scale, latent_size * scale, generator=generator)
    targets = torch.rand(args.frames, 3, latent_size * scale, latent_size * scale, generator=generator)
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    print(
        f"{describe_device(device)}; {args.arch} UNet ({components.unet.dtype}), {latent_size}x{latent_size} latents, "
        f"{args.frames} target frames, median of {args.rounds} runs"
    )

    modes = {
        f"paper, {args.steps} steps": PACMSettings(num_inference_steps=args.steps, frame_chunk_size=args.frames),
        f"paper, {args.fast_steps} steps": PACMSettings(
            num_inference_steps=args.fast_steps, frame_chunk_size=args.frames
        ),
        f"negative-prompt, {args.steps} steps": PACMSettings(
            mode="negative-prompt", num_inference_steps=args.steps, frame_chunk_size=args.frames
        ),
        f"direct, {args.steps} steps": PACMSettings(
            mode="direct", num_inference_steps=args.steps, frame_chunk_size=args.frames
        ),
    }
    runs: dict[str, list[PACMResult]] = {name: [] for name in modes}

    def run_mode(name: str):
        def run() -> None:
            result = run_pacm(components, latent, prompt, source_pose, targets, modes[name], show_progress=False)
            runs[name].append(result)

        return run

    timings = compare({name: run_mode(name) for name in modes}, device, rounds=args.rounds)
    paper = next(iter(modes))
    rows = []
    for name, measurement in timings.items():
        timed = runs[name][-args.rounds :]
        error = relative_error(reconstruct_source(components, timed[-1], source_pose), timed[-1].latents[0])
        for stage in STAGES:
            stats = timed[-1].stats[stage]
            seconds = statistics.median(result.stats[stage].seconds for result in timed)
            rows.append((name, stage, stats.forward, stats.backward, seconds, "", "", ""))
        rows.append(
            (name, "total", *_totals(timed[-1]), measurement.seconds, timings[paper].seconds / measurement.seconds,
             f"{error:.2e}", f"{measurement.peak_memory_bytes / 2**20:.0f}")
        )  # fmt: skip
    print("\nPACM per mode and stage (UNet evaluations are per latent; speed-up vs the paper mode at its steps)")
    header = ["mode", "stage", "forward", "backward", "seconds", "speed-up", "frame-0 rec. error", "peak MiB"]
    print(format_table(header, rows))

    _batched_vs_sequential(components, runs[paper][-1], prompt, targets, modes[paper], args)
    if args.error_steps:
        _frame_zero_errors(components, prompt, args.error_steps)


def _frame_zero_errors(components, prompt, step_counts: list[int]) -> None:
    """Frame 0's reconstruction error (relative, in latent space) of the astronaut photo for each setting."""
    device = components.unet.device
    size = components.vae.config.sample_size
    image = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="area")
    latent = encode_latents(components.vae, image.to(device))
    pose = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    no_frames = pose[:0]
    candidates = {
        "guidance-1 round trip (negative-prompt mode)": {"mode": "negative-prompt"},
        "guidance 7.5, prompt embeddings (no optimisation)": {"source_inner_steps": 0},
        "paper (defaults)": {},
        "paper, null-text early stop 1e-5 + 2e-5 i": {"early_stop_epsilon": 1e-5, "early_stop_slope": 2e-5},
        "paper, learning rate 1e-1": {"learning_rate": 1e-1},
        "direct": {"mode": "direct"},
    }
    rows = []
    for name, fields in candidates.items():
        errors, evaluations = [], []
        for steps in step_counts:
            settings = PACMSettings(num_inference_steps=steps, **fields)
            result = run_pacm(components, latent, prompt, pose, no_frames, settings, show_progress=False)
            errors.append(relative_error(reconstruct_source(components, result, pose), result.latents[0]))
            evaluations.append(sum(stats.forward + stats.backward for stats in result.stats.values()))
        rows.append((name, *(f"{error:.4f}" for error in errors), *evaluations))
    print("\nFrame-0 reconstruction error of the source (||Z_0' - Z_0|| / ||Z_0||), and UNet evaluations (fwd + bwd)")
    header = ["setting", *(f"error, {steps} steps" for steps in step_counts)]
    header += [f"evaluations, {steps} steps" for steps in step_counts]
    print(format_table(header, rows))


def _totals(result: PACMResult) -> tuple[int, int]:
    return sum(s.forward for s in result.stats.values()), sum(s.backward for s in result.stats.values())


def _batched_vs_sequential(components, result, prompt, targets, settings, args) -> None:
    """Times the frame stage of the paper mode alone: all frames in one batch vs one frame at a time."""
    device = components.unet.device
    schedule = DDIMSchedule.from_scheduler(components.scheduler, settings.num_inference_steps)
    denoiser = ControlledDenoiser(components, EvaluationCounter(), settings.controlnet_conditioning_scale)
    source = SourceConditioning(result.source_embeddings, result.fixed_embedding, result.optimized_slot)
    poses = targets.to(device)
    latent_size = tuple(result.latents.shape[-2:])

    def frames(chunk: int):
        def run() -> None:
            with (
                denoiser.counter.stage("frames"),
                subject_attention_recording(components.unet, prompt.subject_token_indices, latent_size) as recording,
            ):
                for start in range(0, len(poses), chunk):
                    frame_conditioning(
                        denoiser, schedule, result.latents, source, poses[start : start + chunk], settings, recording
                    )

        return run

    candidates = {f"batched ({len(poses)} frames per batch)": frames(len(poses)), "sequential (1 frame)": frames(1)}
    timings = compare(candidates, device, rounds=args.rounds)
    batched = next(iter(timings.values())).seconds
    rows = [
        (name, m.seconds, m.seconds / len(poses), m.seconds / batched, f"{m.peak_memory_bytes / 2**20:.0f}")
        for name, m in timings.items()
    ]
    print(f"\nPer-frame pose-aware embeddings (Alg. 1), paper mode, {settings.num_inference_steps} steps")
    print(format_table(["frames", "seconds", "seconds per frame", "time vs batched", "peak MiB"], rows))
