"""What the app's buttons do, without Gradio: check the inputs, call the scripts' pipeline objects, write the files.

Every function raises [`~zeroshot.errors.ZeroshotError`] for a problem the user can fix (the page shows its message),
and checks all it can before any model runs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_json
from ..errors import ZeroshotError
from ..face import FaceRefinement, check_source_face
from ..poses import PoseSequence, load_poses, pose_alignment_transition, require_keypoints, write_openpose_json
from ..poses.preview import overlay_poses
from ..video import load_image, read_video, write_video
from .models import AppModels

if TYPE_CHECKING:
    from ..pacm import PACMSettings

#: The decoupling choices of the page: mask-guided decoupling as the scripts' default, the paper's, or none.
DECOUPLING_CHOICES = ("exclusive", "literal", "off")
#: The frame rate of an animation whose poses carry none (as in `scripts/animate.py`).
DEFAULT_FPS = 8.0


@dataclass(frozen=True)
class AnimateOptions:
    """The settings of the Animate tab, with `scripts/animate.py`'s defaults and meanings.

    Args:
        prompt (`str`): describes the source image.
        subject (`str`, *optional*): the prompt's word for the character; by default found in the prompt.
        negative_prompt (`str`): the unconditional prompt.
        inversion (`str`): `"paper"`, `"negative-prompt"` or `"direct"` (PACM's mode).
        steps (`int`): DDIM steps.
        guidance (`float`): classifier-free guidance.
        lambdas (`tuple[float, float, float]`): dual-consistency weights of frame 0, the previous frame, the frame.
        decoupling (`str`): one of `DECOUPLING_CHOICES`.
        transition_frames (`int`, *optional*): frames from the source pose to the first target pose; by default
            enough that no joint moves more than 5% of the picture per frame.
        width (`int`), height (`int`): output size, multiples of 8.
        seed (`int`): recorded in the report, as the script does.
        face_strength (`float`): face refinement's strength in [0, 1] (`--refine-face STRENGTH`); 0 refines nothing.
        face_size (`int`): the side of the face crops of the refinement pass (`--face-size`).
    """

    prompt: str = "a photo of a person"
    subject: str | None = None
    negative_prompt: str = ""
    inversion: str = "paper"
    steps: int = 50
    guidance: float = 7.5
    lambdas: tuple[float, float, float] = (0.7, 0.15, 0.15)
    decoupling: str = "exclusive"
    transition_frames: int | None = None
    width: int = 512
    height: int = 512
    seed: int = 0
    face_strength: float = 0.0
    face_size: int = 512

    def check(self) -> None:
        """Raises [`~zeroshot.errors.ZeroshotError`] for a setting the animation cannot use."""
        if self.width <= 0 or self.height <= 0 or self.width % 8 or self.height % 8:
            raise ZeroshotError(
                f"The size must be positive multiples of 8 (the VAE downscales by 8), got {self.width}x{self.height}."
            )
        if self.decoupling not in DECOUPLING_CHOICES:
            raise ZeroshotError(f"Decoupling must be one of {DECOUPLING_CHOICES}, got {self.decoupling!r}.")
        if self.transition_frames is not None and self.transition_frames < 0:
            raise ZeroshotError(f"Transition frames must be 0 or more, got {self.transition_frames}.")
        from hooks import DualConsistencyAttnProcessor

        try:
            DualConsistencyAttnProcessor(lambdas=self.lambdas)  # the processor's own check of its weights
        except ValueError as error:
            raise ZeroshotError(f"Lambdas {self.lambdas}: {error}") from error
        self.pacm_settings()
        self.face_refinement()

    def face_refinement(self) -> FaceRefinement | None:
        """The pipeline's `face_refinement` argument: `None` at strength 0."""
        if self.face_strength == 0:
            return None
        try:
            return FaceRefinement(strength=self.face_strength, face_size=self.face_size)
        except ValueError as error:
            raise ZeroshotError(f"Face refinement: {error}") from error

    def pacm_settings(self) -> PACMSettings:
        """The [`~zeroshot.pacm.PACMSettings`] of these options."""
        from ..pacm import PACMSettings

        try:
            return PACMSettings(mode=self.inversion, num_inference_steps=self.steps, guidance_scale=self.guidance)
        except ValueError as error:
            raise ZeroshotError(f"Invalid setting: {error}") from error

    @property
    def pipeline_decoupling(self) -> str | None:
        """The pipeline's `decoupling` argument."""
        return None if self.decoupling == "off" else self.decoupling


@dataclass(frozen=True)
class AnimationFiles:
    """What a run of the Animate tab wrote.

    Args:
        video (`Path`): the animation (`.mp4`).
        poses (`Path`, *optional*): the pose of every frame (OpenPose JSON); `None` for rendered pose images.
        report (`Path`): `report.json`, as `scripts/animate.py` writes it.
        summary (`dict`): the report's key figures, from [`key_figures`].
    """

    video: Path
    poses: Path | None
    report: Path
    summary: dict


def _input_path(path: str | os.PathLike | None, what: str) -> Path:
    if path is None or str(path) == "":
        raise ZeroshotError(f"Give {what} first.")
    return Path(path)


def _check_face_refinement(options: AnimateOptions, source_pose: PoseSequence, poses: object) -> None:
    """Refuses face refinement, before any model, where it cannot run: poses without keypoints to find faces in, or
    no face (or too small a face) in the source image."""
    refinement = options.face_refinement()
    if refinement is not None:
        require_keypoints(poses, "used for face refinement (it finds each frame's face in its keypoints)")
        check_source_face(source_pose, refinement.min_face_size)


def preview_poses(
    image_path: str | os.PathLike | None, poses_path: str | os.PathLike | None, options: AnimateOptions
) -> np.ndarray:
    """The animation's pose sequence (aligned to the image, with its transition frames) drawn over the fitted image,
    as the Run button will use it; no model is loaded.

    Returns:
        `np.ndarray`: `uint8` frames `[frames, height, width, 3]`; frame 0 shows the image's own pose.
    """
    from ..poseanimate import prepare_source

    options.check()
    image = load_image(_input_path(image_path, "an image of the character"))
    poses = require_keypoints(load_poses(_input_path(poses_path, "the poses (a video or a JSON file)")))
    source = prepare_source(image, options.width, options.height, mask=None)
    _check_face_refinement(options, source.pose, poses)
    aligned = pose_alignment_transition(source.pose, poses, transition_frames=options.transition_frames)
    return overlay_poses(np.asarray(source.image), aligned.poses)


def animate(
    models: AppModels,
    image_path: str | os.PathLike | None,
    poses_path: str | os.PathLike | None,
    options: AnimateOptions,
    out_dir: str | os.PathLike,
) -> AnimationFiles:
    """Animates the image with the poses, as `scripts/animate.py` does, into `out_dir/animation.*`.

    Args:
        models ([`AppModels`]): the loaded models.
        image_path (`str` or `os.PathLike`): the character's image.
        poses_path (`str` or `os.PathLike`): the poses, as `scripts/animate.py --poses` takes them.
        options ([`AnimateOptions`]): the settings.
        out_dir (`str` or `os.PathLike`): an existing, empty folder for `animation.mp4`, `animation.poses.json` and
            `animation.report.json`.
    """
    from ..poseanimate import prepare_source

    started = time.perf_counter()
    options.check()
    settings = options.pacm_settings()
    image = load_image(_input_path(image_path, "an image of the character"))
    poses = load_poses(_input_path(poses_path, "the poses (a video or a JSON file)"))
    decoupling = options.pipeline_decoupling
    source = prepare_source(image, options.width, options.height, mask="selfie" if decoupling else None)
    _check_face_refinement(options, source.pose, poses)
    out = Path(out_dir) / "animation.mp4"

    pipe = models.pose_animate
    result = pipe(
        image,
        poses,
        options.prompt,
        subject=options.subject or None,
        negative_prompt=options.negative_prompt,
        height=options.height,
        width=options.width,
        pacm_settings=settings,
        lambdas=options.lambdas,
        decoupling=decoupling,
        transition_frames=options.transition_frames,
        source=source,
        cache_dir=models.cache_dir,
        face_refinement=options.face_refinement(),
    )
    details = {
        "app_options": asdict(options),
        "seed": options.seed,
        "image": str(image_path),
        "poses": str(poses_path),
        **models.describe(),
        "mask": "selfie" if decoupling is not None else None,
        "wall_seconds": time.perf_counter() - started,
    }
    report = result.save(out, getattr(poses, "fps", None) or DEFAULT_FPS, details)
    poses_file = Path(report["poses_file"]) if report["poses_file"] is not None else None
    return AnimationFiles(out, poses_file, out.with_name("animation.report.json"), key_figures(report))


def key_figures(report: dict) -> dict:
    """The figures of a `report.json` that the page shows: frames, seconds and UNet evaluations per stage, peak memory.

    Returns:
        `dict`: `{"frames", "transition_frames", "wall_seconds", "peak_memory_mib", "stages": {name: {"seconds",
        "forward", "backward"}}, "unet_forward", "unet_backward"}`.
    """
    return {
        "frames": report["frames"],
        "transition_frames": report["transition_frames"],
        "wall_seconds": report["wall_seconds"],
        "peak_memory_mib": report["peak_memory_bytes"] / 2**20,
        "stages": {
            name: {key: stage[key] for key in ("seconds", "forward", "backward")}
            for name, stage in report["stages"].items()
        },
        "unet_forward": report["unet_evaluations"]["forward"],
        "unet_backward": report["unet_evaluations"]["backward"],
    }


def figures_markdown(figures: dict) -> str:
    """[`key_figures`] as a Markdown table, one row per stage, then the totals and the peak memory."""
    lines = [
        f"**{figures['frames']} frames** ({figures['transition_frames']} transition) in "
        f"{figures['wall_seconds']:.1f} s; peak memory {figures['peak_memory_mib']:.0f} MiB",
        "",
        "| stage | seconds | UNet forward | UNet backward |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, stage in figures["stages"].items():
        lines.append(f"| {name} | {stage['seconds']:.2f} | {stage['forward']} | {stage['backward']} |")
    lines.append(f"| **all** | | **{figures['unet_forward']}** | **{figures['unet_backward']}** |")
    return "\n".join(lines)


@dataclass(frozen=True)
class ExtractionFiles:
    """What a run of the Extract tab wrote.

    Args:
        poses (`Path`): the poses as one OpenPose JSON file (canvas size and frame rate kept).
        preview (`Path`): the video with its extracted poses drawn over it (`.mp4`).
        summary (`str`): frames, detection rate, filled frames, frame rate.
    """

    poses: Path
    preview: Path
    summary: str


def extract(
    video_path: str | os.PathLike | None, max_gap_seconds: float, smooth: bool, out_dir: str | os.PathLike
) -> ExtractionFiles:
    """Extracts and repairs a person's poses from a video with mediapipe, as `scripts/extract_poses.py` does, into
    `out_dir/poses.json` (with `out_dir/poses.report.json`), and `out_dir/poses_preview.mp4` showing them over the
    video with repaired and filled joints marked."""
    from ..poses import RepairSettings, extract_poses, make_detector

    if not max_gap_seconds >= 0:
        raise ZeroshotError(
            f"The longest gap to fill must be 0 (none) or a positive number of seconds, got {max_gap_seconds}."
        )
    repair = RepairSettings(max_gap_seconds=max_gap_seconds, smooth=smooth)
    path = _input_path(video_path, "a video of a person")
    video = read_video(path)
    with make_detector("mediapipe", video=True) as detector:
        extraction = extract_poses(video, detector, repair=repair, source=path.name)
    out = Path(out_dir)
    poses_file, preview_file = out / "poses.json", out / "poses_preview.mp4"
    write_openpose_json(extraction.poses, poses_file)
    write_json(out / "poses.report.json", {"poses": str(poses_file), **extraction.report()})
    write_video(overlay_poses(video.frames, extraction.poses, marks=extraction.marks), preview_file, video.fps)
    return ExtractionFiles(poses_file, preview_file, extraction.summary())


@dataclass(frozen=True)
class EditOptions:
    """The settings of the Edit tab, with `scripts/edit.py`'s defaults and meanings.

    Args:
        jump_cut (`int`, *optional*): jump-cut mode: this many frames from the start to the end frame, no video.
        fps (`float`): frame rate in jump-cut mode.
        steps (`int`): denoising steps per grid.
        seed (`int`): random seed.
    """

    jump_cut: int | None = None
    fps: float = 25.0
    steps: int = 25
    seed: int = 0


def edit(
    models: AppModels,
    video_path: str | os.PathLike | None,
    start_path: str | os.PathLike | None,
    end_path: str | os.PathLike | None,
    checkpoint: str,
    options: EditOptions,
    out_dir: str | os.PathLike,
) -> tuple[Path, Path]:
    """Edits a video from its edited first and last frames with a Qffusion checkpoint (or, in jump-cut mode, makes
    a transition between them), as `scripts/edit.py` does, into `out_dir/edited.mp4` and `edited.report.json`.

    Returns:
        `tuple[Path, Path]`: the video and its report.
    """
    import torch

    from ..qffusion import (
        detect_landmarks,
        edit_video,
        jump_cut_landmarks,
        read_qffusion_config,
        reference_arrays,
        smooth_jump_cut,
    )

    if options.jump_cut is None and not video_path:
        raise ZeroshotError("Give the video to edit, or choose jump-cut mode (a transition between the two frames).")
    if options.jump_cut is not None and video_path:
        raise ZeroshotError(
            "Jump-cut mode makes a transition from the start to the end frame alone; remove the video."
        )
    if options.steps < 1:
        raise ZeroshotError(f"Steps must be at least 1, got {options.steps}.")
    if options.fps <= 0:
        raise ZeroshotError(f"The frame rate must be positive, got {options.fps}.")
    if not checkpoint or not Path(checkpoint).expanduser().exists():
        raise ZeroshotError(f"The checkpoint {checkpoint!r} does not exist; give a Qffusion model folder or file.")
    config = read_qffusion_config(checkpoint)
    video = read_video(video_path) if video_path else None
    start, end = reference_arrays(
        load_image(_input_path(start_path, "the edited start frame")),
        load_image(_input_path(end_path, "the edited end frame")),
        video,
        condition=None if video is None else config.condition,
    )
    if video is not None:
        landmarks = detect_landmarks(config.condition, video.frames)
    else:
        landmarks = jump_cut_landmarks(config, start, end, options.jump_cut)

    pipe = models.qffusion(checkpoint)
    generator = torch.Generator(pipe.unet.device).manual_seed(options.seed)
    common = {"landmarks": landmarks, "num_inference_steps": options.steps, "generator": generator}
    if video is not None:
        result = edit_video(pipe, config, video, start, end, **common)
    else:
        result = smooth_jump_cut(pipe, config, start, end, options.jump_cut, options.fps, **common)
    out = Path(out_dir) / "edited.mp4"
    write_video(result.video.frames, out, result.video.fps)
    report = {
        "output": str(out),
        "checkpoint": checkpoint,
        "app_options": asdict(options),
        "checkpoint_config": json.loads(config.to_json()),
        "frames": len(result.video),
        "fps": result.video.fps,
        "crop": config.crop,
        "crop_boxes": result.crop_boxes.tolist(),
        "grids": len(result.schedule),
        "seconds": result.seconds,
    }
    return out, write_json(out.with_name("edited.report.json"), report)
