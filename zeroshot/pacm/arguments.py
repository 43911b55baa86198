"""Command-line options of PACM, for scripts that run it (`scripts/animate.py`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import positive_int, real_number, whole_number
from ..errors import ZeroshotError
from .settings import EMBEDDING_SLOTS, FRAME_OPTIMIZERS, PACM_MODES, PACMSettings

#: DDIM steps: at most one per training timestep of Stable Diffusion's scheduler.
_ddim_steps = whole_number(1, 1000, why="the scheduler has 1000 training timesteps")
#: Optimisation steps per timestep: each is a UNet forward and backward pass per frame.
_inner_steps = whole_number(0, 1000, why="each step is a UNet forward and backward pass per frame")


def default_cache_dir() -> Path:
    """Where PACM results are cached unless told otherwise: `$ZEROSHOT_CACHE/pacm`, else
    `$XDG_CACHE_HOME/zeroshot-animate/pacm`, else `~/.cache/zeroshot-animate/pacm`."""
    if os.environ.get("ZEROSHOT_CACHE"):
        return Path(os.environ["ZEROSHOT_CACHE"]) / "pacm"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "zeroshot-animate" / "pacm"


def add_pacm_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds PACM's options (defaults: the paper's) and `--cache-dir`/`--no-cache` to a script's parser."""
    defaults = PACMSettings()
    group = parser.add_argument_group("pose-aware control (PACM)")
    group.add_argument(
        "--inversion",
        choices=PACM_MODES,
        default=defaults.mode,
        help="paper: pose-aware inversion and per-frame embedding optimisation (slowest, most faithful); "
        "negative-prompt: no optimisation; direct: no optimisation, frame 0 exact (default: %(default)s)",
    )
    group.add_argument(
        "--steps", type=_ddim_steps, default=defaults.num_inference_steps, help="DDIM steps (default: %(default)s)"
    )
    group.add_argument(
        "--guidance",
        type=real_number(above=0),
        default=defaults.guidance_scale,
        help="classifier-free guidance (default: %(default)s)",
    )
    group.add_argument(
        "--controlnet-scale",
        type=real_number(0),
        default=defaults.controlnet_conditioning_scale,
        help="ControlNet conditioning scale (default: %(default)s)",
    )
    group.add_argument(
        "--optimized-slot",
        choices=EMBEDDING_SLOTS,
        default=defaults.optimized_slot,
        help="guidance slot whose embedding is optimised (default: %(default)s)",
    )
    group.add_argument(
        "--source-inner-steps",
        type=_inner_steps,
        default=defaults.source_inner_steps,
        help="Adam steps per timestep for the source (default: %(default)s)",
    )
    group.add_argument(
        "--frame-inner-steps",
        type=_inner_steps,
        default=defaults.frame_inner_steps,
        help="gradient steps per timestep for each frame (default: %(default)s)",
    )
    group.add_argument(
        "--frame-optimizer",
        choices=FRAME_OPTIMIZERS,
        default=defaults.frame_optimizer,
        help="gradient: Alg. 1's plain step of size --frame-step-size; adam: a fresh Adam at --learning-rate "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--frame-step-size",
        type=real_number(above=0),
        default=defaults.frame_step_size,
        help="step size of each frame's gradient step (Alg. 1's eta) (default: %(default)s)",
    )
    group.add_argument(
        "--learning-rate",
        type=real_number(above=0),
        default=defaults.learning_rate,
        help="Adam learning rate of the source stage (and of the frames with --frame-optimizer adam) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--learning-rate-decay",
        type=real_number(0),
        default=defaults.learning_rate_decay,
        help="learning rate at step i: lr * (1 - decay * i) (default: %(default)s)",
    )
    group.add_argument(
        "--early-stop",
        type=real_number(0),
        nargs=2,
        metavar=("EPSILON", "SLOPE"),
        default=(defaults.early_stop_epsilon, defaults.early_stop_slope),
        help="stop a step's optimisation once the loss < EPSILON + SLOPE * i; 0 0 disables (default: 0 0; "
        "null-text inversion's 1e-5 2e-5 saves 2%% of the evaluations and reconstructs frame 0 worse)",
    )
    group.add_argument(
        "--frame-chunk-size",
        type=positive_int,
        default=defaults.frame_chunk_size,
        help="target frames optimised together (their backward passes need memory); lower it to fit GPU memory; "
        "the result is the same for every value (default: %(default)s)",
    )
    group.add_argument(
        "--mask-threshold", type=real_number(0), default=defaults.mask_threshold, help="(default: %(default)s)"
    )
    add_cache_arguments(group)


def add_cache_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Adds `--cache-dir` and `--no-cache`, where PACM's results are kept (see [`pacm_cache_dir_from_args`])."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where inversion results are cached, so a second run on the same image skips them (default: %(default)s)",
    )
    parser.add_argument("--no-cache", action="store_true", help="cache nothing")


def pacm_settings_from_args(args: argparse.Namespace) -> PACMSettings:
    """The [`PACMSettings`] of the options of [`add_pacm_arguments`].

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: an option has a value PACM cannot use.
    """
    try:
        return PACMSettings(
            mode=args.inversion,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            controlnet_conditioning_scale=args.controlnet_scale,
            optimized_slot=args.optimized_slot,
            source_inner_steps=args.source_inner_steps,
            frame_inner_steps=args.frame_inner_steps,
            frame_optimizer=args.frame_optimizer,
            frame_step_size=args.frame_step_size,
            learning_rate=args.learning_rate,
            learning_rate_decay=args.learning_rate_decay,
            early_stop_epsilon=args.early_stop[0],
            early_stop_slope=args.early_stop[1],
            frame_chunk_size=args.frame_chunk_size,
            mask_threshold=args.mask_threshold,
        )
    except ValueError as error:
        raise ZeroshotError(f"Invalid PACM option: {error}") from error


def pacm_cache_dir_from_args(args: argparse.Namespace) -> Path | None:
    """The cache directory the options ask for, or `None` with `--no-cache`."""
    return None if args.no_cache else args.cache_dir
