"""Training data for QGA fine-tuning: videos cropped around the subject, their landmarks, and quadrant-grid samples.

Each video is prepared once (the paper: "cropped to keep the face at the center and resized to 256x256"):

1. its frames go through the landmark detector of the condition kind (MediaPipe face mesh and pose for `"face"`),
   frames without a detection filled in by interpolation;
2. the boxes that the checkpoint will see are found ([`~zeroshot.qffusion.crops.crop_boxes`], the same function
   editing uses): square boxes tracked around the subject (the face-mesh box for `"face"`), of side `crop_scale` times
   its median size, their centres smoothed over time; or the whole frames (`crop="full"`);
3. the frames are cropped, resized (`resolution` x `resolution` for subject crops, shorter side `resolution` for whole
   frames) and stored as a `uint8` `.npy` array (read back memory-mapped), with the landmarks in crop coordinates.

The cache folder of a video is named after a hash of its path, size, modification time and the preparation
settings; it is written under a temporary name and renamed when complete, so an interrupted run keeps every video it
finished and never reads a half-written one.

A sample is four frames `s, s + k, s + 2k, s + 3k` at interval `k` (fixed, the paper's 5, or every interval of a range,
each pair of start and interval one sample) and their condition images, drawn with the checkpoint's rendering at
`resolution`. Samples are a pure function of their index, so the data order alone (a seeded sampler) decides what a
run sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import staged_folder, write_json
from ..errors import ZeroshotError
from ..imaging import to_model_tensor
from ..video import VIDEO_SUFFIXES, read_video
from .conditions import (
    Landmarks,
    detect_landmarks,
    landmark_arrays,
    landmarks_from_arrays,
    render_conditions,
    rendering_version,
)
from .crops import crop_boxes, crop_frames, crop_landmarks, working_size

logger = logging.getLogger(__name__)

#: Bump when the preparation changes, so old caches are not reused.
_PREPARATION_VERSION = 3
#: Frame sides are multiples of this: the 2x2 grid of latents must survive the 8x downsampling of SD 1.5's UNet.
SIZE_MULTIPLE = 32


def find_videos(folder: str | Path) -> list[Path]:
    """The video files in `folder` and its subfolders, sorted.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the folder is missing or holds no videos.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ZeroshotError(f"The data folder {str(folder)!r} does not exist; pass a folder of videos with --data.")
    videos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ZeroshotError(f"No videos ({', '.join(VIDEO_SUFFIXES)}) in {str(folder)!r}.")
    return videos


@dataclass
class PreparedVideo:
    """One prepared training video.

    Args:
        source (`str`): the original file.
        frames (`np.ndarray`): `uint8` `[N, height, width, 3]` crops (`resolution` square for subject crops),
            memory-mapped.
        landmarks ([`~zeroshot.qffusion.conditions.PortraitLandmarks`] or [`~zeroshot.poses.PoseSequence`]): in
            crop coordinates.
        fps (`float`): the original frame rate.
    """

    source: str
    frames: np.ndarray
    landmarks: Landmarks
    fps: float

    def __len__(self) -> int:
        return len(self.frames)


def _cache_key(path: Path, settings: dict) -> str:
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **settings}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _load_prepared(folder: Path) -> PreparedVideo:
    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "landmarks.npz") as arrays:
        landmarks = landmarks_from_arrays(meta["condition"], dict(arrays))
    return PreparedVideo(
        source=meta["source"],
        frames=np.load(folder / "frames.npy", mmap_mode="r"),
        landmarks=landmarks,
        fps=meta["fps"],
    )


def prepare_video(
    path: str | Path,
    cache_dir: str | Path,
    *,
    resolution: int,
    crop: str = "subject",
    crop_scale: float = 2.5,
    crop_smoothing: float = 5.0,
    condition: str = "face",
    show_progress: bool = True,
) -> PreparedVideo:
    """Crops, resizes and annotates one video for training, or reads it back from `cache_dir` (see the module).

    Args:
        path (`str` or `Path`): the video.
        cache_dir (`str` or `Path`): where prepared videos are kept.
        resolution (`int`): side of the square training frames (shorter side of whole frames), in pixels.
        crop (`str`, *optional*, defaults to `"subject"`): `"subject"` crops or `"full"` frames.
        crop_scale (`float`, *optional*, defaults to 2.5): crop side over the subject's size.
        crop_smoothing (`float`, *optional*, defaults to 5.0): smoothing of the crops' centres, in frames.
        condition (`str`, *optional*, defaults to `"face"`): the condition kind whose landmarks are detected.
        show_progress (`bool`, *optional*, defaults to `True`): progress bars.

    Returns:
        [`PreparedVideo`]: the frames (memory-mapped) and landmarks.
    """
    path = Path(path)
    settings = {
        "resolution": resolution,
        "crop": crop,
        "crop_scale": crop_scale,
        "crop_smoothing": crop_smoothing,
        "condition": condition,
        "version": _PREPARATION_VERSION,
    }
    cache_dir = Path(cache_dir)
    folder = cache_dir / f"{path.stem}-{_cache_key(path, settings)}"
    if (folder / "meta.json").is_file():
        return _load_prepared(folder)
    video = read_video(path)
    what = f"the video {str(path)!r}"
    landmarks = detect_landmarks(condition, video.frames, video=True, show_progress=show_progress, what=what)
    boxes = crop_boxes(landmarks, video.size, crop=crop, crop_scale=crop_scale, crop_smoothing=crop_smoothing)
    size = working_size(int(boxes[0, 2] - boxes[0, 0]), int(boxes[0, 3] - boxes[0, 1]), resolution, SIZE_MULTIPLE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with staged_folder(folder) as staging:
        stored = np.lib.format.open_memmap(
            staging / "frames.npy", mode="w+", dtype=np.uint8, shape=(len(video), size[1], size[0], 3)
        )
        for start in range(0, len(video), 64):  # a few frames at a time: a long video need not fit in memory twice
            chunk = slice(start, start + 64)
            stored[chunk] = crop_frames(video.frames[chunk], boxes[chunk], size)
        stored.flush()
        del stored
        np.savez(staging / "landmarks.npz", **landmark_arrays(crop_landmarks(landmarks, boxes, video.size)))
        record = {
            "source": str(path),
            "fps": video.fps,
            "frame_size": list(video.size),
            "crop_boxes": boxes.tolist(),
            "rendering": rendering_version(condition),
            **settings,
        }
        write_json(staging / "meta.json", record)
    logger.info("Prepared %s: %d frames, %s crops of %s", path, len(video), crop, size)
    return _load_prepared(folder)


class QuadrantGridDataset(torch.utils.data.Dataset):
    """Four frames at a fixed (or random) interval and their condition images, from prepared videos.

    Items are dicts with `"frames"` and `"conditions"`, both `[4, 3, height, width]` float tensors (the video's
    crops) in [-1, 1] (frames a, b, c, d in order).

    Args:
        videos (`Sequence[PreparedVideo]`): prepared videos.
        interval (`tuple[int, int]`): the interval, or a range of intervals (both ends included), each its own item.
        condition (`str`, *optional*, defaults to `"face"`): the condition kind to draw.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no video is long enough for four frames at the largest interval.
    """

    def __init__(self, videos: Sequence[PreparedVideo], interval: tuple[int, int], condition: str = "face"):
        self.videos = list(videos)
        self.interval = interval
        self.condition = condition
        self.items = [
            (v, start, step)
            for v, video in enumerate(self.videos)
            for step in range(interval[0], interval[1] + 1)
            for start in range(len(video) - 3 * step)
        ]
        if not self.items:
            span = 3 * interval[0]
            longest = max((len(video) for video in self.videos), default=0)
            raise ZeroshotError(
                f"No video is long enough for four frames {interval[0]} apart ({span + 1} frames); the longest has "
                f"{longest}. Use a smaller --interval or longer videos."
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video_index, start, step = self.items[index]
        video = self.videos[video_index]
        frames = [start + step * i for i in range(4)]
        height, width = video.frames.shape[1:3]
        images = np.asarray(video.frames[frames])
        conditions = render_conditions(self.condition, video.landmarks[frames], width, height)
        return {"frames": to_model_tensor(images), "conditions": to_model_tensor(conditions)}
