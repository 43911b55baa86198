"""Start-up: how long a script takes before it does any work, each step a fresh interpreter.

What a user waits for before the first line, before a bad input is refused, and before the models can load (the
imports), against a bare interpreter in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..cli import whole_number
from . import compare, format_table

_ROOT = Path(__file__).resolve().parents[2]
_ASSETS = _ROOT / "zeroshot" / "assets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=whole_number(1, 100), default=3, help="interpreters started per step (default: %(default)s)"
    )


def _steps(folder: Path) -> dict[str, list[str]]:
    out = ["--out", str(folder / "o.mp4")]
    animate = [str(_ROOT / "scripts" / "animate.py"), "--poses", str(_ASSETS / "wave.json"), *out]
    return {
        "bare interpreter": ["-c", "pass"],
        "animate.py --help": [animate[0], "--help"],
        "animate.py: a bad number refused": [*animate, "--image", "x.png", "--fps", "0"],
        "animate.py: a missing image refused": [*animate, "--image", str(folder / "none.png")],
        "import torch": ["-c", "import torch"],
        "import diffusers' UNet": ["-c", "from diffusers import UNet2DConditionModel"],
        "import zeroshot.poseanimate": ["-c", "import zeroshot.poseanimate"],
    }


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:

        def start(arguments: list[str]):
            return lambda: subprocess.run([sys.executable, *arguments], capture_output=True, check=False)

        steps = {name: start(arguments) for name, arguments in _steps(Path(folder)).items()}
        results = compare(steps, torch.device("cpu"), rounds=args.rounds)
    base = results["bare interpreter"].seconds
    rows = [(name, result.seconds, result.seconds / base) for name, result in results.items()]
    print(f"median of {args.rounds} fresh interpreters per step, interleaved")
    print(format_table(["step", "seconds", "vs bare interpreter"], rows))
