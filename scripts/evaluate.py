"""Score a generated animation: fidelity to the source, temporal consistency, and adherence to the target poses.

Always computed (offline, no weights):
  frame0_psnr, frame0_ssim   frame 0 against the source image (fitted to the frame size as the pipeline does)
  warping_error              consecutive frames warped by DIS optical flow, occlusions left out (lower is better)
  pose_pck, pose_keypoint_error, pose_detected_fraction
                             poses re-detected in each frame (mediapipe) against the target poses

With local weights:
  lpips                      --lpips-alexnet PATH (torchvision's alexnet-owt-7be5be79.pth); the linear heads come
                             from the `lpips` package when installed (pip install --no-deps lpips) or --lpips-linear
  clip_i, frame_consistency  --clip PATH (a CLIP model folder, e.g. `hf download openai/clip-vit-base-patch32`)

Example:
  python scripts/evaluate.py out/wave.mp4 --source astronaut.png --poses out/wave.poses.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from zeroshot.cli import ArgumentParser, frame_rate, run


def _default_json_path(output: Path) -> Path:
    return output.with_name(f"{output.stem if output.suffix else output.name}.metrics.json")


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("animation", type=Path, help="the generated .mp4, .gif or folder of PNG frames")
    parser.add_argument("--source", type=Path, required=True, help="the source image the animation was made from")
    parser.add_argument(
        "--poses", type=Path, required=True, help="the poses of every frame (the .poses.json animate.py writes)"
    )
    parser.add_argument(
        "--fps", type=frame_rate, default=8.0, help="frame rate of a PNG folder (default: %(default)s)"
    )
    parser.add_argument("--lpips-alexnet", type=Path, help="torchvision AlexNet checkpoint, for LPIPS")
    parser.add_argument("--lpips-linear", type=Path, help="LPIPS v0.1 alex.pth linear heads (default: from lpips)")
    parser.add_argument("--clip", type=Path, help="CLIP model folder, for CLIP-I and frame consistency")
    parser.add_argument("--device", default="cpu", help="device for LPIPS and CLIP (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="where to write the scores (default: ANIMATION.metrics.json)")
    args = parser.parse_args(argv)

    from zeroshot.errors import ZeroshotError
    from zeroshot.outputs import check_output

    if not args.animation.exists():
        raise ZeroshotError(f"Animation {str(args.animation)!r} does not exist.")
    for option, path in (("--lpips-alexnet", args.lpips_alexnet), ("--lpips-linear", args.lpips_linear)):
        if path is not None and not path.is_file():
            raise ZeroshotError(f"{option} {str(path)!r} is not a file.")
    if args.lpips_linear is not None and args.lpips_alexnet is None:
        raise ZeroshotError("--lpips-linear gives LPIPS's heads; LPIPS also needs --lpips-alexnet PATH.")
    if args.clip is not None and not args.clip.is_dir():
        raise ZeroshotError(f"--clip {str(args.clip)!r} is not a folder (a CLIP model folder).")
    target = check_output(args.json or _default_json_path(args.animation), what="--json")

    from zeroshot.atomic import write_json
    from zeroshot.evaluation import evaluate_animation
    from zeroshot.metrics import LPIPS, ClipImageEmbedder
    from zeroshot.poses import PoseSequence, load_poses
    from zeroshot.video import load_image, read_frames

    video = read_frames(args.animation, fps=args.fps)
    source = load_image(args.source)
    poses = load_poses(args.poses, show_progress=False)
    if not isinstance(poses, PoseSequence):
        raise ZeroshotError(f"{str(args.poses)!r} holds rendered pose images; give keypoints (the .poses.json file).")
    lpips = LPIPS(args.lpips_alexnet, args.lpips_linear, args.device) if args.lpips_alexnet else None
    clip = ClipImageEmbedder(args.clip, args.device) if args.clip else None
    scores = evaluate_animation(video.frames, source, poses, lpips=lpips, clip=clip)

    skipped = {}
    if lpips is None:
        skipped["lpips"] = "needs --lpips-alexnet PATH"
    if clip is None:
        skipped["clip_i, frame_consistency"] = "needs --clip PATH"
    width = max(map(len, [*scores, *skipped]))
    for name, value in scores.items():
        print(f"{name:<{width}}  {value:.4f}" if math.isfinite(value) else f"{name:<{width}}  {value}")
    for name, reason in skipped.items():
        print(f"{name:<{width}}  not computed: {reason}")

    record = {"animation": str(args.animation), "frames": len(video), "metrics": scores, "not_computed": skipped}
    write_json(target, record)
    print(f"scores written to {target}")


if __name__ == "__main__":
    sys.exit(run(main))
