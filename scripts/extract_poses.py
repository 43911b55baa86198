"""Extract a person's poses from a video as OpenPose JSON (COCO-18), offline.

  python scripts/extract_poses.py dance.mp4 -o dance_poses.json
  python scripts/extract_poses.py dance.mp4 -o dance_poses --smooth 1.5 --render dance_poses.mp4
  python scripts/extract_poses.py dance.mp4 -o dance_poses.json --detector openpose --weights ./annotators --hands

mediapipe (the default) needs no weights and no network. controlnet-aux's OpenPose and DWPose need the `detectors`
extra (pip install -e ".[detectors]") and their weights as a local folder. Frames in which no person is found are
filled from their neighbours, and counted in the summary. The frame rate and the video size are kept in the output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zeroshot.cli import ArgumentParser, positive_int, real_number, run
from zeroshot.errors import ZeroshotError
from zeroshot.poses import (
    DETECTORS,
    check_openpose_output_path,
    extract_video_poses,
    make_detector,
    write_openpose_json,
    write_pose_images,
)
from zeroshot.video import check_output_path

#: Widest temporal smoothing, in frames (a Gaussian's standard deviation).
MAX_SMOOTHING = 100.0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="the video to extract poses from (any format ffmpeg reads, or a GIF)")
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        help="a .json file (all frames, with canvas size and frame rate), or a folder path without a suffix (one "
        "OpenPose file per frame)",
    )
    parser.add_argument(
        "--detector", choices=DETECTORS, default="mediapipe", help="pose detector (default: %(default)s)"
    )
    parser.add_argument("--weights", help="local folder of the openpose or dwpose detector's weights")
    parser.add_argument("--hands", action="store_true", help="also detect hands (openpose, dwpose)")
    parser.add_argument("--face", action="store_true", help="also detect the face (openpose, dwpose)")
    parser.add_argument("--device", default="cpu", help="where the openpose or dwpose networks run (default: cpu)")
    parser.add_argument(
        "--smooth",
        type=real_number(0, MAX_SMOOTHING, why="a Gaussian that wide averages the motion away"),
        default=0.0,
        metavar="SIGMA",
        help=f"smooth keypoints over time with a Gaussian of this many frames, at most {MAX_SMOOTHING:g} (default: 0, "
        "off)",
    )
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    parser.add_argument("--render", help="also write the rendered poses: a .mp4, a .gif or a folder of PNG frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not Path(args.video).is_file():
        raise ZeroshotError(f"Video {args.video!r} is not a file.")
    check_openpose_output_path(args.out)
    if args.render:
        check_output_path(args.render)
    with make_detector(
        args.detector, args.weights, video=True, hands=args.hands, face=args.face, device=args.device
    ) as detector:
        extraction = extract_video_poses(
            args.video, detector, smoothing=args.smooth, max_frames=args.max_frames, show_progress=not args.quiet
        )
    write_openpose_json(extraction.poses, args.out)
    print(f"{args.video}: {extraction.summary()}")
    print(f"wrote {args.out}")
    if args.render:
        write_pose_images(extraction.poses, args.render)
        print(f"wrote {args.render}")


if __name__ == "__main__":
    sys.exit(run(main))
