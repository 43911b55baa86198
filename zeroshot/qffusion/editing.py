"""Dual-frame video editing and jump-cut smoothing with a Qffusion checkpoint (what `scripts/edit.py` runs).

Editing: the conditions come from the input video, its edited first and last frames are the references, and
quadrant-grid propagation regenerates every frame in between; the output has the input's frame count, frame rate and
size, and its first and last frames are the given images. Jump-cut smoothing (paper Sec. 5.5): the conditions of two
frames are detected and interpolated linearly (as 3D points) over the frames in between.

The model sees what it was trained on ([`~zeroshot.qffusion.crops`], the checkpoint's `crop`): square boxes tracked
around the subject, with the training's `crop_scale` and smoothing, found on the landmarks (the references are cropped
with the boxes of the first and last frames), or the whole frames. The crops are edited at the checkpoint's resolution
(the *working size*; shorter side for whole frames, both sides rounded to what the UNet needs), then resized and pasted
back into the full frames with a feathered blend: outside the boxes, every pixel is the input video's (for a jump cut,
which has no video, a cross-fade of the two images). The output has the input's size, whatever it is (odd sizes
included), and its first and last frames are the given images.

Everything that needs no model can run before the models load: [`reference_arrays`] checks the edited frames against
the video (and that they show the subject), and the landmarks ([`~zeroshot.qffusion.conditions.detect_landmarks`],
[`jump_cut_landmarks`]) can be given to [`edit_video`] and [`smooth_jump_cut`] already detected.
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
from .conditions import Landmarks, detect_landmarks, interpolate_landmarks, render_conditions
from .crops import crop_boxes, crop_frames, crop_landmarks, paste_back, working_size
from .pipeline import QffusionPipeline
from .schedule import PropagationSchedule

logger = logging.getLogger(__name__)


@dataclass
class EditResult:
    """What [`edit_video`] and [`smooth_jump_cut`] return.

    Args:
        video ([`~zeroshot.video.Video`]): the output frames (the input's size) and frame rate.
        conditions (`np.ndarray`): the condition images the model was driven with, at the working size.
        crop_boxes (`np.ndarray`): `[frames, 4]` boxes `(left, top, right, bottom)` that were edited and pasted back.
        schedule ([`~zeroshot.qffusion.schedule.PropagationSchedule`]): the grids that generated the frames.
        seconds (`dict[str, float]`): wall time per stage (`"landmarks"` only when they were detected here).
    """

    video: Video
    conditions: np.ndarray
    crop_boxes: np.ndarray
    schedule: PropagationSchedule
    seconds: dict[str, float] = field(default_factory=dict)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)


def _check_transition_length(num_frames: int) -> None:
    if num_frames < 3:
        raise ZeroshotError(f"A jump-cut transition needs at least 3 frames (one new), got {num_frames}.")


def reference_arrays(
    start_image: Image.Image | np.ndarray,
    end_image: Image.Image | np.ndarray,
    video: Video | None = None,
    *,
    condition: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The edited first and last frames as `uint8` RGB arrays, checked to be of one size: the frames' of `video`
    (which must have at least the two frames they replace) when given, else each other's; and, when `condition` is
    given, to show what that condition kind needs (a face, or a person).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the video has fewer than 2 frames, the sizes differ (the message gives
        both and the fix), or a reference shows no face (no person).
    """
    start, end = _as_array(start_image), _as_array(end_image)
    if video is None:
        size, against = (start.shape[1], start.shape[0]), "the start image is"
    else:
        if len(video) < 2:
            raise ZeroshotError(f"The video has {len(video)} frame; editing needs at least 2 (its first and last).")
        size, against = video.size, "the video's frames are"
    for image, name in ((start, "start"), (end, "end")):
        height, width = image.shape[:2]
        if (width, height) != tuple(size):
            raise ZeroshotError(
                f"The {name} image is {width}x{height} but {against} {size[0]}x{size[1]}. The references must be "
                f"frames of the same size: edit them at that size (or resize them) and run again."
            )
    if condition is not None:
        for image, name in ((start, "start"), (end, "end")):
            detect_landmarks(condition, image[None], video=False, show_progress=False, what=f"the {name} image")
    return start, end


def jump_cut_landmarks(config: QffusionConfig, start: np.ndarray, end: np.ndarray, num_frames: int) -> Landmarks:
    """The landmarks of a jump-cut transition: those of `start` and `end` (detected in each image alone),
    interpolated linearly over `num_frames` frames (both ends included; paper Sec. 5.5).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: fewer than 3 frames, or an image without what the conditions need.
    """
    _check_transition_length(num_frames)
    ends = [
        detect_landmarks(config.condition, image[None], video=False, show_progress=False, what=f"the {name} image")
        for image, name in ((start, "start"), (end, "end"))
    ]
    return interpolate_landmarks(ends[0], ends[1], num_frames)


def _cross_fade(start: np.ndarray, end: np.ndarray, num_frames: int) -> np.ndarray:
    """`num_frames` frames going linearly from `start` to `end`: what lies around a jump cut's crops."""
    weights = np.linspace(0.0, 1.0, num_frames).reshape(-1, 1, 1, 1)
    return np.rint((1 - weights) * start + weights * end).astype(np.uint8)


def _regenerate(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    start: np.ndarray,
    end: np.ndarray,
    landmarks: Landmarks,
    background: np.ndarray,
    fps: float,
    seconds: dict[str, float],
    *,
    resolution: int | None,
    **pipeline_kwargs: object,
) -> EditResult:
    """What editing and jump-cut smoothing share: the checkpoint's crops of every frame, their conditions drawn at the
    working size, every crop between the references generated and pasted back into `background` (the frames around
    the crops), and the references put back as given."""
    size = (start.shape[1], start.shape[0])
    clock = time.perf_counter()
    boxes = crop_boxes(
        landmarks, size, crop=config.crop, crop_scale=config.crop_scale, crop_smoothing=config.crop_smoothing
    )
    box_size = (int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1]))
    work = working_size(*box_size, resolution or config.resolution, pipe.size_multiple)
    conditions = render_conditions(config.condition, crop_landmarks(landmarks, boxes, size), *work)
    references = crop_frames(np.stack([start, end]), boxes[[0, -1]], work)
    seconds["conditions"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result = pipe(references[0], references[1], conditions, prompt=config.prompt, **pipeline_kwargs)
    frames = paste_back(background, result.frames, boxes)
    frames[0], frames[-1] = start, end
    seconds["generation"] = time.perf_counter() - clock
    return EditResult(Video(frames, fps), conditions, boxes, result.schedule, seconds)


def edit_video(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    video: Video,
    start_image: Image.Image | np.ndarray,
    end_image: Image.Image | np.ndarray,
    *,
    landmarks: Landmarks | None = None,
    schedule: str = "qgp",
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    resolution: int | None = None,
    show_progress: bool = True,
) -> EditResult:
    """Regenerates `video` from its edited first and last frames, following the video's own motion.

    Args:
        pipe ([`QffusionPipeline`]): the loaded checkpoint.
        config ([`~zeroshot.qffusion.checkpoint.QffusionConfig`]): what it was trained on (conditions, resolution,
            prompt).
        video ([`~zeroshot.video.Video`]): the input video; it gives the conditions, frame count, rate and size.
        start_image (`PIL.Image.Image` or `np.ndarray`): the edited first frame, the video's size, showing what the
            conditions need (a face, or a person).
        end_image (`PIL.Image.Image` or `np.ndarray`): the edited last frame, likewise.
        landmarks ([`~zeroshot.qffusion.conditions.PortraitLandmarks`] or [`~zeroshot.poses.PoseSequence`],
            *optional*): the video's landmarks of the checkpoint's condition kind, when already detected.
        schedule (`str`, *optional*, defaults to `"qgp"`): `"qgp"` or `"naive"`.
        num_inference_steps (`int`, *optional*, defaults to 25): denoising steps per grid.
        generator (`torch.Generator`, *optional*): random source.
        batch_size (`int`, *optional*, defaults to 8): grids per UNet batch.
        resolution (`int`, *optional*): the working size's (shorter) side; defaults to the checkpoint's resolution.
        show_progress (`bool`, *optional*, defaults to `True`): progress bars.

    Returns:
        [`EditResult`]: frames `[N, H, W, 3]` as the input's, at its frame rate; frames 0 and N - 1 are the images.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the video has fewer than 2 frames, the images are not the video's size,
            or an image or no frame shows what the conditions need.

    Example:

    ```py
    >>> components, config = load_qffusion_components("runs/qga/final")
    >>> pipe = QffusionPipeline.from_components(components)
    >>> result = edit_video(pipe, config, read_video("in.mp4"), load_image("start.png"), load_image("end.png"))
    >>> write_video(result.video.frames, "out.mp4", result.video.fps)
    ```
    """
    start, end = reference_arrays(start_image, end_image, video, condition=config.condition)
    seconds = {}
    if landmarks is None:
        clock = time.perf_counter()
        landmarks = detect_landmarks(config.condition, video.frames, video=True, show_progress=show_progress)
        seconds["landmarks"] = time.perf_counter() - clock
    elif len(landmarks) != len(video):
        raise ValueError(f"Got landmarks of {len(landmarks)} frames for a video of {len(video)}.")
    return _regenerate(
        pipe, config, start, end, landmarks, video.frames, video.fps, seconds, resolution=resolution,
        schedule=schedule, num_inference_steps=num_inference_steps, generator=generator, batch_size=batch_size,
        show_progress=show_progress,
    )  # fmt: skip


def smooth_jump_cut(
    pipe: QffusionPipeline,
    config: QffusionConfig,
    start_image: Image.Image | np.ndarray,
    end_image: Image.Image | np.ndarray,
    num_frames: int,
    fps: float,
    *,
    landmarks: Landmarks | None = None,
    schedule: str = "qgp",
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    resolution: int | None = None,
    show_progress: bool = True,
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
        landmarks (*optional*): the transition's landmarks from [`jump_cut_landmarks`], when already made.
        schedule, num_inference_steps, generator, batch_size, resolution, show_progress: as for [`edit_video`].

    Returns:
        [`EditResult`]: `num_frames` frames of the images' size; the first and last are the given images.
    """
    _check_transition_length(num_frames)
    start, end = reference_arrays(start_image, end_image)
    seconds = {}
    if landmarks is None:
        clock = time.perf_counter()
        landmarks = jump_cut_landmarks(config, start, end, num_frames)
        seconds["landmarks"] = time.perf_counter() - clock
    elif len(landmarks) != num_frames:
        raise ValueError(f"Got landmarks of {len(landmarks)} frames for a transition of {num_frames}.")
    return _regenerate(
        pipe, config, start, end, landmarks, _cross_fade(start, end, num_frames), fps, seconds, resolution=resolution,
        schedule=schedule, num_inference_steps=num_inference_steps, generator=generator, batch_size=batch_size,
        show_progress=show_progress,
    )  # fmt: skip
