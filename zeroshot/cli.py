"""What every command-line script shares: model options, one loader call, and error reporting without tracebacks.

Importing this module is cheap (no torch, no diffusers): scripts that load no model do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .defaults import DEFAULT_CONTROLNET, DEFAULT_MODEL
from .errors import ZeroshotError

if TYPE_CHECKING:
    from .components import ModelComponents

#: Loggers whose INFO lines scripts show: the toolkit's, and the scripts' own (named `scripts.<script>`).
_OWN_LOGGERS = ("zeroshot", "hooks", "scripts")
#: Exit status of a script stopped by a [`~zeroshot.errors.ZeroshotError`] (bad input, missing weights, ...).
EXIT_USER_ERROR = 2
#: Exit status of a script stopped with Ctrl-C.
EXIT_INTERRUPTED = 130
#: Seeds go to Python's, NumPy's and torch's generators; NumPy's takes the smallest range, 32 bits.
MAX_SEED = 2**32 - 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a value starting with `-` is the value of the option before it when that option
    takes one value and the value is no option (`--size -64x64`, `--lambdas -1,1,1`, `--fps -inf`): the option's
    own check then says what is wrong, where argparse would say "expected one argument"."""

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        index = 0
        while index < len(args):
            token = args[index]
            action = self._option_string_actions.get(token)
            takes_one = action is not None and action.nargs is None and action.option_strings
            following = args[index + 1] if index + 1 < len(args) else None
            if takes_one and following and following.startswith("-") and not self._is_option(following):
                joined.append(f"{token}={following}")
                index += 2
                continue
            joined.append(token)
            index += 1
        return super().parse_known_args(joined, namespace)

    def _is_option(self, token: str) -> bool:
        """Whether argparse reads `token` as an option: `--`, an option string, or the abbreviation of a long one."""
        name = token.split("=", 1)[0]
        if token == "--" or name in self._option_string_actions:
            return True
        return name.startswith("--") and any(option.startswith(name) for option in self._option_string_actions)


def whole_number(minimum: int | None = None, maximum: int | None = None, *, why: str = "") -> Callable[[str], int]:
    """An argparse `type` for whole numbers in `[minimum, maximum]` (either end may be open); `why` explains the
    maximum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        _check_range(value, minimum, maximum, why)
        return value

    parse.__name__ = "whole number"
    return parse


def real_number(
    minimum: float | None = None, maximum: float | None = None, *, above: float | None = None, why: str = ""
) -> Callable[[str], float]:
    """An argparse `type` for finite numbers in `[minimum, maximum]`, or greater than `above` (either end may be
    open); `why` explains the maximum."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"{value:g} must be greater than {above:g}")
        _check_range(value, minimum, maximum, why)
        return value

    parse.__name__ = "number"
    return parse


def _check_range(value: float, minimum: float | None, maximum: float | None, why: str) -> None:
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"{value:g} must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"{value} must be at most {maximum}" + (f" ({why})" if why else ""))


def image_size(multiple_of: int = 1, maximum: int = 2**16, *, why: str = "") -> Callable[[str], tuple[int, int]]:
    """An argparse `type` for `WIDTHxHEIGHT` or `N` (square) -> `(width, height)`, each side a positive multiple of
    `multiple_of` and at most `maximum` (`why` explains the two)."""

    def parse(text: str) -> tuple[int, int]:
        parts = text.lower().split("x")
        try:
            width, height = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        except ValueError:
            message = f"{text!r} is not a size; write WIDTHxHEIGHT, e.g. 512x512, or 512"
            raise argparse.ArgumentTypeError(message) from None
        if width <= 0 or height <= 0 or width % multiple_of or height % multiple_of:
            rule = "positive" if multiple_of == 1 else f"positive multiples of {multiple_of}"
            raise argparse.ArgumentTypeError(
                f"{width}x{height} is not a valid size: width and height must be {rule}" + (f" ({why})" if why else "")
            )
        if max(width, height) > maximum:
            raise argparse.ArgumentTypeError(f"{width}x{height} is too large: at most {maximum} pixels a side")
        return width, height

    parse.__name__ = "size"
    return parse


#: Whole numbers from 1.
positive_int = whole_number(1)
#: Frame rates: positive and finite.
frame_rate = real_number(above=0, maximum=1000, why="frames per second")
#: Seeds of the random generators.
seed = whole_number(0, MAX_SEED, why="NumPy's generator takes 32-bit seeds")


def add_model_arguments(parser: argparse.ArgumentParser, *, controlnet: bool = True) -> None:
    """Adds `--model`, `--controlnet`, `--device`, `--dtype` and `--offline` to a script's parser."""
    group = parser.add_argument_group("models")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="base model: hub id or local diffusers-format folder (default: %(default)s)",
    )
    if controlnet:
        group.add_argument(
            "--controlnet",
            default=DEFAULT_CONTROLNET,
            help="OpenPose ControlNet: hub id or local folder (default: %(default)s)",
        )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: %(default)s)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="weight dtype; auto is fp16 on CUDA and fp32 elsewhere (default: %(default)s)",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network: models must be local folders or already in the Hugging Face cache",
    )


def load_components_from_args(args: argparse.Namespace, *, unet_in_channels: int | None = 4) -> ModelComponents:
    """Loads the models named by the options of [`add_model_arguments`]."""
    from .loading import load_components

    return load_components(
        args.model,
        getattr(args, "controlnet", None),
        device=args.device,
        dtype=args.dtype,
        offline=args.offline,
        unet_in_channels=unet_in_channels,
    )


def stage_summary(stages: Mapping[str, Mapping[str, float | int | bool]]) -> str:
    """A table of what each stage cost: seconds, UNet evaluations forward and backward (when counted), and whether it
    came from the cache (`cached`, or `frames_from_cache` of a partly cached stage), in the order given."""
    lines = [f"{'stage':<16}{'seconds':>9}{'UNet fwd':>10}{'UNet bwd':>10}  cache"]
    for name, stats in stages.items():
        cached = "cached" if stats.get("cached") else ""
        if not cached and stats.get("frames_from_cache"):
            cached = f"{stats['frames_from_cache']} frames cached"
        forward, backward = stats.get("forward", ""), stats.get("backward", "")
        lines.append(f"{name:<16}{stats['seconds']:>9.1f}{forward:>10}{backward:>10}  {cached}".rstrip())
    lines.append(f"{'total':<16}{sum(stats['seconds'] for stats in stages.values()):>9.1f}")
    return "\n".join(lines)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Runs a script's `main`, turning a [`~zeroshot.errors.ZeroshotError`] into one line on stderr.

    Returns:
        `int`: the exit status: 0, `EXIT_USER_ERROR` for a problem the user can fix, `EXIT_INTERRUPTED` on Ctrl-C.
        Other exceptions are bugs and propagate with their traceback.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in _OWN_LOGGERS:  # the toolkit's and the scripts' own INFO lines; other libraries' only from WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        main(argv)
    except ZeroshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
