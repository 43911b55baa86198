"""Reading and writing images, videos and frame folders, with clear errors and no half-written outputs.

Frames are `uint8` RGB arrays of shape `[frames, height, width, 3]` throughout. Videos go through the ffmpeg binary
that `imageio-ffmpeg` ships (no system ffmpeg needed); GIFs and PNG frames through Pillow. Every writer writes to a
hidden temporary name beside the target and renames it into place only once complete, so an interrupted run never
leaves a file or folder that looks finished.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import staged_file, staged_folder
from .errors import ZeroshotError
from .outputs import check_output

logger = logging.getLogger(__name__)

#: Suffixes read as videos by [`read_video`].
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")
#: Suffixes read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Video:
    """Decoded frames and their frame rate.

    Args:
        frames (`np.ndarray`): `uint8` RGB frames, `[frames, height, width, 3]`.
        fps (`float`): frames per second.
    """

    frames: np.ndarray
    fps: float

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """`(width, height)` of the frames."""
        return self.frames.shape[2], self.frames.shape[1]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Opens an image file as 8-bit RGB, turned upright as its EXIF orientation says (see [`to_rgb`] for 16-bit,
    grayscale, palette, CMYK and transparent images).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the path is missing or a folder, or is not an image Pillow can read.
    """
    path = Path(path)
    if path.is_dir():
        raise ZeroshotError(f"{str(path)!r} is a folder; give an image file (PNG, JPEG, ...).")
    if not path.is_file():
        raise ZeroshotError(f"Image {str(path)!r} does not exist.")
    try:
        with Image.open(path) as image:
            # Phones store photos sideways with an EXIF orientation tag; show them the right way up.
            return to_rgb(ImageOps.exif_transpose(image))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ZeroshotError(f"{str(path)!r} is not an image that can be read (PNG, JPEG, ...): {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any mode as 8-bit RGB, its values read as their mode means them.

    - 16-bit grayscale (`I;16`, and `I` as Pillow opens 16-bit PNGs): 0..65535 scaled to 0..255 (Pillow's own
      conversion clips at 255, which blows such images out);
    - float grayscale (`F`): 0..1 scaled to 0..255;
    - grayscale, 1-bit, palette, CMYK, YCbCr, LAB, HSV: Pillow's conversions (CMYK as `(255 - C)(255 - K) / 255`);
    - transparency (an alpha channel, or a palette or grayscale image's transparent colour): composited over white,
      the backdrop of a cut-out character.
    """
    if image.mode.startswith("I") or image.mode == "F":
        scale = 1 / 257 if image.mode.startswith("I") else 255.0
        values = np.asarray(image, dtype=np.float64) * scale
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        return Image.fromarray(np.round(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8))
    return image.convert("RGB")


@dataclass(frozen=True)
class Fit:
    """How [`fit_image`] maps an image of `source_size` onto a canvas of `size` (both `(width, height)`): scale by
    `scale` to `scaled_size`, then crop the box whose top-left corner is `(left, top)`. A pixel coordinate `p`
    becomes `p * scale - (left, top)`."""

    source_size: tuple[int, int]
    scale: float
    scaled_size: tuple[int, int]
    left: int
    top: int
    size: tuple[int, int]

    @classmethod
    def between(cls, source_size: tuple[int, int], width: int, height: int) -> Fit:
        """The fit of an image of `source_size` `(width, height)` onto `width` x `height`: cover, centre-crop."""
        scale = max(width / source_size[0], height / source_size[1])
        scaled = (max(width, round(source_size[0] * scale)), max(height, round(source_size[1] * scale)))
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        return cls(tuple(source_size), scale, scaled, left, top, (width, height))


def fit_image(image: Image.Image, width: int, height: int, resample: int = Image.LANCZOS) -> Image.Image:
    """Scales `image` to cover `width` x `height` and crops the centre: no distortion, no borders (see [`Fit`])."""
    fit = Fit.between(image.size, width, height)
    scaled = image.resize(fit.scaled_size, resample)
    return scaled.crop((fit.left, fit.top, fit.left + width, fit.top + height))


def natural_key(path: Path) -> list[int | str]:
    """Sort key that orders `frame_2` before `frame_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder (by suffix, see `IMAGE_SUFFIXES`), in natural order of their names."""
    return sorted((f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)


def read_image_folder(folder: str | os.PathLike, what: str = "images") -> np.ndarray:
    """Reads the images of a folder (natural order of names), all of one size, as `uint8` RGB `[N, H, W, 3]`.

    Args:
        folder (`str` or `os.PathLike`): the folder.
        what (`str`, *optional*, defaults to `"images"`): what the images are, for error messages.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no images, an unreadable image, or images of different sizes.
    """
    files = image_files(folder)
    if not files:
        raise ZeroshotError(f"Folder {str(folder)!r} holds no {what} ({', '.join(IMAGE_SUFFIXES)}).")
    frames: list[np.ndarray] = []
    for file in files:
        frame = np.asarray(load_image(file))
        if frames and frame.shape != frames[0].shape:
            raise ZeroshotError(
                f"{str(file)!r} is {frame.shape[1]}x{frame.shape[0]}, unlike the first of the {what} "
                f"({frames[0].shape[1]}x{frames[0].shape[0]}); all must have one size."
            )
        frames.append(frame)
    return np.stack(frames)


def read_frames(path: str | os.PathLike, fps: float = 8.0) -> Video:
    """Reads what [`write_video`] writes: a video file, a GIF, or a folder of image frames (at `fps`)."""
    if Path(path).is_dir():
        return Video(read_image_folder(path, "frames"), fps)
    return read_video(path)


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> Video:
    """Decodes a video file (any format ffmpeg reads) or an animated GIF.

    Args:
        path (`str` or `os.PathLike`): the video file.
        max_frames (`int`, *optional*): stop after this many frames.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the file is missing, cannot be decoded, or holds no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise ZeroshotError(f"Video {str(path)!r} does not exist.")
    if path.suffix.lower() == ".gif":
        video = _read_gif(path, max_frames)
    else:
        video = _read_with_ffmpeg(path, max_frames)
    if len(video) == 0:
        raise ZeroshotError(f"Video {str(path)!r} holds no frames.")
    return video


def _read_gif(path: Path, max_frames: int | None) -> Video:
    try:
        with Image.open(path) as image:
            frames, durations = [], []
            for index in range(getattr(image, "n_frames", 1)):
                if max_frames is not None and index >= max_frames:
                    break
                image.seek(index)
                frames.append(np.asarray(image.convert("RGB")))
                durations.append(image.info.get("duration", 100) or 100)
    except (UnidentifiedImageError, OSError) as error:
        raise ZeroshotError(f"Cannot read {str(path)!r} as a GIF: {error}") from error
    fps = 1000.0 / float(np.mean(durations)) if durations else 10.0
    return Video(np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps)


def _read_with_ffmpeg(path: Path, max_frames: int | None) -> Video:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ZeroshotError(f"Cannot read {str(path)!r} as a video ({first_line}). Is it a video file?") from error
    width, height = meta["size"]
    frames = []
    try:
        for raw in reader:
            frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except RuntimeError as error:
        raise ZeroshotError(f"Decoding {str(path)!r} failed after {len(frames)} frames: {error}") from error
    finally:
        reader.close()
    stacked = np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
    return Video(stacked, float(meta.get("fps") or 25.0))


def output_kind(path: str | os.PathLike) -> str:
    """What [`write_video`] writes for `path`: `"mp4"`, `"gif"` or `"frames"` (a folder of PNGs, for a path without
    a suffix).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the suffix is not one of `.mp4`, `.gif` or none.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    if suffix == "":
        return "frames"
    raise ZeroshotError(
        f"Cannot write {str(path)!r}: the output is chosen by the path, so use a .mp4 or .gif file or a folder path "
        f"without a suffix (for PNG frames)."
    )


def check_output_path(path: str | os.PathLike, *, num_frames: int = 0, size: tuple[int, int] = (0, 0)) -> Path:
    """Checks, before any work starts, that [`write_video`] will be able to write `path`.

    Args:
        path (`str` or `os.PathLike`): `.mp4`, `.gif`, or a folder path without a suffix; missing parent folders are
            created when the video is written.
        num_frames (`int`, *optional*), size (`tuple[int, int]`, *optional*): the frames to come and their
            `(width, height)`, when known, for a check of the free disk space.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the suffix is unknown, a folder stands where a file is meant, a frame
        folder is not empty, the folder cannot be written, or the disk is too full.
    """
    kind = output_kind(path)
    raw = num_frames * size[0] * size[1] * 3
    expected = {"frames": raw, "gif": raw // 2, "mp4": raw // 20}[kind]  # PNG at worst raw; H.264 far smaller
    return check_output(path, what="output", folder=kind == "frames", expected_bytes=expected)


def write_video(frames: np.ndarray | Sequence[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Writes frames as an H.264 `.mp4`, a looping `.gif`, or a folder of `frame_00000.png` files, by the path.

    The output appears at `path` only once complete (written under a temporary name, then renamed).

    Args:
        frames (`np.ndarray` or sequence of arrays): `uint8` RGB frames `[frames, height, width, 3]`.
        path (`str` or `os.PathLike`): `.mp4`, `.gif`, or a folder path without a suffix.
        fps (`float`): frames per second.

    Returns:
        `Path`: the written path.
    """
    path = check_output_path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"Expected uint8 frames [frames, height, width, 3], got {frames.dtype} {frames.shape}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    kind = output_kind(path)
    if kind == "frames":
        with staged_folder(path) as staging:
            for index, frame in enumerate(frames):
                Image.fromarray(frame).save(staging / f"frame_{index:05d}.png")
    else:
        with staged_file(path) as staging:
            _write_with_ffmpeg(frames, staging, fps, kind)
    return path


def _write_with_ffmpeg(frames: np.ndarray, path: Path, fps: float, kind: str) -> None:
    """H.264 for `.mp4`; for `.gif`, a palette made for each frame (no dithering) and every frame kept (Pillow's
    writer merges identical consecutive frames, which would change the frame count)."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    if kind == "mp4":
        if height % 2 or width % 2:
            # H.264 in 4:2:0 needs even sizes: rather than lose a finished video, repeat the last row or column.
            logger.warning("Frames of %dx%d: the .mp4 gets a row or column copied from the edge.", width, height)
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            height, width = frames.shape[1:3]
        options = {"codec": "libx264", "quality": 8, "output_params": ["-y"]}
    else:
        palette = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1:dither=none"
        options = {"codec": "gif", "pix_fmt_out": "pal8", "output_params": ["-y", "-vf", palette, "-loop", "0"]}
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1, **options)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
