"""`PoseAnimatePipeline`: one still image and a pose sequence in, a video of that character doing the poses out.

PoseAnimate (Zhu et al.), training-free on Stable Diffusion 1.5 and the OpenPose ControlNet:

1. poses: the source pose is detected in the image; PATA aligns the target poses to it and inserts transition frames;
2. mask: the source's character mask (MGDM's `M_0`);
3. encoding: the source latent and the prompt embeddings;
4. PACM: DDIM inversion, pose-aware inversion of the source, per-frame pose-aware embeddings and character masks
   (cached on disk, resumable); the fast modes skip the per-frame stage;
5. generation: every frame from `Z_T`, frame 0 reconstructing the source, dual-consistency attention with
   mask-guided decoupling, in lock-step windows of bounded memory; in the fast modes each UNet call makes its frames'
   masks from the subject's cross-attention in its down and mid blocks, for its up blocks;
6. decoding, in chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from hooks import DualConsistencyAttnProcessor

from .components import ModelComponents
from .defaults import MAX_OUTPUT_SIDE
from .errors import ZeroshotError
from .face import FaceRefinement, check_source_face
from .face.refinement import refine_faces
from .generation import generate_latents
from .imaging import decode_latents, encode_latents, to_model_tensor
from .inputs import as_image, as_poses, as_weights, check_int, check_text
from .masks import MASK_METHODS, character_mask, resize_mask
from .memory import PeakMemory
from .metrics import psnr
from .pacm import STAGES as PACM_STAGES
from .pacm import (
    DDIMSchedule,
    EvaluationCounter,
    PACMSettings,
    input_identity,
    run_pacm,
    weights_fingerprint,
)
from .pacm.denoiser import ControlledDenoiser
from .poses import PoseSequence, RenderedPoses, detect_source_pose, pose_alignment_transition
from .poses.pata import MAX_TRANSITION_FRAMES
from .prompts import encode_prompt
from .video import Fit, fit_image

#: The prompt used when none is given; its subject word is "person".
DEFAULT_PROMPT = "a photo of a person"
#: Words taken as the subject (whose cross-attention gives the character masks) when none is named.
SUBJECT_WORDS = (
    "person", "man", "woman", "boy", "girl", "child", "kid", "lady", "guy", "people", "character", "dancer",
    "astronaut", "firefighter", "player", "athlete", "figure", "robot", "doll",
)  # fmt: skip


#: The stages that evaluate the UNet: PACM's three, then generation.
UNET_STAGES = (*PACM_STAGES, "generation")


@dataclass
class PoseAnimateOutput:
    """What [`PoseAnimatePipeline`] returns.

    Args:
        frames (`np.ndarray` or `torch.Tensor`): `uint8` RGB frames `[frames, height, width, 3]` (`output_type="np"`)
            or their latents `[frames, 4, height / 8, width / 8]` (`output_type="latent"`). Frame 0 reconstructs the
            source; frames `1 .. num_transition` are the transition; the rest follow the target poses.
        poses ([`~zeroshot.poses.PoseSequence`] or `None`): the pose of every frame after alignment and transition,
            on the output canvas (`None` when rendered pose images were given).
        pose_images (`np.ndarray`): the `uint8` ControlNet pose images of every frame.
        num_transition (`int`): transition frames inserted by PATA.
        report (`dict`): settings, per-stage wall time and UNet evaluations, peak memory and frame-0 reconstruction
            error, as `scripts/animate.py` writes it to `report.json`; with face refinement, its boxes and skipped
            frames under `"face_refinement"`.
    """

    frames: np.ndarray | torch.Tensor
    poses: PoseSequence | None
    pose_images: np.ndarray
    num_transition: int
    report: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike, fps: float, details: dict) -> dict:
        """Writes the animation as `scripts/animate.py` and the app do: the video at `path` (`.mp4`, `.gif` or a
        folder of PNG frames), then `NAME.poses.json` (the pose of every frame, when the poses have keypoints), then
        `NAME.report.json` last, so that a report beside an output means the output is complete.

        Args:
            path (`str` or `os.PathLike`): where the video goes; missing parent folders are created.
            fps (`float`): its frame rate.
            details (`dict`): what the caller adds to the report (command or options, models, inputs).

        Returns:
            `dict`: the report as written.
        """
        from .atomic import write_json
        from .poses import write_openpose_json
        from .video import write_video

        path = Path(path)
        poses_path = path.with_name(f"{path.stem}.poses.json")
        write_video(self.frames, path, fps)
        if self.poses is not None:
            write_openpose_json(self.poses, poses_path)
        report = {
            "output": str(path),
            "poses_file": str(poses_path) if self.poses is not None else None,
            "fps": fps,
            **details,
            **self.report,
        }
        write_json(path.with_name(f"{path.stem}.report.json"), report)
        return report


@dataclass
class SourceInputs:
    """The source image on the output canvas, with its pose and character mask.

    Args:
        image (`PIL.Image.Image`): the source image scaled and centre-cropped to the output size.
        pose ([`~zeroshot.poses.PoseSequence`]): its pose (one frame) on the output canvas.
        mask (`np.ndarray`, *optional*): its boolean character mask `[height, width]`, when one is needed.
    """

    image: Image.Image
    pose: PoseSequence
    mask: np.ndarray | None


def prepare_source(
    image: Image.Image | np.ndarray | str | os.PathLike,
    width: int,
    height: int,
    *,
    pose: PoseSequence | None = None,
    mask: np.ndarray | str | None = "selfie",
    sam_checkpoint: str | os.PathLike | None = None,
) -> SourceInputs:
    """Fits the source image to the output canvas (scale to cover, centre-crop) with its pose and mask.

    Detection and segmentation run on the full-resolution image, whose results are then fitted like the image:
    mediapipe finds people far more reliably at full size than at a small output size.

    Args:
        image (`PIL.Image.Image`, `np.ndarray` or path): the source image, any size (see
            [`~zeroshot.inputs.as_image`]).
        width (`int`), height (`int`): the output size.
        pose ([`~zeroshot.poses.PoseSequence`], *optional*): the image's pose (one frame) on the image's own canvas;
            detected with mediapipe when not given.
        mask (`np.ndarray` or `str`, *optional*, defaults to `"selfie"`): a boolean mask of the image's size, or a
            method of [`~zeroshot.masks.character_mask`] (`"selfie"`, `"pose"`, `"sam"`), or `None` for no mask.
        sam_checkpoint (`str` or `os.PathLike`, *optional*): the Segment Anything checkpoint, for `mask="sam"`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: no person in the image, a pose or mask that does not fit the image.
    """
    image = as_image(image)
    fit = Fit.between(image.size, width, height)
    if pose is None:
        pose = detect_source_pose(image)
    elif len(pose) != 1 or pose.size != image.size:
        raise ZeroshotError(
            f"The source pose must be one frame on the {image.width}x{image.height} image's canvas, got {len(pose)} "
            f"frame(s) on {pose.size[0]}x{pose.size[1]}."
        )
    if isinstance(mask, str):
        mask = character_mask(image, mask, pose=pose, sam_checkpoint=sam_checkpoint)
    elif mask is not None and mask.shape != (image.height, image.width):
        raise ZeroshotError(
            f"The character mask is {mask.shape[1]}x{mask.shape[0]}; the image is {image.width}x{image.height}."
        )
    fitted_mask = None
    if mask is not None:
        fitted_mask = np.asarray(fit_image(Image.fromarray(mask.astype(bool)), width, height, Image.NEAREST))
    return SourceInputs(fit_image(image, width, height), pose.fitted(fit), fitted_mask)


def find_subject(prompt: str) -> str | None:
    """The first word of `prompt` that names a character (see `SUBJECT_WORDS`), or `None`."""
    words = [word.strip(".,;:!?\"'()").lower() for word in prompt.split()]
    return next((word for word in words if word in SUBJECT_WORDS), None)


class PoseAnimatePipeline(DiffusionPipeline):
    """PoseAnimate: zero-shot character animation from one image and a pose sequence (no training).

    Args:
        vae (`AutoencoderKL`): Stable Diffusion 1.5's autoencoder.
        text_encoder (`CLIPTextModel`): its text encoder.
        tokenizer (`CLIPTokenizer`): its tokenizer.
        unet (`UNet2DConditionModel`): its UNet (4 input channels).
        controlnet (`ControlNetModel`): the OpenPose ControlNet.
        scheduler (`DDIMScheduler`): DDIM, which inversion needs.

    Example:

    ```py
    >>> from zeroshot import PoseAnimatePipeline
    >>> from zeroshot.poses import load_poses
    >>> from zeroshot.video import load_image, write_video
    >>> pipe = PoseAnimatePipeline.from_pretrained(device="cuda")  # SD-1.5 and the OpenPose ControlNet v1.1
    >>> result = pipe(load_image("astronaut.png"), load_poses("wave.json"), prompt="a photo of an astronaut")
    >>> write_video(result.frames, "wave.mp4", fps=8)
    ```
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel,
        scheduler: DDIMScheduler,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_components(cls, components: ModelComponents) -> PoseAnimatePipeline:
        """A pipeline over loaded [`~zeroshot.components.ModelComponents`] (which must include the ControlNet)."""
        if components.controlnet is None:
            raise ZeroshotError("PoseAnimate needs the OpenPose ControlNet; load the models with a --controlnet.")
        return cls(**components.as_dict())

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, controlnet: str | None = None, **loader_options: object
    ) -> PoseAnimatePipeline:
        """Loads Stable Diffusion 1.5 and the OpenPose ControlNet with [`~zeroshot.loading.load_components`].

        Args:
            model (`str`, *optional*): hub id or local folder of the base model (default: Stable Diffusion 1.5).
            controlnet (`str`, *optional*): hub id or local folder of the ControlNet (default: OpenPose v1.1).
            loader_options: `device`, `dtype` and `offline`, as [`~zeroshot.loading.load_components`] takes them.
        """
        from .defaults import DEFAULT_CONTROLNET, DEFAULT_MODEL
        from .loading import load_components

        components = load_components(model or DEFAULT_MODEL, controlnet or DEFAULT_CONTROLNET, **loader_options)
        return cls.from_components(components)

    def components_view(self) -> ModelComponents:
        """The pipeline's models as [`~zeroshot.components.ModelComponents`]."""
        return ModelComponents(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            controlnet=self.controlnet,
        )

    # ---- stages --------------------------------------------------------------------------------------------------

    def prepare_poses(
        self, source_pose: PoseSequence, poses: PoseSequence | RenderedPoses, transition_frames: int | None
    ) -> tuple[PoseSequence | None, np.ndarray, int]:
        """The pose of every frame on the source pose's canvas (PATA), and their rendered ControlNet images.

        Returns:
            `(poses or None for rendered input, uint8 pose images [frames, H, W, 3], number of transition frames)`.
        """
        width, height = source_pose.size
        if isinstance(poses, RenderedPoses):
            if transition_frames:
                raise ZeroshotError(
                    "The poses are rendered images without keypoints, so they cannot be aligned to the source or get "
                    "transition frames; give keypoints (OpenPose JSON or a video), or --transition-frames 0."
                )
            frames = [fit_image(Image.fromarray(frame), width, height, Image.BILINEAR) for frame in poses.frames]
            return None, np.stack([source_pose.render()[0], *map(np.asarray, frames)]), 0
        result = pose_alignment_transition(source_pose, poses, transition_frames=transition_frames)
        return result.poses, result.poses.render(), result.num_transition

    # ---- the call ------------------------------------------------------------------------------------------------

    @property
    def interrupt(self) -> bool:
        """Set it to `True` (from `callback_on_step_end`) to stop generation after the current step."""
        return getattr(self, "_interrupt", False)

    @interrupt.setter
    def interrupt(self, value: bool) -> None:
        self._interrupt = value

    def __call__(
        self,
        image: Image.Image | np.ndarray | str | os.PathLike,
        poses: PoseSequence | RenderedPoses | str | os.PathLike,
        prompt: str = DEFAULT_PROMPT,
        *,
        subject: str | None = None,
        negative_prompt: str = "",
        height: int = 512,
        width: int = 512,
        pacm_settings: PACMSettings | None = None,
        lambdas: tuple[float, float, float] = (0.7, 0.15, 0.15),
        decoupling: str | None = "exclusive",
        transition_frames: int | None = None,
        window: int = 16,
        source: SourceInputs | None = None,
        mask_method: str = "selfie",
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool = True,
        callback_on_step_end: Callable[[PoseAnimatePipeline, int, int, dict], dict | None] | None = None,
        accelerate_state: object | None = None,
        output_type: str = "np",
        face_refinement: FaceRefinement | None = None,
        separate_mask_pass: bool = False,
    ) -> PoseAnimateOutput | None:
        """Animates the character of `image` with `poses`.

        Args:
            image (`PIL.Image.Image`, `np.ndarray` or path): the source image (see [`~zeroshot.inputs.as_image`]);
                it is scaled and centre-cropped to `width` x `height`.
            poses ([`~zeroshot.poses.PoseSequence`], [`~zeroshot.poses.RenderedPoses`] or path): the target poses,
                or a path that [`~zeroshot.poses.load_poses`] reads. Keypoints are aligned to the source pose (PATA);
                rendered pose images are used as they are.
            prompt (`str`, *optional*, defaults to `DEFAULT_PROMPT`): describes the source image.
            subject (`str`, *optional*): the word of `prompt` naming the character, whose cross-attention gives each
                frame's character mask; by default the first of `SUBJECT_WORDS` found in the prompt.
            negative_prompt (`str`, *optional*, defaults to `""`): the unconditional prompt.
            height (`int`, *optional*, defaults to 512), width (`int`, *optional*, defaults to 512): output size,
                multiples of 8.
            pacm_settings ([`~zeroshot.pacm.PACMSettings`], *optional*): inversion mode, DDIM steps, guidance and
                the optimiser; defaults to the paper's (50 steps, guidance 7.5, pose-aware inversion).
            lambdas (`tuple[float, float, float]`, *optional*, defaults to `(0.7, 0.15, 0.15)`): dual-consistency
                weights of frame 0, the previous frame and the frame itself.
            decoupling (`str`, *optional*, defaults to `"exclusive"`): mask-guided decoupling, `"exclusive"` or
                `"literal"` (the paper's masked keys and values); `None` turns it off.
            transition_frames (`int`, *optional*): frames of transition from the source pose to the first target
                pose; by default as many as keep every joint's step under 5% of the canvas.
            window (`int`, *optional*, defaults to 16): frames per UNet call in generation and decoding; any value
                gives the same frames (to float precision), smaller ones use less memory (PACM's own chunking is
                `pacm_settings.frame_chunk_size`).
            source ([`SourceInputs`], *optional*): the source prepared by [`prepare_source`] (to give the pose or
                mask yourself, or to check the image before loading models); by default prepared from `image` with
                `mask_method`.
            mask_method (`str`, *optional*, defaults to `"selfie"`): how the source mask is segmented when `source`
                is not given.
            cache_dir (`str` or `os.PathLike`, *optional*): where PACM's results are cached; paper mode's per-frame
                embeddings then stay in the cache files, read a window and a step at a time, so host memory does not
                grow with the number of frames.
            show_progress (`bool`, *optional*, defaults to `True`): progress bars for every stage.
            callback_on_step_end (`Callable`, *optional*): called as diffusers does after every generation step,
                `callback_on_step_end(pipe, step, timestep, {"latents": latents})`; it may return a dict with new
                `"latents"`, and may set `pipe.interrupt = True` to stop after the step.
            accelerate_state (`accelerate.PartialState`, *optional*): under `accelerate launch`, PACM's per-frame
                stage is shared by the processes; the main process then generates, the others return `None`.
            output_type (`str`, *optional*, defaults to `"np"`): `"np"` for `uint8` frames, `"latent"` for latents.
            face_refinement ([`~zeroshot.face.FaceRefinement`], *optional*): refine every frame's face with a second
                pass on face crops (see [`~zeroshot.face.refinement.refine_faces`]); needs keypoint poses and
                `output_type="np"`.
            separate_mask_pass (`bool`, *optional*, defaults to `False`): in the fast modes, record the character
                masks in PACM's frame stage, a sampling pass of every frame without dual-consistency attention run
                only for them, instead of in generation's own UNet calls (which saves that pass: 2F of the 4F + 5
                evaluations per step in direct mode). Paper mode always takes them from its frame stage.

        Returns:
            [`PoseAnimateOutput`], or `None` on processes other than the main one.

        Raises:
            `TypeError` or `ValueError`: an argument of the wrong type or out of range (the message names it).
            [`~zeroshot.errors.ZeroshotError`]: inputs that cannot be animated (no person, unreadable files, ...).
        """
        lambdas = self._check_inputs(
            prompt=prompt,
            negative_prompt=negative_prompt,
            subject=subject,
            height=height,
            width=width,
            pacm_settings=pacm_settings,
            lambdas=lambdas,
            decoupling=decoupling,
            transition_frames=transition_frames,
            window=window,
            source=source,
            mask_method=mask_method,
            cache_dir=cache_dir,
            output_type=output_type,
        )
        settings = pacm_settings or PACMSettings()
        if face_refinement is not None:
            if not isinstance(face_refinement, FaceRefinement):
                raise TypeError(
                    f"face_refinement must be a FaceRefinement or None, got {type(face_refinement).__name__}."
                )
            if output_type != "np":
                raise ValueError("face_refinement works on decoded frames: use output_type='np'.")
        if source is None:
            image = as_image(image)
        poses = as_poses(poses)
        subject = self._subject(prompt, subject, decoupling)
        self.interrupt = False
        mask_origin = mask_method if source is None else "given with the source"
        device = self.unet.device
        counter = EvaluationCounter(stages=("poses", "mask", "encode", "generation", "decode"))
        with PeakMemory(device) as memory:
            with counter.stage("poses"):
                if source is None:
                    source = prepare_source(image, width, height, mask=mask_method if decoupling else None)
                elif source.image.size != (width, height):
                    raise ZeroshotError(f"The prepared source is {source.image.size}, the output {width}x{height}.")
                frame_poses, pose_images, num_transition = self.prepare_poses(source.pose, poses, transition_frames)
                if face_refinement is not None:
                    if frame_poses is None:
                        raise ZeroshotError(
                            "Face refinement finds each frame's face in its keypoints, and rendered pose images have "
                            "none: give keypoints (OpenPose JSON or a video), or leave out --refine-face."
                        )
                    check_source_face(source.pose, face_refinement.min_face_size)
            mask_latent = None
            if decoupling is not None:
                with counter.stage("mask"):
                    if source.mask is None:
                        raise ValueError("Decoupling needs the source's mask: prepare the source with a mask.")
                    h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
                    mask_latent = torch.from_numpy(resize_mask(source.mask, h, w)).float()
            with counter.stage("encode"):
                pixels = np.asarray(source.image)
                latent = encode_latents(self.vae, to_model_tensor(pixels))
                embeddings = encode_prompt(
                    self.components_view(), prompt, subject=subject, negative_prompt=negative_prompt
                )
                encoders = weights_fingerprint(self.vae, self.text_encoder)
                identity = input_identity(torch.from_numpy(pixels.copy()), prompt, negative_prompt, encoders)
            # The fast modes' frame stage only records masks: without the subject's tokens PACM skips it.
            masks_from_pacm = settings.mode == "paper" or separate_mask_pass
            pacm = run_pacm(
                self.components_view(),
                latent,
                embeddings if masks_from_pacm else replace(embeddings, subject_token_indices=()),
                pose_images[0],
                pose_images[1:],
                settings,
                cache_dir=cache_dir,
                cache_identity=identity,
                show_progress=show_progress,
                state=accelerate_state,
                frames_in_memory=cache_dir is None,
            )
            if accelerate_state is not None and not accelerate_state.is_main_process:
                return None
            denoiser = ControlledDenoiser(self.components_view(), counter, settings.controlnet_conditioning_scale)
            schedule = DDIMSchedule.from_scheduler(self.scheduler, settings.num_inference_steps)

            def on_step(step: int, timestep: int, latents: torch.Tensor) -> torch.Tensor | None:
                if callback_on_step_end is None:
                    return None
                returned = callback_on_step_end(self, step, timestep, {"latents": latents})
                return (returned or {}).get("latents")

            used_masks: list[torch.Tensor] = []  # the masks of the last step, for the face pass

            def keep_masks(step: int, masks: torch.Tensor) -> None:
                used_masks[:] = [masks]

            with counter.stage("generation"):
                latents = generate_latents(
                    denoiser,
                    schedule,
                    pacm,
                    pose_images,
                    mask_latent,
                    lambdas=lambdas,
                    decoupling=decoupling,
                    window=window,
                    show_progress=show_progress,
                    on_step=on_step,
                    interrupted=lambda: self.interrupt,
                    subject_token_indices=embeddings.subject_token_indices,
                    on_masks=keep_masks,
                )
            if not torch.isfinite(latents).all():
                raise ZeroshotError(
                    "Generation produced non-finite latents; with --dtype fp16 try bf16 or fp32, or lower --guidance."
                )
            frames: np.ndarray | torch.Tensor = latents
            error = float((latents[0] - pacm.latents[0]).norm() / pacm.latents[0].norm())
            reconstruction = {"frame0_latent_relative_error": error}
            if output_type == "np":
                with counter.stage("decode"):
                    frames = decode_latents(self.vae, latents, window, show_progress=show_progress)
                    round_trip = decode_latents(self.vae, pacm.latents[:1])[0]
                reconstruction["frame0_psnr_vs_vae_round_trip"] = psnr(frames[0], round_trip)
                reconstruction["frame0_psnr_vs_source"] = psnr(frames[0], pixels)
            if face_refinement is not None:
                masks = None if decoupling is None else [source.mask, *used_masks[0][1:].cpu().numpy()]
                faces = refine_faces(
                    self.components_view(),
                    frames,
                    pixels,
                    frame_poses,
                    embeddings,
                    face_refinement,
                    settings,
                    masks=masks,
                    lambdas=lambdas,
                    decoupling=decoupling,
                    window=window,
                    cache_dir=cache_dir,
                    cache_identity=identity,
                    show_progress=show_progress,
                )
                frames = faces.frames
        stages = {**counter.to_dict(), **pacm.stats_dict()}
        if face_refinement is not None:
            stages["face_refinement"] = faces.stage_stats()
        if output_type != "np":
            del stages["decode"]
        if decoupling is None:
            del stages["mask"]
        report = _report(
            settings={
                "prompt": prompt,
                "subject": subject,
                "negative_prompt": negative_prompt,
                "size": [width, height],
                "lambdas": list(lambdas),
                "decoupling": decoupling,
                "window": window,
                "mask": mask_origin if decoupling is not None else None,
                "separate_mask_pass": separate_mask_pass,
                "pacm": asdict(settings),
            },
            stages=stages,
            num_frames=len(pose_images),
            num_transition=num_transition,
            peak_memory=memory.peak_bytes,
            device=device,
            reconstruction=reconstruction,
            interrupted=self.interrupt,
        )
        if face_refinement is not None:
            report["face_refinement"] = faces.report(face_refinement, settings.num_inference_steps)
        return PoseAnimateOutput(frames, frame_poses, pose_images, num_transition, report)

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _check_inputs(
        self,
        *,
        prompt: str,
        negative_prompt: str,
        subject: str | None,
        height: int,
        width: int,
        pacm_settings: PACMSettings | None,
        lambdas: tuple[float, float, float],
        decoupling: str | None,
        transition_frames: int | None,
        window: int,
        source: SourceInputs | None,
        mask_method: str,
        cache_dir: str | os.PathLike | None,
        output_type: str,
    ) -> tuple[float, float, float]:
        """Raises `TypeError` or `ValueError` naming a misused argument, or [`~zeroshot.errors.ZeroshotError`] for
        settings that cannot work; returns `lambdas` as a tuple of floats."""
        check_text(prompt, "prompt")
        check_text(negative_prompt, "negative_prompt")
        check_text(subject, "subject", optional=True)
        lambdas = as_weights(lambdas, "lambdas", 3)
        if pacm_settings is not None and not isinstance(pacm_settings, PACMSettings):
            raise TypeError(f"pacm_settings must be a PACMSettings, got {type(pacm_settings).__name__}.")
        if source is not None and not isinstance(source, SourceInputs):
            raise TypeError(f"source must be SourceInputs (from prepare_source), got {type(source).__name__}.")
        if transition_frames is not None:
            check_int(transition_frames, "transition_frames", 0, MAX_TRANSITION_FRAMES)
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}.")
        check_int(height, "height", 1, MAX_OUTPUT_SIDE)
        check_int(width, "width", 1, MAX_OUTPUT_SIDE)
        check_int(window, "window", 1)
        if height % 8 or width % 8:
            raise ZeroshotError(f"The size must be positive multiples of 8, got {width}x{height}.")
        try:  # the processor validates its own settings; the user hears of them before any work starts
            DualConsistencyAttnProcessor(lambdas=lambdas, decoupling=decoupling or "exclusive")
        except ValueError as error:
            raise ZeroshotError(str(error)) from error
        if mask_method not in MASK_METHODS:
            raise ZeroshotError(f"The mask method must be one of {MASK_METHODS}, got {mask_method!r}.")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}.")
        return lambdas

    @staticmethod
    def _subject(prompt: str, subject: str | None, decoupling: str | None) -> str | None:
        """The subject word whose masks decoupling uses; `None` without decoupling, which needs no masks (the
        fast modes then skip PACM's frame stage, which only records them)."""
        if decoupling is None:
            return None
        if subject is not None:
            return subject
        found = find_subject(prompt)
        if found is None:
            raise ZeroshotError(
                f"Mask-guided decoupling needs the word of the prompt that names the character, and none of the "
                f"usual ones is in {prompt!r}: give it (--subject WORD), or turn decoupling off (--no-decoupling)."
            )
        return found


def _report(
    *,
    settings: dict,
    stages: dict[str, dict],
    num_frames: int,
    num_transition: int,
    peak_memory: int,
    device: torch.device,
    reconstruction: dict,
    interrupted: bool,
) -> dict:
    """The run's report: settings, per-stage time and UNet evaluations (in all and per frame), peak memory."""
    forward = sum(stage["forward"] for stage in stages.values())
    backward = sum(stage["backward"] for stage in stages.values())
    per_stage = {
        name: {"forward": stages[name]["forward"] / num_frames, "backward": stages[name]["backward"] / num_frames}
        for name in (*UNET_STAGES, "face_refinement")
        if name in stages
    }
    return {
        "settings": settings,
        "device": str(device),
        "frames": num_frames,
        "transition_frames": num_transition,
        "stages": stages,
        "unet_evaluations": {
            "forward": forward,
            "backward": backward,
            "forward_per_frame": forward / num_frames,
            "backward_per_frame": backward / num_frames,
            "per_stage_per_frame": per_stage,
        },
        "total_seconds": sum(stage["seconds"] for stage in stages.values()),
        "peak_memory_bytes": peak_memory,
        "reconstruction": reconstruction,
        "interrupted": interrupted,
    }
