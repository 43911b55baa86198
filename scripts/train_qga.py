"""Fine-tune Stable Diffusion 1.5 into a Qffusion (quadrant-grid) model on a folder of videos.

  python scripts/train_qga.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 --data videos/ --out runs/qga

Several GPUs: `accelerate launch --multi_gpu --num_processes 4 scripts/train_qga.py ...`. Several CPU processes (for
trying it out): `python -m torch.distributed.run --nproc_per_node 2 scripts/train_qga.py --cpu ...`.

The UNet's input is widened to 12 channels (new channels zero-initialised); each sample is four frames at a fixed
interval from square crops tracked around the subject (or whole frames, --crop full: the checkpoint records which, and
edit.py follows it), with their face-mesh renders as conditions. Checkpoints go to
OUT/checkpoint-STEP (resume with --resume latest), the loss to OUT/log.jsonl, and the finished model to OUT/final,
which scripts/edit.py --checkpoint takes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from zeroshot.cli import ArgumentParser, run
from zeroshot.defaults import DEFAULT_MODEL
from zeroshot.qffusion.settings import TrainingSettings

logger = logging.getLogger("scripts.train_qga")


def build_parser() -> argparse.ArgumentParser:
    defaults = {field.name: field.default for field in fields(TrainingSettings)}
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model: hub id or folder (default: %(default)s)")
    parser.add_argument("--data", required=True, help="folder of training videos (searched recursively)")
    parser.add_argument(
        "-o", "--out", dest="output_dir", required=True, help="run folder: checkpoints, log, data cache and final/"
    )
    options = [
        ("--resolution", int, "side of the square training frames"),
        ("--interval", str, "frames between the four frames of a sample, or a range LOW:HIGH"),
        ("--crop", str, "subject (square crops tracked around the subject) or full (whole frames)"),
        ("--crop-scale", float, "subject crops: side over the subject's size"),
        ("--crop-smoothing", float, "subject crops: smoothing of their centres, in frames"),
        ("--condition", str, "face (face mesh and shoulders) or body (OpenPose)"),
        ("--prompt", str, "fixed text for the cross-attention"),
        ("--learning-rate", float, "peak learning rate"),
        ("--warmup-steps", int, "linear warm-up, in optimizer steps"),
        ("--max-steps", int, "optimizer steps to train for"),
        ("--batch-size", int, "samples per process and micro-batch"),
        ("--gradient-accumulation", int, "micro-batches per optimizer step"),
        ("--weight-decay", float, "AdamW weight decay"),
        ("--max-grad-norm", float, "gradient clipping"),
        ("--mixed-precision", str, "no, fp16 or bf16"),
        ("--checkpoint-every", int, "optimizer steps between checkpoints"),
        ("--keep-checkpoints", int, "newest checkpoints kept (0: all)"),
        ("--log-every", int, "optimizer steps between log lines"),
        ("--seed", int, "seed of data order, noise and timesteps"),
        ("--num-workers", int, "data-loading processes per training process"),
    ]
    for option, kind, text in options:
        default = defaults[option[2:].replace("-", "_")]
        parser.add_argument(option, type=kind, default=default, help=f"{text} (default: {default!r})")
    parser.add_argument("--resume", help="'latest' or a checkpoint-STEP folder to continue from")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="save UNet memory at some speed")
    parser.add_argument("--cpu", action="store_true", help="train on CPUs (several processes use gloo)")
    parser.add_argument("--offline", action="store_true", help="never touch the network for the base model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    args["show_progress"] = not args.pop("no_progress")
    settings = TrainingSettings(**args)
    settings.check()  # before torch is imported
    if int(os.environ.get("RANK", "0")) == 0:
        logger.info("training %s on the videos of %s into %s", settings.model, settings.data, settings.output_dir)

    from zeroshot.qffusion.training import train_qga

    logging.getLogger("accelerate").setLevel(logging.WARNING)
    final = train_qga(settings)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"trained model: {final}")


if __name__ == "__main__":
    sys.exit(run(main))
