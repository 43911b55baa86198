"""Benchmarks of zeroshot-animate: speed and memory, measured side by side in one run.

Each subcommand prints a table of ratios against a baseline measured in the same process, in interleaved rounds.

  python scripts/benchmark.py attention    dual-consistency attention vs diffusers' AttnProcessor2_0
  python scripts/benchmark.py pacm         inversion and pose-aware embedding stages, paper mode vs fast modes
  python scripts/benchmark.py pipeline     the whole PoseAnimate pipeline, per stage
  python scripts/benchmark.py poses        pose extraction, masks, PATA and rendering on real media
  python scripts/benchmark.py qffusion     Qffusion: QGP batched per wave vs one grid at a time vs naive; hook cost
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from zeroshot.cli import run

# subcommand -> module of zeroshot.bench that implements it (with `add_arguments(parser)` and `main(args)`)
SUBCOMMANDS: dict[str, str] = {
    "attention": "zeroshot.bench.attention",
    "pacm": "zeroshot.bench.pacm",
    "pipeline": "zeroshot.bench.pipeline",
    "poses": "zeroshot.bench.poses",
    "qffusion": "zeroshot.bench.qffusion",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    sys.exit(run(main))
