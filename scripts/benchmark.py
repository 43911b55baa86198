"""Benchmarks of zeroshot-animate: speed and memory, measured side by side in one run.

Each subcommand prints a table of ratios against a baseline measured in the same process, in interleaved rounds.

  python scripts/benchmark.py attention    dual-consistency attention vs diffusers' AttnProcessor2_0
  python scripts/benchmark.py pacm         inversion and pose-aware embedding stages, paper mode vs fast modes
  python scripts/benchmark.py pacm-memory  host memory of the paper mode's frames, in memory vs left in the cache
  python scripts/benchmark.py pipeline     the whole PoseAnimate pipeline, per stage
  python scripts/benchmark.py poses        pose extraction, masks, PATA and rendering on real media
  python scripts/benchmark.py qffusion     Qffusion: QGP batched per wave vs one grid at a time vs naive; hook cost
  python scripts/benchmark.py startup      start-up: first line, refusals and imports vs a bare interpreter
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zeroshot.cli import run

# subcommand -> (module of zeroshot.bench with `add_arguments(parser)` and `main(args)`, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "attention": ("zeroshot.bench.attention", "dual-consistency attention vs diffusers' AttnProcessor2_0"),
    "pacm": ("zeroshot.bench.pacm", "PACM's stages, paper mode vs fast modes, batched vs one frame at a time"),
    "pacm-memory": ("zeroshot.bench.pacm_memory", "host memory of the paper mode's frames, in memory vs in the cache"),
    "pipeline": ("zeroshot.bench.pipeline", "the whole PoseAnimate pipeline, per stage, per mode and window"),
    "poses": ("zeroshot.bench.poses", "pose extraction, masks, PATA and rendering on real media"),
    "qffusion": ("zeroshot.bench.qffusion", "Qffusion: QGP per wave vs one grid at a time vs naive; hook cost"),
    "startup": ("zeroshot.bench.startup", "start-up: first line, refusals and imports vs a bare interpreter"),
}


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser, with only the chosen benchmark's module imported (the others' options are not needed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module_name, summary) in SUBCOMMANDS.items():
        if name != chosen:
            subparsers.add_parser(name, help=summary, add_help=False)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    chosen, _ = _parser(None).parse_known_args(argv)
    args = _parser(chosen.benchmark).parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    sys.exit(run(main))
