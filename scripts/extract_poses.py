"""Extract a person's poses from a video as OpenPose JSON (COCO-18), offline.

  python scripts/extract_poses.py dance.mp4 -o dance_poses.json --preview dance_preview.mp4
  python scripts/extract_poses.py dance.mp4 -o dance_poses --max-gap 0.5 --render dance_poses.mp4
  python scripts/extract_poses.py dance.mp4 -o dance_poses.json --detector openpose --weights ./annotators --hands

mediapipe (the default) needs no weights and no network. controlnet-aux's OpenPose and DWPose need the `detectors`
extra (pip install -e ".[detectors]") and their weights as a local folder.

The poses are repaired: one person is kept (the largest, most central one, when the detector jumps between people),
mirrored skeletons and limb pairs are put back, implausible joints (too long a bone, too fast a step) are marked
missing, gaps up to --max-gap seconds are filled, and the result is smoothed with a One-Euro filter. What was done
goes to NAME.report.json beside the poses and to one line on the terminal. The frame rate and the video size are kept
in the output; --preview draws the poses over the video, marking joints swapped back (yellow) and filled (white).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zeroshot.atomic import write_json
from zeroshot.cli import ArgumentParser, positive_int, real_number, run
from zeroshot.errors import ZeroshotError
from zeroshot.poses import (
    DETECTORS,
    RepairSettings,
    check_openpose_output_path,
    check_preview_path,
    extract_poses,
    make_detector,
    overlay_poses,
    write_openpose_json,
    write_pose_images,
    write_preview,
)
from zeroshot.video import check_output_path, read_video

#: Longer side in pixels of preview videos.
PREVIEW_SIZE = 960


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
        "--max-gap",
        type=real_number(0),
        default=RepairSettings.max_gap_seconds,
        metavar="SECONDS",
        help="fill gaps of a joint up to this long; longer ones stay missing (default: %(default)s; 0 fills none)",
    )
    parser.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing after repair")
    parser.add_argument(
        "--no-repair", action="store_true", help="keep the detections as they are (frames without a person filled)"
    )
    parser.add_argument(
        "--preview", help="also draw the poses over the video: a .mp4 or .gif (plus a contact sheet .png), or a .png"
    )
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    parser.add_argument("--render", help="also write the rendered poses: a .mp4, a .gif or a folder of PNG frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not Path(args.video).is_file():
        raise ZeroshotError(f"Video {args.video!r} is not a file.")
    if args.no_repair and (args.no_smooth or args.max_gap != RepairSettings.max_gap_seconds):
        raise ZeroshotError(
            "--no-repair keeps the detections as they are: it cannot go with --no-smooth or --max-gap."
        )
    out = check_openpose_output_path(args.out)
    report_path = out.with_name(f"{out.stem}.report.json")
    if args.render:
        check_output_path(args.render)
    if args.preview:
        check_preview_path(args.preview)
    repair = None if args.no_repair else RepairSettings(max_gap_seconds=args.max_gap, smooth=not args.no_smooth)
    video = read_video(args.video, max_frames=args.max_frames)
    with make_detector(
        args.detector, args.weights, video=True, hands=args.hands, face=args.face, device=args.device
    ) as detector:
        extraction = extract_poses(
            video, detector, repair=repair, show_progress=not args.quiet, source=str(args.video)
        )
    write_openpose_json(extraction.poses, out)
    write_json(report_path, {"poses": str(out), **extraction.report()})
    print(f"{args.video}: {extraction.summary()}")
    print(f"wrote {out} and {report_path}")
    if args.render:
        write_pose_images(extraction.poses, args.render)
        print(f"wrote {args.render}")
    if args.preview:
        frames = overlay_poses(video.frames, extraction.poses, marks=extraction.marks, max_size=PREVIEW_SIZE)
        written = write_preview(frames, args.preview, video.fps)
        print(f"wrote {' and '.join(map(str, written))}")


if __name__ == "__main__":
    sys.exit(run(main))
