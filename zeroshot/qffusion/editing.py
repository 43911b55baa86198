"""Dual-frame video editing and jump-cut smoothing with a Qffusion checkpoint (what `scripts/edit.py` runs).

Editing: the conditions come from the input video, its edited first and last frames are the references, and
quadrant-grid propagation regenerates every frame in between; the output has the input's frame count, frame rate and
size, and its first and last frames are the given images. Jump-cut smoothing (paper Sec. 5.5): the conditions of two
frames are detected and interpolated linearly (as 3D points) over the frames in between.

The model works at a *working size*: the frames scaled so that their shorter side is the checkpoint's training
resolution (both sides rounded to what the UNet needs); the generated frames are scaled back to the input's size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..errors import ZeroshotError
from ..video import Video
from .checkpoint import QffusionConfig
from .conditions import detect_landmarks, render_conditions
from .pipeline import QffusionPipeline
from .schedule import PropagationSchedule

logger = logging.getLogger(__name__)


@dataclass
class EditResult:
    """What [`edit_video`] and [`smooth_jump_cut`] return.

    Args:
        video ([`~zeroshot.video.Video`]): the output frames (the input's size) and frame rate.
        conditions (`np.ndarray`): the condition images the model was driven with, at the working size.
        schedule ([`~zeroshot.qffusion.schedule.PropagationSchedule`]): the grids that generated the frames.
        seconds (`dict[str, float]`): wall time per stage.
    """

    video: Video
    conditions: np.ndarray
    schedule: PropagationSchedule
    seconds: dict[str, float] = field(default_factory=dict)


def working_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """`(width, height)` with the shorter side scaled to `resolution`, the aspect ratio kept, both sides rounded to
    the nearest multiple of `multiple` (at least `multiple`)."""
    scale = resolution / min(width, height)

    def rounded(side: int) -> int:
        return max(multiple, round(side * scale / multiple) * multiple)

    return rounded(width), rounded(height)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)


def _check_same_size(image: np.ndarray, name: str, size: tuple[int, int], against: str) -> None:
    height, width = image.shape[:2]
    if (width, height) != size:
        raise ZeroshotError(
            f"The {name} image is {width}x{height} but {against} {size[0]}x{size[1]}. The references must be frames "
            f"of the same size: edit them at that size (or resize them) and run again."
        )


def _resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.LANCZOS)) for f in frames])


def _generate(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    start: np.ndarray,
    end: np.ndarray,
    conditions: np.ndarray,
    output_size: tuple[int, int],
    **pipeline_kwargs: object,
) -> tuple[np.ndarray, PropagationSchedule]:
    result = pipe(start, end, conditions, prompt=config.prompt, **pipeline_kwargs)
    frames = _resize_frames(result.frames, *output_size)
    frames[0], frames[-1] = start, end
    return frames, result.schedule


def edit_video(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    video: Video,
    start_image: Image.Image | np.ndarray,
    end_image: Image.Image | np.ndarray,
    *,
    schedule: str = "qgp",
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    resolution: int | None = None,
    progress: bool = True,
) -> EditResult:
    """Regenerates `video` from its edited first and last frames, following the video's own motion.

    Args:
        pipe ([`QffusionPipeline`]): the loaded checkpoint.
        config ([`~zeroshot.qffusion.checkpoint.QffusionConfig`]): what it was trained on (conditions, resolution,
            prompt).
        video ([`~zeroshot.video.Video`]): the input video; it gives the conditions, frame count, rate and size.
        start_image (`PIL.Image.Image` or `np.ndarray`): the edited first frame, the video's size.
        end_image (`PIL.Image.Image` or `np.ndarray`): the edited last frame, the video's size.
        schedule (`str`, *optional*, defaults to `"qgp"`): `"qgp"` or `"naive"`.
        num_inference_steps (`int`, *optional*, defaults to 25): denoising steps per grid.
        generator (`torch.Generator`, *optional*): random source.
        batch_size (`int`, *optional*, defaults to 8): grids per UNet batch.
        resolution (`int`, *optional*): the working size's shorter side; defaults to the checkpoint's resolution.
        progress (`bool`, *optional*, defaults to `True`): progress bars.

    Returns:
        [`EditResult`]: frames `[N, H, W, 3]` as the input's, at its frame rate; frames 0 and N - 1 are the images.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the video has fewer than 2 frames, the images are not the video's size,
            or no frame shows what the conditions need.
    """
    if len(video) < 2:
        raise ZeroshotError(f"The video has {len(video)} frame; editing needs at least 2 (its first and last).")
    start, end = _as_array(start_image), _as_array(end_image)
    _check_same_size(start, "start", video.size, "the video's frames are")
    _check_same_size(end, "end", video.size, "the video's frames are")
    seconds = {}
    clock = time.perf_counter()
    landmarks = detect_landmarks(config.condition, video.frames, video=True, progress=progress, what="the video")
    size = working_size(*video.size, resolution or config.resolution, pipe.size_multiple)
    conditions = render_conditions(config.condition, landmarks, *size)
    seconds["conditions"] = time.perf_counter() - clock
    clock = time.perf_counter()
    pipe.set_progress_bar_config(disable=not progress, desc="qffusion")
    frames, used = _generate(
        pipe, config, start, end, conditions, video.size,
        schedule=schedule, num_inference_steps=num_inference_steps, generator=generator, batch_size=batch_size,
    )  # fmt: skip
    seconds["generation"] = time.perf_counter() - clock
    return EditResult(Video(frames, video.fps), conditions, used, seconds)


def smooth_jump_cut(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    start_image: Image.Image | np.ndarray,
    end_image: Image.Image | np.ndarray,
    num_frames: int,
    fps: float,
    *,
    schedule: str = "qgp",
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    resolution: int | None = None,
    progress: bool = True,
) -> EditResult:
    """A transition of `num_frames` frames (both ends included) from `start_image` to `end_image`, driven by their
    conditions interpolated linearly (paper Sec. 5.5, jump-cut smoothing).

    Args:
        pipe ([`QffusionPipeline`]): the loaded checkpoint.
        config ([`~zeroshot.qffusion.checkpoint.QffusionConfig`]): what it was trained on.
        start_image (`PIL.Image.Image` or `np.ndarray`): the frame before the cut.
        end_image (`PIL.Image.Image` or `np.ndarray`): the frame after the cut, the same size.
        num_frames (`int`): frames of the output, the two given ones included (at least 3).
        fps (`float`): frame rate of the output.
        schedule, num_inference_steps, generator, batch_size, resolution, progress: as for [`edit_video`].

    Returns:
        [`EditResult`]: `num_frames` frames of the images' size; the first and last are the given images.
    """
    if num_frames < 3:
        raise ZeroshotError(f"A jump-cut transition needs at least 3 frames (one new), got {num_frames}.")
    start, end = _as_array(start_image), _as_array(end_image)
    size = (start.shape[1], start.shape[0])
    _check_same_size(end, "end", size, "the start image is")
    seconds = {}
    clock = time.perf_counter()
    ends = [
        detect_landmarks(config.condition, image[None], video=False, progress=False, what=f"the {name} image")
        for image, name in ((start, "start"), (end, "end"))
    ]
    landmarks = ends[0].interpolate(ends[1], num_frames)
    work = working_size(*size, resolution or config.resolution, pipe.size_multiple)
    conditions = render_conditions(config.condition, landmarks, *work)
    seconds["conditions"] = time.perf_counter() - clock
    clock = time.perf_counter()
    pipe.set_progress_bar_config(disable=not progress, desc="qffusion")
    frames, used = _generate(
        pipe, config, start, end, conditions, size,
        schedule=schedule, num_inference_steps=num_inference_steps, generator=generator, batch_size=batch_size,
    )  # fmt: skip
    seconds["generation"] = time.perf_counter() - clock
    return EditResult(Video(frames, fps), conditions, used, seconds)
