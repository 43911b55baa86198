"""What every command-line script shares: model options, one loader call, and error reporting without tracebacks.

Importing this module is cheap (no torch, no diffusers): scripts that load no model do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
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
