"""The character mask of the source image (PoseAnimate's MGDM M_0), and masks resized to attention resolutions.

Four sources, all giving a boolean `[height, width]` array, True on the character:

- `"selfie"` (default): mediapipe's selfie segmentation (offline, about 5 ms on a CPU), made for people;
- `"pose"`: the segmentation mask of mediapipe's pose landmarker (offline), which only exists when a pose is found;
- `"sam"`: Segment Anything prompted with the pose keypoints and their box (the `sam` extra, a local checkpoint);
- a mask file of the user's ([`load_mask`]): white (or opaque) on the character.

Example:

```py
>>> from zeroshot.masks import character_mask, resize_mask
>>> from zeroshot.testing import astronaut
>>> mask = character_mask(astronaut())  # bool [512, 512]
>>> resize_mask(mask, 32, 32).shape  # for a 32x32 attention map
(32, 32)
```
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ZeroshotError
from .poses.detectors import check_rgb_image, import_mediapipe_solution, quiet_native_stderr
from .poses.extract import detect_source_pose
from .poses.sequence import PoseSequence

#: Methods accepted by [`character_mask`].
MASK_METHODS = ("selfie", "pose", "sam")
#: Segment Anything model types, found in the names of its checkpoints (`sam_vit_h_4b8939.pth`, ...).
SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
#: How much the keypoints' box is widened on each side, as a fraction of its size, to prompt SAM: keypoints are
#: joint centres, and the body reaches past them (top of the head, hands, feet).
SAM_BOX_MARGIN = 0.15


def character_mask(
    image: Image.Image | np.ndarray,
    method: str = "selfie",
    *,
    threshold: float = 0.5,
    pose: PoseSequence | None = None,
    sam_checkpoint: str | os.PathLike | None = None,
    sam_model_type: str | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Segments the character of the source image.

    Args:
        image (`PIL.Image.Image` or `np.ndarray`): the source image (RGB).
        method (`str`, *optional*, defaults to `"selfie"`): `"selfie"`, `"pose"` or `"sam"`.
        threshold (`float`, *optional*, defaults to 0.5): the probability above which a pixel is the character
            (`"selfie"` and `"pose"`).
        pose ([`~zeroshot.poses.PoseSequence`], *optional*): the source pose that prompts SAM; detected with mediapipe
            when not given.
        sam_checkpoint (`str` or `os.PathLike`, *optional*): local Segment Anything checkpoint (needed by `"sam"`).
        sam_model_type (`str`, *optional*): `"vit_h"`, `"vit_l"` or `"vit_b"`; read from the checkpoint's name when
            not given.
        device (`str`, *optional*, defaults to `"cpu"`): where SAM runs.

    Returns:
        `np.ndarray`: boolean `[height, width]`, True on the character.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no character was found (give a mask file instead), or SAM lacks its
        package or checkpoint.
    """
    if method not in MASK_METHODS:
        raise ValueError(f"Unknown mask method {method!r}; choose one of {MASK_METHODS}.")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be within (0, 1), got {threshold}.")
    pixels = check_rgb_image(np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image))
    if method == "sam":
        mask = _sam_mask(pixels, pose, sam_checkpoint, sam_model_type, device)
    else:
        probability = _mediapipe_probability(pixels, method)
        mask = np.zeros(pixels.shape[:2], bool) if probability is None else probability > threshold
    if not np.any(mask):
        raise ZeroshotError(
            f"The {method} segmentation found no character in the source image: give a mask file instead (white on "
            f"the character, black elsewhere), or try another mask method."
        )
    return mask


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Reads a user's mask file: white (or, for an image with transparency, opaque) on the character.

    Args:
        path (`str` or `os.PathLike`): the mask image.
        size (`tuple[int, int]`): `(width, height)` of the source image. A mask of another size but the same shape is
            resized to it (nearest neighbour).

    Returns:
        `np.ndarray`: boolean `[height, width]`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the file is missing or unreadable, its shape differs from the image's, or
        it marks nothing.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # as zeroshot.video.load_image turns the photo
            if image.mode in ("RGBA", "LA", "PA") and image.getchannel("A").getextrema()[0] < 255:
                values = np.asarray(image.getchannel("A"))
            else:
                values = np.asarray(image.convert("L"))
    except FileNotFoundError as error:
        raise ZeroshotError(f"Mask file {str(path)!r} does not exist.") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ZeroshotError(f"Cannot read mask {str(path)!r} as an image: {error}") from error
    width, height = size
    if values.shape != (height, width):
        mask_height, mask_width = values.shape
        if abs(mask_width / mask_height - width / height) > 0.01 * width / height:
            raise ZeroshotError(
                f"Mask {str(path)!r} is {mask_width}x{mask_height}, which does not have the shape of the "
                f"{width}x{height} source image: give a mask of the same size."
            )
        values = cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST)
    mask = values > 127
    if not mask.any():
        raise ZeroshotError(f"Mask {str(path)!r} marks nothing: paint the character white on black.")
    return mask


def resize_mask(mask: np.ndarray, height: int, width: int, *, threshold: float | None = 0.5) -> np.ndarray:
    """Resizes a mask to an attention resolution by area: each output cell gets the fraction of its pixels on the
    character.

    Args:
        mask (`np.ndarray`): boolean or float `[height, width]` mask.
        height (`int`): output height (the attention map's, e.g. the latent height divided by 1, 2, 4 or 8).
        width (`int`): output width.
        threshold (`float`, *optional*, defaults to 0.5): cells whose fraction exceeds it are True; None returns the
            fractions (`float32` in `[0, 1]`).

    Returns:
        `np.ndarray`: boolean (or `float32`) `[height, width]`.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [height, width], got shape {mask.shape}.")
    fractions = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return fractions if threshold is None else fractions > threshold


def _mediapipe_probability(image: np.ndarray, method: str) -> np.ndarray | None:
    """The person probability of each pixel (None when the pose landmarker finds no person)."""
    if method == "selfie":
        module = import_mediapipe_solution("selfie_segmentation")
        with quiet_native_stderr():
            with module.SelfieSegmentation(model_selection=0) as segmenter:
                return segmenter.process(image).segmentation_mask
    module = import_mediapipe_solution("pose")
    with quiet_native_stderr():
        with module.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as landmarker:
            result = landmarker.process(image)
    return None if result.pose_landmarks is None else result.segmentation_mask


def _sam_mask(
    image: np.ndarray,
    pose: PoseSequence | None,
    checkpoint: str | os.PathLike | None,
    model_type: str | None,
    device: str,
) -> np.ndarray:
    if checkpoint is None:
        raise ZeroshotError("SAM masks need a local Segment Anything checkpoint (never downloaded): give its path.")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ZeroshotError(f"SAM checkpoint {str(checkpoint)!r} does not exist.")
    model_type = model_type or next((name for name in SAM_MODEL_TYPES if name in checkpoint.name), None)
    if model_type not in SAM_MODEL_TYPES:
        raise ZeroshotError(
            f"Cannot tell which SAM model {str(checkpoint)!r} holds from its name: give the model type, one of "
            f"{', '.join(SAM_MODEL_TYPES)}."
        )
    try:
        import torch
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError as error:
        raise ZeroshotError(
            f"SAM masks need segment-anything and torchvision, which are not installed ({error}): "
            f'pip install -e ".[sam]"'
        ) from error
    height, width = image.shape[:2]
    if pose is None:
        pose = detect_source_pose(image)
    points = pose.pixels()[0][pose.visible[0]] * np.array([width, height]) / np.asarray(pose.size)
    low, high = points.min(axis=0), points.max(axis=0)
    margin = SAM_BOX_MARGIN * (high - low)
    box = np.concatenate([np.maximum(low - margin, 0), np.minimum(high + margin, [width - 1, height - 1])])

    model = sam_model_registry[model_type](checkpoint=None)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    predictor = SamPredictor(model.to(device).eval())
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=points, point_labels=np.ones(len(points)), box=box, multimask_output=True
    )
    return masks[int(np.argmax(scores))].astype(bool)
