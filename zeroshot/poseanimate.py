"""`PoseAnimatePipeline`: one still image and a pose sequence in, a video of that character doing the poses out.

PoseAnimate (Zhu et al.), training-free on Stable Diffusion 1.5 and the OpenPose ControlNet:

1. poses: the source pose is detected in the image; PATA aligns the target poses to it and inserts transition frames;
2. mask: the source's character mask (MGDM's `M_0`);
3. encoding: the source latent and the prompt embeddings;
4. PACM: DDIM inversion, pose-aware inversion of the source, per-frame pose-aware embeddings and character masks
   (cached on disk, resumable);
5. generation: every frame from `Z_T`, frame 0 reconstructing the source, dual-consistency attention with
   mask-guided decoupling, in lock-step windows of bounded memory;
6. decoding, in chunks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from .components import ModelComponents
from .errors import ZeroshotError
from .generation import DECOUPLING_MODES, generate_latents
from .masks import MASK_METHODS, character_mask, resize_mask
from .memory import PeakMemory
from .metrics import psnr
from .pacm import (
    DDIMSchedule,
    EvaluationCounter,
    PACMSettings,
    encode_prompt,
    input_identity,
    run_pacm,
    weights_fingerprint,
)
from .pacm.denoiser import ControlledDenoiser
from .poses import PoseSequence, RenderedPoses, detect_source_pose, pose_alignment_transition
from .video import Fit, fit_image

#: The prompt used when none is given; its subject word is "person".
DEFAULT_PROMPT = "a photo of a person"
#: Words taken as the subject (whose cross-attention gives the character masks) when none is named.
SUBJECT_WORDS = (
    "person", "man", "woman", "boy", "girl", "child", "kid", "lady", "guy", "people", "character", "dancer",
    "astronaut", "firefighter", "player", "athlete", "figure", "robot", "doll",
)  # fmt: skip


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
            error, as `scripts/animate.py` writes it to `report.json`.
    """

    frames: np.ndarray | torch.Tensor
    poses: PoseSequence | None
    pose_images: np.ndarray
    num_transition: int
    report: dict = field(default_factory=dict)


class _StageClock:
    """Wall time of the pipeline's own stages (PACM's stages time themselves)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


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

    model_cpu_offload_seq = "text_encoder->controlnet->unet->vae"

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
    def from_pretrained(cls, model: str | None = None, controlnet: str | None = None, **loader_options: object):
        """Loads Stable Diffusion 1.5 and the OpenPose ControlNet with [`~zeroshot.loading.load_components`].

        Args:
            model (`str`, *optional*): hub id or local folder of the base model (default: Stable Diffusion 1.5).
            controlnet (`str`, *optional*): hub id or local folder of the ControlNet (default: OpenPose v1.1).
            loader_options: `device`, `dtype` and `offline`, as [`~zeroshot.loading.load_components`] takes them.
        """
        from .loading import DEFAULT_CONTROLNET, DEFAULT_MODEL, load_components

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

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """The source latent `[1, 4, H/8, W/8]` (posterior mean, scaled), float32."""
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        latent = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist.mean
        return latent.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int, show_progress: bool = True) -> np.ndarray:
        """`uint8` RGB frames `[frames, H, W, 3]` of scaled latents, `chunk_size` at a time."""
        from tqdm.auto import tqdm

        frames = []
        for chunk in tqdm(latents.split(chunk_size), desc="decoding", disable=not show_progress, leave=False):
            images = self.vae.decode((chunk / self.vae.config.scaling_factor).to(self.vae.device, self.vae.dtype))
            images = ((images.sample.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            frames.append(images.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(frames)

    # ---- the call ------------------------------------------------------------------------------------------------

    def __call__(
        self,
        image: Image.Image,
        poses: PoseSequence | RenderedPoses,
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
        source_pose: PoseSequence | None = None,
        source_mask: np.ndarray | None = None,
        mask_method: str = "selfie",
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool = True,
        callback_on_step_end: Callable[[int, int, torch.Tensor], None] | None = None,
        accelerate_state: object | None = None,
        output_type: str = "np",
    ) -> PoseAnimateOutput | None:
        """Animates the character of `image` with `poses`.

        Args:
            image (`PIL.Image.Image`): the source image; it is scaled and centre-cropped to `width` x `height`.
            poses ([`~zeroshot.poses.PoseSequence`] or [`~zeroshot.poses.RenderedPoses`]): the target poses, e.g.
                from [`~zeroshot.poses.load_poses`]. Keypoints are aligned to the source pose (PATA); rendered pose
                images are used as they are.
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
                gives the same frames, smaller ones use less memory (PACM's own chunking is
                `pacm_settings.frame_chunk_size`).
            source_pose ([`~zeroshot.poses.PoseSequence`], *optional*): the source's pose (one frame) on the output
                canvas, instead of detecting it in the image.
            source_mask (`np.ndarray`, *optional*): the source's boolean character mask at the output size, instead
                of segmenting the image with `mask_method`.
            mask_method (`str`, *optional*, defaults to `"selfie"`): how the source mask is segmented when not given.
            cache_dir (`str` or `os.PathLike`, *optional*): where PACM's results are cached.
            show_progress (`bool`, *optional*, defaults to `True`): progress bars for every stage.
            callback_on_step_end (`Callable[[int, int, torch.Tensor], None]`, *optional*): called after every
                generation step with the step, the timestep and the latents of all frames; raise to stop.
            accelerate_state (`accelerate.PartialState`, *optional*): under `accelerate launch`, PACM's per-frame
                stage is shared by the processes; the main process then generates, the others return `None`.
            output_type (`str`, *optional*, defaults to `"np"`): `"np"` for `uint8` frames, `"latent"` for latents.

        Returns:
            [`PoseAnimateOutput`], or `None` on processes other than the main one.
        """
        settings = pacm_settings or PACMSettings()
        mask_origin = "given" if source_mask is not None else mask_method
        self._check_inputs(height, width, window, lambdas, decoupling, mask_method, output_type)
        subject = self._subject(prompt, subject, decoupling)
        device = self.unet.device
        clock = _StageClock(device)
        with PeakMemory(device) as memory:
            image = image.convert("RGB")
            fit = Fit.between(image.size, width, height)
            source = fit_image(image, width, height)
            with clock.stage("poses"):
                # Detection and segmentation see the full-resolution image; their results are fitted like it.
                if source_pose is None:
                    source_pose = detect_source_pose(image, name="the source image").fitted(fit)
                elif source_pose.size != (width, height) or len(source_pose) != 1:
                    raise ZeroshotError(
                        f"The source pose must be one frame on the {width}x{height} output canvas, got "
                        f"{len(source_pose)} frame(s) on {source_pose.size[0]}x{source_pose.size[1]}."
                    )
                frame_poses, pose_images, num_transition = self.prepare_poses(source_pose, poses, transition_frames)
            mask_latent = None
            if decoupling is not None:
                with clock.stage("mask"):
                    if source_mask is None:
                        full = character_mask(image, mask_method)
                        source_mask = np.asarray(fit_image(Image.fromarray(full), width, height, Image.NEAREST))
                    elif source_mask.shape != (height, width):
                        raise ZeroshotError(
                            f"The character mask is {source_mask.shape[1]}x{source_mask.shape[0]}; the output is "
                            f"{width}x{height}."
                        )
                    h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
                    mask_latent = torch.from_numpy(resize_mask(source_mask.astype(bool), h, w)).float()
            with clock.stage("encode"):
                latent = self.encode_image(source)
                embeddings = encode_prompt(
                    self.components_view(), prompt, subject=subject, negative_prompt=negative_prompt
                )
                pixels = torch.from_numpy(np.asarray(source).copy())
                identity = input_identity(
                    pixels, prompt, negative_prompt, weights_fingerprint(self.vae, self.text_encoder)
                )
            pose_tensors = torch.from_numpy(pose_images).permute(0, 3, 1, 2).float() / 255
            pacm = run_pacm(
                self.components_view(),
                latent,
                embeddings,
                pose_tensors[:1],
                pose_tensors[1:],
                settings,
                cache_dir=cache_dir,
                cache_identity=identity,
                progress_bar=show_progress,
                state=accelerate_state,
            )
            if accelerate_state is not None and not accelerate_state.is_main_process:
                return None
            counter = EvaluationCounter(stages=("generation",))
            denoiser = ControlledDenoiser(self.components_view(), counter, settings.controlnet_conditioning_scale)
            schedule = DDIMSchedule.from_scheduler(self.scheduler, settings.num_inference_steps)
            with counter.stage("generation"), clock.stage("generation"):
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
                    callback=callback_on_step_end,
                )
            if not torch.isfinite(latents).all():
                raise ZeroshotError(
                    "Generation produced non-finite latents; with --dtype fp16 try bf16 or fp32, or lower --guidance."
                )
            frames: np.ndarray | torch.Tensor = latents
            error = float((latents[0] - pacm.latents[0]).norm() / pacm.latents[0].norm())
            reconstruction = {"frame0_latent_relative_error": error}
            if output_type == "np":
                with clock.stage("decode"):
                    frames = self.decode_latents(latents, window, show_progress)
                    round_trip = self.decode_latents(pacm.latents[:1], 1, show_progress=False)[0]
                reconstruction["frame0_psnr_vs_vae_round_trip"] = psnr(frames[0], round_trip)
                reconstruction["frame0_psnr_vs_source"] = psnr(frames[0], np.asarray(source))
        report = self._report(
            settings=settings,
            prompt=prompt,
            subject=subject,
            negative_prompt=negative_prompt,
            size=(width, height),
            lambdas=lambdas,
            decoupling=decoupling,
            window=window,
            mask=mask_origin if decoupling is not None else None,
            num_frames=len(pose_images),
            num_transition=num_transition,
            clock=clock,
            pacm_stats=pacm.stats_dict(),
            generation_stats=counter.to_dict()["generation"],
            peak_memory=memory.peak_bytes,
            device=device,
            reconstruction=reconstruction,
        )
        return PoseAnimateOutput(frames, frame_poses, pose_images, num_transition, report)

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _check_inputs(
        self,
        height: int,
        width: int,
        window: int,
        lambdas: tuple[float, float, float],
        decoupling: str | None,
        mask_method: str,
        output_type: str,
    ) -> None:
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise ZeroshotError(f"The size must be positive multiples of 8, got {width}x{height}.")
        if window < 1:
            raise ZeroshotError(f"The window must be at least 1 frame, got {window}.")
        if len(lambdas) != 3 or min(lambdas) < 0 or abs(sum(lambdas) - 1) > 1e-6:
            raise ZeroshotError(f"The lambdas must be three non-negative weights that sum to 1, got {lambdas}.")
        if decoupling is not None and decoupling not in DECOUPLING_MODES:
            raise ZeroshotError(f"Decoupling must be one of {DECOUPLING_MODES} or off, got {decoupling!r}.")
        if mask_method not in MASK_METHODS:
            raise ZeroshotError(f"The mask method must be one of {MASK_METHODS}, got {mask_method!r}.")
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}.")

    @staticmethod
    def _subject(prompt: str, subject: str | None, decoupling: str | None) -> str | None:
        if subject is not None or decoupling is None:
            return subject
        found = find_subject(prompt)
        if found is None:
            raise ZeroshotError(
                f"Mask-guided decoupling needs the word of the prompt that names the character, and none of the "
                f"usual ones is in {prompt!r}: give it (--subject WORD), or turn decoupling off (--no-decoupling)."
            )
        return found

    @staticmethod
    def _report(
        *,
        settings: PACMSettings,
        clock: _StageClock,
        pacm_stats: dict,
        generation_stats: dict,
        peak_memory: int,
        device: torch.device,
        num_frames: int,
        reconstruction: dict,
        **values: object,
    ) -> dict:
        stages = {name: {"seconds": seconds} for name, seconds in clock.seconds.items() if name != "generation"}
        stages.update(pacm_stats)
        stages["generation"] = generation_stats
        forward = sum(stage.get("forward", 0) for stage in stages.values())
        backward = sum(stage.get("backward", 0) for stage in stages.values())
        return {
            "settings": {**values, "pacm": asdict(settings)},
            "device": str(device),
            "frames": num_frames,
            "stages": stages,
            "unet_evaluations": {
                "forward": forward,
                "backward": backward,
                "forward_per_frame": forward / num_frames,
                "backward_per_frame": backward / num_frames,
                "per_stage_per_frame": {
                    name: {
                        "forward": stage.get("forward", 0) / num_frames,
                        "backward": stage.get("backward", 0) / num_frames,
                    }
                    for name, stage in stages.items()
                    if "forward" in stage
                },
            },
            "total_seconds": sum(stage["seconds"] for stage in stages.values()),
            "peak_memory_bytes": peak_memory,
            "reconstruction": reconstruction,
        }
