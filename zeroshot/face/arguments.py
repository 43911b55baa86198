"""Command-line options of the face refinement pass, for `scripts/animate.py` (torch-free)."""

from __future__ import annotations

import argparse

from ..errors import ZeroshotError
from .settings import DEFAULT_STRENGTH, FaceRefinement


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--refine-face [STRENGTH]` and `--face-size` to a script's parser."""
    group = parser.add_argument_group("face refinement")
    group.add_argument(
        "--refine-face",
        type=float,
        nargs="?",
        const=DEFAULT_STRENGTH,
        metavar="STRENGTH",
        help="refine every frame's face with a second pass on face crops, anchored on the source's face and pasted "
        "back through a feathered mask; STRENGTH in [0, 1] is how far the crops are re-noised (default when given "
        f"without a value: {DEFAULT_STRENGTH})",
    )
    group.add_argument(
        "--face-size",
        type=int,
        help="side in pixels the face crops are resized to, a multiple of 8 (default: 512)",
    )


def face_refinement_from_args(args: argparse.Namespace) -> FaceRefinement | None:
    """The [`FaceRefinement`] of `--refine-face` and `--face-size`, or `None` without `--refine-face`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: a strength outside [0, 1], a face size that is not a positive multiple of
            8, or `--face-size` without `--refine-face`.
    """
    if args.refine_face is None:
        if args.face_size is not None:
            raise ZeroshotError("--face-size sets the crop size of the face refinement pass: add --refine-face.")
        return None
    if not 0.0 <= args.refine_face <= 1.0:
        raise ZeroshotError(f"--refine-face STRENGTH must lie in [0, 1], got {args.refine_face:g}.")
    face_size = 512 if args.face_size is None else args.face_size
    if face_size < 8 or face_size % 8:
        raise ZeroshotError(
            f"--face-size must be a positive multiple of 8 (the VAE downscales by 8), got {face_size}; e.g. 512."
        )
    return FaceRefinement(strength=args.refine_face, face_size=face_size)
