"""The face refinement pass: a second PoseAnimate pass on face crops, through the same PACM and generation stages.

1. Boxes: every frame's face box from its pose (see [`~zeroshot.face.boxes.face_boxes`]), smoothed over time; frames
   without a face, or with one too small, are left as they are.
2. Crops: the source image's face and every generated frame's face, each cropped with its frame's box and resized to
   `face_size`; their poses (face keypoints where present) and character masks moved into the crops.
3. PACM on the source's crop with its pose (direct mode by default): it is frame 0 of the pass.
4. SDEdit: each generated crop is re-noised to the timestep `strength` of the way up the schedule, with the noise of
   the source crop's own inversion at that timestep (so frame 0 starts exactly on its trajectory, and every frame
   shares one noise: no random numbers, no flicker from them). They are then denoised with dual-consistency
   attention anchored on the source's crop, mask-guided decoupling with the crops' masks and the ControlNet on the
   crops' poses, in lock-step windows (any window gives the same frames).
5. Paste-back: each refined crop goes back into its frame through a feathered mask (the face hull, or an ellipse),
   its colour matched at the seam; every pixel outside the mask keeps its value.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..components import ModelComponents
from ..generation import generate_latents
from ..imaging import decode_latents, encode_latents, to_model_tensor
from ..masks import resize_mask
from ..pacm import DDIMSchedule, EvaluationCounter, PACMResult, PACMSettings, run_pacm
from ..pacm.cache import cache_key
from ..pacm.denoiser import ControlledDenoiser
from ..poses import PoseSequence
from ..prompts import PromptEmbeddings
from .boxes import FaceBoxes, check_source_face, face_boxes, face_extent
from .crops import crop_image, crop_poses, paste_face, paste_mask, uncrop_image
from .settings import FaceRefinement

#: The UNet stages of the pass, as its report names them: PACM's two on the source crop, then the crops' generation.
FACE_STAGES: tuple[str, ...] = ("ddim_inversion", "source", "generation")


@dataclass
class FaceRefinementResult:
    """What [`refine_faces`] returns.

    Args:
        frames (`np.ndarray`): `uint8` `[frames, H, W, 3]`, the frames with their faces refined.
        boxes ([`~zeroshot.face.boxes.FaceBoxes`]): every frame's face box.
        refined_frames (`list[int]`): the frames whose faces were refined (0, the source, first).
        crops (`np.ndarray`): `uint8` `[len(refined_frames), face_size, face_size, 3]` the refined crops, before
            paste-back (empty at strength 0).
        latents (`torch.Tensor`): `[len(refined_frames), 4, face_size / 8, face_size / 8]` their latents (empty at
            strength 0).
        skipped_frames (`dict[str, list[int]]`): frames left as they were: `"no_face"`, `"too_small"`.
        stages (`dict[str, dict]`): per stage of `FACE_STAGES`: UNet forward and backward evaluations, seconds.
        seconds (`float`): wall time of the whole pass.
    """

    frames: np.ndarray
    boxes: FaceBoxes
    refined_frames: list[int]
    crops: np.ndarray
    latents: torch.Tensor
    skipped_frames: dict[str, list[int]]
    stages: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def stage_stats(self) -> dict[str, int | float | bool]:
        """The pass as one stage of the pipeline's report: evaluations summed over `stages`, the pass's seconds."""
        forward = sum(stage["forward"] for stage in self.stages.values())
        backward = sum(stage["backward"] for stage in self.stages.values())
        cached = bool(self.stages) and all(self.stages[name].get("cached", False) for name in FACE_STAGES[:2])
        return {"forward": forward, "backward": backward, "seconds": self.seconds, "cached": cached}

    def report(self, settings: FaceRefinement, num_inference_steps: int) -> dict:
        """The pass's part of `report.json`: settings, the boxes of every frame, what was skipped, per-stage cost."""
        return {
            "settings": dataclasses.asdict(settings),
            "steps": settings.num_steps(num_inference_steps),
            "boxes": self.boxes.to_list(),
            "refined_frames": self.refined_frames,
            "skipped_frames": self.skipped_frames,
            "stages": self.stages,
            "seconds": self.seconds,
        }


def refine_faces(
    components: ModelComponents,
    frames: np.ndarray,
    source_image: np.ndarray,
    poses: PoseSequence,
    prompt: PromptEmbeddings,
    settings: FaceRefinement,
    pacm_settings: PACMSettings,
    *,
    masks: Sequence[np.ndarray] | None = None,
    lambdas: tuple[float, float, float] = (0.7, 0.15, 0.15),
    decoupling: str | None = "exclusive",
    window: int = 16,
    cache_dir: str | os.PathLike | None = None,
    cache_identity: str | None = None,
    show_progress: bool = True,
) -> FaceRefinementResult:
    """Refines the faces of an animation with a second PoseAnimate pass on face crops (see the module's docstring).

    Args:
        components ([`~zeroshot.components.ModelComponents`]): the models, with the pose ControlNet.
        frames (`np.ndarray`): `uint8` `[frames, H, W, 3]` the generated frames, frame 0 the source's reconstruction.
        source_image (`np.ndarray`): `uint8` `[H, W, 3]` the source image on the output canvas.
        poses ([`~zeroshot.poses.PoseSequence`]): the pose of every frame on the canvas, frame 0 the source's.
        prompt ([`~zeroshot.prompts.PromptEmbeddings`]): the prompt's embeddings (its subject is not used: the crops'
            masks are given).
        settings ([`~zeroshot.face.FaceRefinement`]): strength, crop size, the source crop's PACM mode.
        pacm_settings ([`~zeroshot.pacm.PACMSettings`]): the main pass's: steps, guidance, ControlNet scale (the
            mode is `settings.inversion`).
        masks (`Sequence[np.ndarray]`, *optional*): every frame's character mask, frame 0 the source's: boolean or
            0/1 `[h, w]` arrays at any resolution of the canvas's aspect (the pipeline's PACM masks are at latent
            size), resized to the canvas; needed with `decoupling`.
        lambdas (`tuple[float, float, float]`, *optional*, defaults to `(0.7, 0.15, 0.15)`): dual-consistency weights.
        decoupling (`str`, *optional*, defaults to `"exclusive"`): mask-guided decoupling, or `None`.
        window (`int`, *optional*, defaults to 16): crops per UNet call; any value gives the same frames.
        cache_dir (`str` or `os.PathLike`, *optional*): caches PACM's results on the source crop.
        cache_identity (`str`, *optional*): the main pass's [`~zeroshot.pacm.input_identity`]; the crop's cache key
            adds the crop's pixels to it.
        show_progress (`bool`, *optional*, defaults to `True`): show progress bars.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the source (frame 0) shows no face, or one smaller than
            `settings.min_face_size` pixels.
    """
    started = time.perf_counter()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [frames, height, width, 3], got {frames.dtype} {frames.shape}.")
    height, width = frames.shape[1:3]
    if len(poses) != len(frames) or poses.size != (width, height):
        raise ValueError(
            f"poses must give each of the {len(frames)} frames a pose on the {width}x{height} canvas; got "
            f"{len(poses)} on {poses.size[0]}x{poses.size[1]}."
        )
    if source_image.shape != frames.shape[1:]:
        raise ValueError(f"source_image must be {list(frames.shape[1:])}, got {list(source_image.shape)}.")
    if decoupling is not None and (masks is None or len(masks) != len(frames)):
        raise ValueError(f"Decoupling needs the character mask of each of the {len(frames)} frames.")
    check_source_face(poses[0], settings.min_face_size)
    boxes = face_boxes(poses, settings.smoothing)
    no_face = [int(k) for k in np.flatnonzero(~boxes.visible)]
    too_small = [k for k in range(len(frames)) if boxes.visible[k] and face_extent(boxes, k) < settings.min_face_size]
    chosen = [k for k in range(len(frames)) if k not in no_face and k not in too_small]
    skipped = {"no_face": no_face, "too_small": too_small}
    size = settings.face_size
    num_steps = settings.num_steps(pacm_settings.num_inference_steps)
    if num_steps == 0:
        crops, latents = np.zeros((0, size, size, 3), np.uint8), torch.zeros(0, 4, size // 8, size // 8)
        seconds = time.perf_counter() - started
        return FaceRefinementResult(frames.copy(), boxes, chosen, crops, latents, skipped, {}, seconds)

    # Crops of the source (frame 0 of the pass) and of the generated frames, their poses and masks.
    crops = np.stack(
        [crop_image(source_image, boxes, 0, size), *(crop_image(frames[k], boxes, k, size) for k in chosen[1:])]
    )
    pose_images = crop_poses(poses, boxes, chosen, size).render()
    device = components.unet.device
    latents = encode_latents(components.vae, to_model_tensor(crops), chunk_size=window)
    latent_size = latents.shape[-2:]
    crop_masks = None
    if decoupling is not None:
        crop_masks = torch.from_numpy(
            np.stack([_crop_mask(masks[k], boxes, k, size, latent_size) for k in chosen])
        ).float()

    # PACM on the source's crop: its inversion trajectory and per-step conditioning.
    crop_settings = dataclasses.replace(pacm_settings, mode=settings.inversion)
    identity = None if cache_identity is None else cache_key("face-crop", [cache_identity, torch.from_numpy(crops[0])])
    pacm = run_pacm(
        components,
        latents[:1],
        dataclasses.replace(prompt, subject_token_indices=()),
        pose_images[0],
        pose_images[:0],
        crop_settings,
        cache_dir=cache_dir,
        cache_identity=identity,
        show_progress=show_progress,
    )

    # SDEdit: the last `num_steps` steps, from the crops re-noised with the source crop's own noise at that timestep.
    schedule = DDIMSchedule.from_scheduler(components.scheduler, pacm_settings.num_inference_steps)
    first = len(schedule) - num_steps
    initial = _renoised(latents.to(device), pacm.latents[num_steps].to(device), float(schedule.alphas[first]))
    tail = DDIMSchedule(schedule.timesteps[first:], schedule.alphas[first:], schedule.alphas_prev[first:])
    tail_pacm = _from_step(pacm, first, len(chosen), crop_masks)
    counter = EvaluationCounter(stages=("generation",))
    denoiser = ControlledDenoiser(components, counter, pacm_settings.controlnet_conditioning_scale)
    with counter.stage("generation"):
        refined = generate_latents(
            denoiser,
            tail,
            tail_pacm,
            pose_images,
            None if crop_masks is None else crop_masks[0],
            lambdas=lambdas,
            decoupling=decoupling,
            window=window,
            show_progress=show_progress,
            initial_latents=initial,
        )
    refined_crops = decode_latents(components.vae, refined, window, show_progress=show_progress)

    # Paste-back.
    result = frames.copy()
    for position, frame in enumerate(chosen):
        on_canvas = uncrop_image(refined_crops[position], boxes, frame, (width, height))
        result[frame] = paste_face(frames[frame], on_canvas, paste_mask(poses, boxes, frame))
    stages = {**{name: pacm.stats[name].to_dict() for name in FACE_STAGES[:2]}, **counter.to_dict()}
    seconds = time.perf_counter() - started
    return FaceRefinementResult(result, boxes, chosen, refined_crops, refined.cpu(), skipped, stages, seconds)


def _renoised(latents: torch.Tensor, source_start: torch.Tensor, alpha: float) -> torch.Tensor:
    """SDEdit's start, without random numbers: every crop's latent (`latents[0]` the source crop's) at the cumulative
    alpha `alpha`, with the noise that brings the source crop's latent to `source_start`, its inversion at that
    timestep. The source crop starts exactly at `source_start`."""
    noise = (source_start - alpha**0.5 * latents[0]) / (1.0 - alpha) ** 0.5
    initial = alpha**0.5 * latents + (1.0 - alpha) ** 0.5 * noise
    initial[0] = source_start
    return initial


def _from_step(pacm: PACMResult, first: int, num_crops: int, crop_masks: torch.Tensor | None) -> PACMResult:
    """The source crop's PACM result from sampling step `first` on, for `num_crops` crops (the source's first): the
    source crop's embeddings (and direct mode's offsets) for every crop, since each starts from its own frame, and
    each crop's character mask (`crop_masks`, `[num_crops, h, w]`) at every step."""
    num_steps = len(pacm.timesteps) - first
    offsets = pacm.source_offsets
    return dataclasses.replace(
        pacm,
        timesteps=pacm.timesteps[first:],
        source_embeddings=pacm.source_embeddings[first:],
        frame_embeddings=None,
        source_offsets=None if offsets is None else offsets[first:],
        attention_maps=None,
        masks=None if crop_masks is None else crop_masks[1:, None].expand(-1, num_steps, -1, -1),
        num_frames=num_crops - 1,
    )


def _crop_mask(mask: np.ndarray, boxes: FaceBoxes, frame: int, size: int, latent_size: tuple[int, int]) -> np.ndarray:
    """A character mask (any resolution) resized to the canvas, cropped with frame `frame`'s box, at latent size."""
    width, height = boxes.canvas
    canvas = cv2.resize(np.asarray(mask, np.float32), (width, height), interpolation=cv2.INTER_NEAREST) > 0.5
    return resize_mask(crop_image(canvas.astype(np.uint8), boxes, frame, size, nearest=True), *latent_size)
