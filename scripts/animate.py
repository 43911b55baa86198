"""Animate the character of one image with a pose sequence (PoseAnimate, training-free, Stable Diffusion 1.5).

The output shows frame 0 = the source image, then transition frames from the source's pose to the first target
pose (PATA), then one frame per target pose. Beside it go NAME.report.json (settings, per-stage time and UNet
evaluations, peak memory, frame-0 reconstruction error) and NAME.poses.json (the pose of every frame, for
scripts/evaluate.py).

Examples:
  python scripts/animate.py --image zeroshot/assets/astronaut.jpg --poses zeroshot/assets/wave.json \\
      --prompt "a photo of an astronaut" --out out/wave.mp4
  python scripts/animate.py --image me.png --poses dance.mp4 --inversion direct --out out/dance.gif
  python scripts/animate.py --image me.png --poses openpose_output/ --pose-size 1280x720 --out out/frames
  python scripts/animate.py --image me.png --poses dance.mp4 --face --hands --out out/dance.mp4 \\
      --preview-poses check.mp4

Poses (--poses) can be our or OpenPose's JSON (one file, or a folder of per-frame files), a video or photo of a
person (poses extracted with mediapipe), or a folder or video of already-rendered pose images (used as they are:
no alignment, no transition frames). Poses extracted from a video are repaired (mirrors, implausible joints, gaps)
and smoothed; --face and --hands add face and hand keypoints, which the OpenPose ControlNet v1.1 was trained with.
--preview-poses draws the aligned poses (transition included) over the source image and stops before any model loads.

On a GPU the paper's settings (50 steps, 16 frames at 512x512) take on the order of minutes, most of it in the
pose-aware inversion; --inversion direct or negative-prompt skip the optimisation (several times faster). Results of
the inversion are cached (--cache-dir): a second animation of the same image with the same prompt skips it, and an
interrupted run resumes. Under `accelerate launch`, the per-frame optimisation is shared by the processes.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from zeroshot.cli import (
    MAX_SEED,
    ArgumentParser,
    add_model_arguments,
    frame_rate,
    image_size,
    positive_int,
    run,
    seed,
    stage_summary,
    whole_number,
)
from zeroshot.defaults import MAX_OUTPUT_SIDE

logger = logging.getLogger("scripts.animate")


#: Output sizes: the VAE downscales by 8.
_output_size = image_size(8, MAX_OUTPUT_SIDE, why="the VAE downscales by 8")


def _lambdas(text: str) -> tuple[float, float, float]:
    from hooks import DualConsistencyAttnProcessor

    try:
        values = tuple(float(part) for part in text.split(","))
        DualConsistencyAttnProcessor(lambdas=values)  # the processor's own check of its weights
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {error} Give them for frame 0, the previous frame and the frame itself, e.g. 0.7,0.15,0.15"
        ) from None
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    from zeroshot.face.arguments import add_face_arguments
    from zeroshot.pacm import add_pacm_arguments
    from zeroshot.poses.pata import MAX_TRANSITION_FRAMES

    parser = ArgumentParser(
        prog="animate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", type=Path, required=True, help="the still image of the character")
    parser.add_argument("--poses", type=Path, required=True, help="the pose sequence: JSON, video, or folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="output: a .mp4 or .gif file, or a folder path for PNG frames"
    )
    parser.add_argument(
        "--prompt", default="a photo of a person", help="describes the source image (default: %(default)r)"
    )
    parser.add_argument(
        "--subject",
        help="the word of the prompt that names the character; its cross-attention gives each frame's character "
        "mask (default: the first of person, man, woman, boy, girl, astronaut, ... found in the prompt)",
    )
    parser.add_argument("--negative-prompt", default="", help="the unconditional prompt (default: empty)")
    parser.add_argument(
        "--size", type=_output_size, default=(512, 512), help="output WIDTHxHEIGHT, multiples of 8 (default: 512x512)"
    )
    parser.add_argument("--fps", type=frame_rate, help="output frame rate (default: the poses' own, else 8)")
    parser.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seeds Python's, NumPy's and torch's generators and is recorded in the report; PoseAnimate itself draws "
        "no random numbers (every frame is sampled deterministically from the inverted latent), so the frames are "
        f"reproducible whatever the seed; 0 to {MAX_SEED} (default: %(default)s)",
    )

    animation = parser.add_argument_group("animation")
    animation.add_argument(
        "--lambdas",
        type=_lambdas,
        default=(0.7, 0.15, 0.15),
        help="dual-consistency attention weights of frame 0, the previous frame and the frame itself; more on frame "
        "0 keeps identity, more on the others follows the motion (default: 0.7,0.15,0.15)",
    )
    decoupling = animation.add_mutually_exclusive_group()
    decoupling.add_argument(
        "--no-decoupling",
        action="store_true",
        help="let character and background attend to each other (no mask-guided decoupling; no masks needed)",
    )
    decoupling.add_argument(
        "--literal-decoupling",
        action="store_true",
        help="decouple as the paper writes it (keys and values multiplied by the mask) instead of region-exclusive "
        "attention",
    )
    animation.add_argument(
        "--transition-frames",
        type=whole_number(0, MAX_TRANSITION_FRAMES, why="a transition longer than the longest default one"),
        help="frames of transition from the source pose to the first target pose (default: enough that no joint "
        f"moves more than 5%% of the picture per frame; 0 for none; at most {MAX_TRANSITION_FRAMES})",
    )
    animation.add_argument(
        "--window",
        type=positive_int,
        default=16,
        help="frames per UNet call in generation and decoding: lower it to fit GPU memory; every value gives the same "
        "frames, to float precision (default: %(default)s)",
    )
    inputs = parser.add_argument_group("source pose and mask")
    inputs.add_argument(
        "--pose-size",
        type=image_size(),
        help="canvas WIDTHxHEIGHT of OpenPose JSON keypoints in pixels that do not say it (any size: the size of the "
        "video the poses were detected on)",
    )
    inputs.add_argument(
        "--source-pose", type=Path, help="OpenPose JSON of the image's pose, instead of detecting it (one frame)"
    )
    inputs.add_argument(
        "--mask",
        help="the character mask of the image: selfie or pose (mediapipe), sam (needs --sam-checkpoint and the "
        "sam extra), or a mask image file, white on the character (default: selfie)",
    )
    inputs.add_argument("--sam-checkpoint", type=Path, help="Segment Anything checkpoint, for --mask sam")
    inputs.add_argument(
        "--face", action="store_true", help="also find face keypoints (source image, and poses extracted from a video)"
    )
    inputs.add_argument(
        "--hands",
        action="store_true",
        help="also find hand keypoints (source image, and poses extracted from a video)",
    )
    inputs.add_argument(
        "--preview-poses",
        type=Path,
        help="draw the aligned poses (with the transition) over the source image to a .png contact sheet or a .mp4 or "
        ".gif (plus its contact sheet), then stop: no model is loaded",
    )
    add_face_arguments(parser)
    add_pacm_arguments(parser)
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    logger.info(
        "animating %s with the poses of %s into %s (%dx%d, %s inversion, %d steps); checking the inputs",
        args.image, args.poses, args.out, *args.size, args.inversion, args.steps,
    )  # fmt: skip
    _check_arguments(args)

    from zeroshot.face import check_source_face
    from zeroshot.face.arguments import face_refinement_from_args
    from zeroshot.masks import MASK_METHODS, load_mask
    from zeroshot.pacm import pacm_cache_dir_from_args, pacm_settings_from_args
    from zeroshot.poses import (
        detect_source_pose,
        load_poses,
        load_source_pose,
        make_detector,
        require_keypoints,
    )
    from zeroshot.poses.pata import MAX_TRANSITION_FRAMES
    from zeroshot.video import check_output_path, load_image

    # 1. Everything about the inputs is checked, and the source's pose and mask found, before any model loads; what
    # needs no torch first, so that most mistakes are reported before the long imports.
    width, height = args.size
    settings = pacm_settings_from_args(args)
    face_refinement = face_refinement_from_args(args)
    image = load_image(args.image)
    with make_detector("mediapipe", video=True, face=args.face, hands=args.hands) as detector:
        poses = load_poses(args.poses, size=args.pose_size, detector=detector)
    if face_refinement is not None:
        require_keypoints(poses, "used for --refine-face (it finds each frame's face in its keypoints)")
    transition = MAX_TRANSITION_FRAMES if args.transition_frames is None else args.transition_frames
    out = check_output_path(args.out, num_frames=1 + transition + len(poses), size=args.size)
    decoupling = None if args.no_decoupling else ("literal" if args.literal_decoupling else "exclusive")
    mask = None
    if decoupling is not None and not args.preview_poses:
        method = args.mask or "selfie"
        mask = method if method in MASK_METHODS else load_mask(method, image.size)
    source_pose = load_source_pose(args.source_pose, image.size) if args.source_pose else None
    if source_pose is None and (args.face or args.hands):
        source_pose = detect_source_pose(image, face=args.face, hands=args.hands, name=str(args.image))
    clock = {"check inputs": time.perf_counter() - started}

    import numpy as np
    import torch

    from zeroshot.cli import load_components_from_args
    from zeroshot.poseanimate import UNET_STAGES, PoseAnimatePipeline, prepare_source

    clock["imports"] = time.perf_counter() - started - clock["check inputs"]  # torch and diffusers
    source = prepare_source(image, width, height, pose=source_pose, mask=mask, sam_checkpoint=args.sam_checkpoint)
    if face_refinement is not None:
        check_source_face(source.pose, face_refinement.min_face_size)
    if args.preview_poses:
        _preview_poses(source, poses, args)
        return
    clock["check inputs"] = time.perf_counter() - started - clock["imports"]
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # 2. Models, then the pipeline.
    logger.info("inputs checked; loading models: %s + %s", args.model, args.controlnet)
    loading = time.perf_counter()
    pipe = PoseAnimatePipeline.from_components(load_components_from_args(args))
    clock["load models"] = time.perf_counter() - loading
    accelerate_state = _distributed_state(pipe)
    try:
        result = pipe(
            image,
            poses,
            args.prompt,
            subject=args.subject,
            negative_prompt=args.negative_prompt,
            height=height,
            width=width,
            pacm_settings=settings,
            lambdas=args.lambdas,
            decoupling=decoupling,
            transition_frames=args.transition_frames,
            window=args.window,
            source=source,
            cache_dir=pacm_cache_dir_from_args(args),
            accelerate_state=accelerate_state,
            face_refinement=face_refinement,
        )
    finally:
        # The pipeline's last collective is inside PACM: every process ends the group as soon as the call returns
        # (or fails), while the interpreter is alive; a group left to interpreter shutdown can abort the process.
        if accelerate_state is not None:
            accelerate_state.destroy_process_group()
    if result is None:
        return  # another process of an `accelerate launch`: the main process writes the output

    # 3. The video first, then the files that describe it: a report beside an output means the output is complete.
    details = {
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "seed": args.seed,
        "image": str(args.image),
        "poses": str(args.poses),
        "model": args.model,
        "controlnet": args.controlnet,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "mask": (args.mask or "selfie") if decoupling is not None else None,
        "wall_seconds": time.perf_counter() - started,
    }
    report = result.save(out, args.fps or getattr(poses, "fps", None) or 8.0, details)
    seconds = report["wall_seconds"]
    order = ("poses", "mask", "encode", *UNET_STAGES, "decode")
    ran = result.report["stages"]
    stages = {name: {"seconds": seconds} for name, seconds in clock.items()}
    print(stage_summary(stages | {name: ran[name] for name in order if name in ran}))
    print(
        f"{out}: {len(result.frames)} frames ({result.num_transition} transition) at {report['fps']:g} fps in "
        f"{seconds:.1f} s; report: {out.with_name(f'{out.stem}.report.json')}"
    )


def _check_arguments(args: argparse.Namespace) -> None:
    """The checks of the options among themselves and of the output paths, which need no import of torch."""
    from zeroshot.errors import ZeroshotError
    from zeroshot.outputs import check_output
    from zeroshot.poses.preview import check_preview_path
    from zeroshot.video import check_output_path

    if args.no_decoupling and (args.mask or args.sam_checkpoint or args.subject):
        raise ZeroshotError(
            "--no-decoupling uses no character mask: leave out --mask, --sam-checkpoint and --subject, or decouple."
        )
    if (args.mask == "sam") != (args.sam_checkpoint is not None):
        raise ZeroshotError("--mask sam and --sam-checkpoint PATH (a Segment Anything checkpoint) go together.")
    out = check_output_path(args.out)
    for kind in ("report", "poses"):
        check_output(out.with_name(f"{out.stem}.{kind}.json"), what=f"the {kind} file")
    if not args.no_cache:  # the cache is written as PACM runs: a folder that cannot take it is found out now
        check_output(args.cache_dir / "cache-entry", what="--cache-dir")
    if args.preview_poses:
        check_preview_path(args.preview_poses)


def _preview_poses(source: object, poses: object, args: argparse.Namespace) -> None:
    """Draws the poses of every frame (source, transition, aligned target) over the fitted source image."""
    import numpy as np

    from zeroshot.poses import overlay_poses, pose_alignment_transition, require_keypoints, write_preview

    target = require_keypoints(poses, "previewed over the source image")
    result = pose_alignment_transition(source.pose, target, transition_frames=args.transition_frames)
    frames = overlay_poses(np.asarray(source.image), result.poses)
    written = write_preview(frames, args.preview_poses, args.fps or target.fps or 8.0)
    print(
        f"{len(frames)} poses ({result.num_transition} transition) over {args.image}: wrote "
        f"{' and '.join(map(str, written))}; no model was loaded"
    )


def _distributed_state(pipe: object) -> object | None:
    """Under `accelerate launch` (or torchrun) with several processes: their shared state, the models moved to this
    process's device. Otherwise `None`."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    pipe.to(state.device)
    return state


if __name__ == "__main__":
    sys.exit(run(main))
