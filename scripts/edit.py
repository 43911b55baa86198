"""Edit a portrait video from its edited first and last frames with a Qffusion checkpoint.

Edit the video's first and last frames in any image editor (same size as the video), then:

  python scripts/edit.py --video IN.mp4 --start START.png --end END.png --checkpoint CKPT --out OUT.mp4

The conditions (face mesh and shoulders, or OpenPose skeletons, as the checkpoint was trained) come from the input
video; quadrant-grid propagation regenerates every frame between the two references. The model works where it was
trained to: on square crops tracked around the subject (or on whole frames, if the checkpoint says so), pasted back
into the video with a feathered edge; pixels outside the crops are the input's. The output has the input's frame
count, frame rate and size, and its first and last frames are START and END. Beside it goes OUT.report.json (settings,
the checkpoint's settings, working size, crop boxes, grids and time per stage).

Jump-cut smoothing: with --jump-cut N and no --video, the conditions of START and END are interpolated over N frames:

  python scripts/edit.py --start BEFORE_CUT.png --end AFTER_CUT.png --jump-cut 12 --checkpoint CKPT --out OUT.mp4

CKPT is a diffusers-format model folder with a 12-channel UNet (train_qga.py's final/), or a .safetensors file of UNet
weights (a training checkpoint's unet.safetensors) completed by the base model given with --model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from zeroshot.atomic import write_json
from zeroshot.cli import (
    MAX_SEED,
    ArgumentParser,
    add_model_arguments,
    frame_rate,
    positive_int,
    run,
    seed,
    stage_summary,
    whole_number,
)
from zeroshot.defaults import MAX_OUTPUT_SIDE
from zeroshot.errors import ZeroshotError
from zeroshot.outputs import check_output
from zeroshot.video import check_output_path, load_image, read_video, write_video

logger = logging.getLogger("scripts.edit")

#: Longest jump-cut transition: two minutes at 25 fps.
MAX_JUMP_CUT_FRAMES = 3000
#: Frame rate of a jump-cut transition unless --fps says otherwise.
JUMP_CUT_FPS = 25.0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="input video (the motion, frame count, rate and size of the output)")
    parser.add_argument("--start", required=True, help="edited first frame (the video's size)")
    parser.add_argument("--end", required=True, help="edited last frame (the video's size)")
    parser.add_argument("--checkpoint", required=True, help="Qffusion model folder, or .safetensors of UNet weights")
    parser.add_argument("--vae", help="a VAE to use instead of the checkpoint's: diffusers folder or .safetensors")
    parser.add_argument("--out", "-o", required=True, help="output: .mp4, .gif, or a folder for PNG frames")
    parser.add_argument(
        "--jump-cut",
        type=whole_number(3, MAX_JUMP_CUT_FRAMES, why="two minutes at 25 fps"),
        metavar="N",
        help="jump-cut mode: N frames (3 or more) from START to END, no --video",
    )
    parser.add_argument("--fps", type=frame_rate, help=f"frame rate in jump-cut mode (default: {JUMP_CUT_FPS:g})")
    parser.add_argument(
        "--schedule", choices=["qgp", "naive"], default="qgp", help="frame order (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=whole_number(1, 1000), default=25, help="denoising steps per grid (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="grids per UNet batch (default: %(default)s)"
    )
    parser.add_argument(
        "--resolution",
        type=whole_number(8, MAX_OUTPUT_SIDE),
        help="shorter side of the working size (default: the checkpoint's)",
    )
    parser.add_argument("--seed", type=seed, default=0, help=f"random seed, 0 to {MAX_SEED} (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(parser, controlnet=False)
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model."""
    if args.jump_cut is None and args.video is None:
        raise ZeroshotError("Pass --video IN (editing), or --jump-cut N (a transition between --start and --end).")
    if args.jump_cut is not None and args.video is not None:
        raise ZeroshotError("--jump-cut makes a transition from --start to --end alone; leave out --video.")
    if args.video is not None and args.fps is not None:
        raise ZeroshotError("--fps is the frame rate of a jump cut; an edited video keeps the input's.")
    if not Path(args.checkpoint).expanduser().exists():
        raise ZeroshotError(f"The checkpoint {args.checkpoint!r} does not exist.")
    out = check_output_path(args.out)
    check_output(out.with_name(f"{out.stem}.report.json"), what="the report file")


def _used_settings(args: argparse.Namespace) -> dict:
    """The options as they were used: the base model only completes a checkpoint of UNet weights, and the frame
    rate is a jump cut's (an edited video keeps the input's, which the report gives as `fps`)."""
    settings = vars(args).copy()
    if not str(args.checkpoint).endswith(".safetensors"):
        settings["model"] = None
    settings["fps"] = (args.fps or JUMP_CUT_FPS) if args.jump_cut is not None else None
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    what = f"editing {args.video}" if args.video is not None else f"a jump cut of {args.jump_cut} frames"
    logger.info("%s from %s to %s into %s; checking the inputs", what, args.start, args.end, args.out)
    _check_arguments(args)
    out = Path(args.out)
    report_path = out.with_name(f"{out.stem}.report.json")
    start, end = load_image(args.start), load_image(args.end)
    video = read_video(args.video) if args.video is not None else None

    import torch

    from zeroshot.qffusion import (
        QffusionPipeline,
        detect_landmarks,
        edit_video,
        jump_cut_landmarks,
        load_qffusion_components,
        read_qffusion_config,
        reference_arrays,
        smooth_jump_cut,
    )

    # 1. Everything that needs no model: the checkpoint's settings, the references, the landmarks.
    config = read_qffusion_config(args.checkpoint)
    # a jump cut's landmarks come from the references themselves, which checks them
    start, end = reference_arrays(start, end, video, condition=None if video is None else config.condition)
    clock = time.perf_counter()
    if video is not None:
        landmarks = detect_landmarks(config.condition, video.frames, show_progress=not args.no_progress)
    else:
        landmarks = jump_cut_landmarks(config, start, end, args.jump_cut)
    landmark_seconds = time.perf_counter() - clock

    # 2. The models, then the frames.
    components, config = load_qffusion_components(
        args.checkpoint, model=args.model, vae=args.vae, device=args.device, dtype=args.dtype, offline=args.offline
    )
    pipe = QffusionPipeline.from_components(components)
    options = {
        "landmarks": landmarks,
        "schedule": args.schedule,
        "num_inference_steps": args.steps,
        "generator": torch.Generator(components.unet.device).manual_seed(args.seed),
        "batch_size": args.batch_size,
        "resolution": args.resolution,
        "show_progress": not args.no_progress,
    }
    if video is not None:
        result = edit_video(pipe, config, video, start, end, **options)
    else:
        result = smooth_jump_cut(pipe, config, start, end, args.jump_cut, args.fps or JUMP_CUT_FPS, **options)

    # 3. The video first, then the report: a report beside an output means the output is complete.
    path = write_video(result.video.frames, out, result.video.fps)
    report = {
        "output": str(path),
        "settings": _used_settings(args),
        "checkpoint_config": json.loads(config.to_json()),
        "frames": len(result.video),
        "fps": result.video.fps,
        "working_size": list(result.conditions.shape[2:0:-1]),
        "crop": config.crop,
        "crop_boxes": result.crop_boxes.tolist(),
        "grids": len(result.schedule),
        "waves": len(result.schedule.waves),
        "seconds": {"landmarks": landmark_seconds, **result.seconds},
    }
    write_json(report_path, report)
    print(stage_summary({name: {"seconds": seconds} for name, seconds in report["seconds"].items()}))
    print(f"wrote {path} ({len(result.video)} frames at {result.video.fps:g} fps, {len(result.schedule)} grids)")


if __name__ == "__main__":
    sys.exit(run(main))
