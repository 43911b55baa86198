"""`QffusionPipeline`: a whole video from its first and last frames and one condition image per frame.

A Qffusion UNet (12 input channels) generates two frames at a time from two known ones (quadrant-grid arrangement,
QGA, through [`hooks.QuadrantGridHook`]). The pipeline runs a [`~zeroshot.qffusion.schedule.PropagationSchedule`]
over the video: quadrant-grid propagation (QGP) by default, each wave of independent grids batched through the UNet.
Frames generated in one wave serve as references in the next as latents, without a decode/encode round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from hooks import QuadrantGridHook, install_quadrant_grid_hook, unpack_pair

from ..components import ModelComponents
from .schedule import SCHEDULES, PropagationSchedule, QuadrantGridFrames, build_schedule

ImageInput = Image.Image | np.ndarray | torch.Tensor


@dataclass
class QffusionPipelineOutput:
    """What [`QffusionPipeline`] returns.

    Args:
        frames (`np.ndarray` or `torch.Tensor`): `uint8` RGB frames `[frames, height, width, 3]` (`output_type="np"`),
            or latents `[frames, 4, height / 8, width / 8]` (`output_type="latent"`). Frames 0 and N - 1 are the
            references.
        schedule ([`~zeroshot.qffusion.schedule.PropagationSchedule`]): the grids that generated the other frames.
    """

    frames: np.ndarray | torch.Tensor
    schedule: PropagationSchedule


def _image_tensor(image: ImageInput, height: int, width: int) -> torch.Tensor:
    """An RGB image as a `[3, height, width]` float tensor in [-1, 1], resized (Lanczos) when its size differs."""
    if isinstance(image, torch.Tensor):
        tensor = image.detach().float().cpu()
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"An image tensor must be [3, height, width] in [-1, 1], got {tuple(tensor.shape)}.")
        if tensor.shape[1:] != (height, width):
            tensor = torch.nn.functional.interpolate(
                tensor[None], size=(height, width), mode="bicubic", align_corners=False
            )[0]
        return tensor.clamp(-1, 1)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"An image array must be uint8 [height, width, 3], got {image.dtype} {image.shape}.")
        image = Image.fromarray(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _image_size(image: ImageInput) -> tuple[int, int]:
    """`(height, width)` of an image given as PIL image, `[h, w, 3]` array or `[3, h, w]` tensor."""
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray):
        return image.shape[0], image.shape[1]
    return image.shape[-2], image.shape[-1]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """`[n, 3, h, w]` tensors in [-1, 1] -> `uint8` `[n, h, w, 3]`."""
    images = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


class QffusionPipeline(DiffusionPipeline):
    """Dual-frame video generation and editing with a Qffusion checkpoint (12-channel UNet, no ControlNet).

    Give it the first and last frames (for editing: the video's first and last frames after you edited them) and a
    condition image for every frame (face-mesh or OpenPose renders, see [`~zeroshot.qffusion.conditions`]); it
    generates the frames in between, following the conditions and carrying the references' appearance.

    Args:
        vae (`AutoencoderKL`): image <-> latent autoencoder.
        text_encoder (`CLIPTextModel`): encodes the prompt the checkpoint was trained with.
        tokenizer (`CLIPTokenizer`): its tokenizer.
        unet (`UNet2DConditionModel`): a Qffusion UNet, `in_channels` 12.
        scheduler (`KarrasDiffusionSchedulers`): any diffusers scheduler of Stable Diffusion (DDIM by default).

    Example:

    ```py
    >>> from zeroshot import QffusionPipeline
    >>> from zeroshot.qffusion import load_qffusion_components
    >>> components, config = load_qffusion_components("qffusion-checkpoint", device="cuda")
    >>> pipe = QffusionPipeline.from_components(components)
    >>> result = pipe(start, end, conditions, prompt=config.prompt, generator=torch.Generator().manual_seed(0))
    >>> result.frames.shape  # (len(conditions), height, width, 3), uint8
    ```
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_components(cls, components: ModelComponents) -> QffusionPipeline:
        """A pipeline over already loaded [`~zeroshot.components.ModelComponents`] (its ControlNet is not used)."""
        return cls(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=components.scheduler,
        )

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this: the 2x2 grid of latents must survive every
        downsampling of the UNet."""
        downsamples = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.vae_scale_factor * max(1, downsamples // 2)

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """The text embedding of `prompt`, `[1, 77, dim]`."""
        ids = self.tokenizer(
            [prompt],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0].to(self.unet.dtype)

    def encode_images(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Latents (posterior mean, scaled) of `[n, 3, h, w]` images in [-1, 1], `batch_size` at a time."""
        latents = []
        for chunk in images.split(batch_size):
            chunk = chunk.to(self.vae.device, self.vae.dtype)
            latents.append(self.vae.encode(chunk).latent_dist.mode())
        latents = torch.cat(latents)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Images in [-1, 1], on the CPU (a long video's frames need not fit beside the models), from scaled latents,
        `batch_size` at a time."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        images = []
        for chunk in latents.split(batch_size):
            chunk = chunk.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor + shift
            images.append(self.vae.decode(chunk).sample.float().cpu())
        return torch.cat(images)

    def check_inputs(
        self, conditions: Sequence[ImageInput], height: int, width: int, num_inference_steps: int
    ) -> None:
        """Raises `ValueError` for settings the pipeline cannot run."""
        if len(conditions) < 2:
            raise ValueError(f"Need a condition image for every frame, at least 2 frames; got {len(conditions)}.")
        multiple = self.size_multiple
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(f"height and width must be positive multiples of {multiple}, got {height}x{width}.")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}.")
        if self.unet.config.in_channels != 3 * self.unet.config.out_channels:
            raise ValueError(
                f"The UNet takes {self.unet.config.in_channels} input channels; a Qffusion UNet takes "
                f"{3 * self.unet.config.out_channels} (reference, condition and noisy grids)."
            )

    def _sample_grids(
        self,
        hook: QuadrantGridHook,
        grids: Sequence[QuadrantGridFrames],
        known: dict[int, torch.Tensor],
        condition_latents: torch.Tensor,
        text: torch.Tensor,
        num_inference_steps: int,
        generator: torch.Generator | None,
        progress: object,
        callback_on_step_end: Callable | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples tiles b and c of a batch of grids whose references are in `known`."""
        device, dtype = self._execution_device, self.unet.dtype
        tile_shape = (1, *condition_latents.shape[1:])
        pair_shape = (*tile_shape[:3], 2 * tile_shape[3])
        # One draw per grid, in schedule order, so that results do not depend on how grids are batched.
        noise, corner_noise = [], []
        for _ in grids:
            noise.append(randn_tensor(pair_shape, generator=generator, device=device, dtype=dtype))
            corner_noise.append(randn_tensor((2, *tile_shape), generator=generator, device=device, dtype=dtype))
        corner_noise = torch.cat(corner_noise, dim=1)
        references_a = torch.cat([known[grid.frames[0]] for grid in grids]).to(device, dtype)
        references_d = torch.cat([known[grid.frames[3]] for grid in grids]).to(device, dtype)
        conditions = [condition_latents[[grid.frames[tile] for grid in grids]].to(device, dtype) for tile in range(4)]
        hook.set_grid(references_a, references_d, conditions, corner_noise=list(corner_noise))
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = torch.cat(noise) * self.scheduler.init_noise_sigma
        embeddings = text.expand(len(grids), -1, -1)
        for step, timestep in enumerate(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            prediction = self.unet(model_input, timestep, encoder_hidden_states=embeddings).sample
            latents = self.scheduler.step(prediction, timestep, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                returned = callback_on_step_end(self, step, timestep, {"latents": latents, "grids": list(grids)})
                latents = (returned or {}).get("latents", latents)
            progress.update()
        hook.reset()
        return unpack_pair(latents)

    @torch.no_grad()
    def __call__(
        self,
        start_image: ImageInput,
        end_image: ImageInput,
        conditions: Sequence[ImageInput] | np.ndarray,
        *,
        height: int | None = None,
        width: int | None = None,
        schedule: str | PropagationSchedule = "qgp",
        num_inference_steps: int = 25,
        prompt: str = "",
        generator: torch.Generator | None = None,
        batch_size: int = 8,
        output_type: str = "np",
        callback_on_step_end: Callable | None = None,
    ) -> QffusionPipelineOutput:
        """Generates frames `1 .. N - 2` between `start_image` (frame 0) and `end_image` (frame N - 1).

        Args:
            start_image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`): frame 0 (uint8 `[h, w, 3]` array, or a
                `[3, h, w]` tensor in [-1, 1]).
            end_image (same types): frame N - 1.
            conditions (sequence of images, or a `uint8` array `[N, h, w, 3]`): one condition image per frame.
            height (`int`, *optional*): frame height in pixels; defaults to the first condition's. A multiple of
                [`size_multiple`]; the references and conditions are resized to it.
            width (`int`, *optional*): frame width, likewise.
            schedule (`str` or [`~zeroshot.qffusion.schedule.PropagationSchedule`], *optional*, defaults to `"qgp"`):
                `"qgp"` (recursive trisection), `"naive"`, or a schedule for `N` frames.
            num_inference_steps (`int`, *optional*, defaults to 25): denoising steps per grid.
            prompt (`str`, *optional*, defaults to `""`): the text the checkpoint was trained with.
            generator (`torch.Generator`, *optional*): random source; grids draw their noise in schedule order, so
                the result does not depend on `batch_size` (for schedulers that add no noise while stepping).
            batch_size (`int`, *optional*, defaults to 8): grids per UNet batch (and images per VAE batch).
            output_type (`str`, *optional*, defaults to `"np"`): `"np"` for `uint8` frames, `"latent"` for latents.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, step, timestep, kwargs)` after
                every denoising step of every batch of grids with `kwargs = {"latents", "grids"}`; may return a dict
                with replacement `"latents"`.

        Returns:
            [`QffusionPipelineOutput`]: the frames and the schedule.
        """
        # 1. Settings
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if isinstance(schedule, str) and schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        default_height, default_width = _image_size(conditions[0])
        height, width = height or default_height, width or default_width
        self.check_inputs(conditions, height, width, num_inference_steps)
        num_frames = len(conditions)
        if isinstance(schedule, str):
            schedule = build_schedule(num_frames, schedule)
        elif schedule.num_frames != num_frames:
            raise ValueError(f"The schedule is for {schedule.num_frames} frames, the conditions for {num_frames}.")
        device = self._execution_device

        # 2. Prompt, references and conditions in latent space
        text = self.encode_prompt(prompt, device)
        references = torch.stack([_image_tensor(image, height, width) for image in (start_image, end_image)])
        reference_latents = self.encode_images(references, batch_size)
        condition_images = torch.stack([_image_tensor(image, height, width) for image in conditions])
        condition_latents = self.encode_images(condition_images, batch_size)
        known = {0: reference_latents[:1], num_frames - 1: reference_latents[1:]}

        # 3. Waves of grids, each wave's grids batched
        hook = QuadrantGridHook(self.scheduler.alphas_cumprod)
        total = sum(-(-len(wave) // batch_size) for wave in schedule.waves) * num_inference_steps
        with install_quadrant_grid_hook(self.unet, hook), self.progress_bar(total=total) as progress:
            for wave in schedule.waves:
                generated = {}
                for start in range(0, len(wave), batch_size):
                    grids = wave[start : start + batch_size]
                    tiles_b, tiles_c = self._sample_grids(
                        hook, grids, known, condition_latents, text, num_inference_steps, generator, progress,
                        callback_on_step_end,
                    )  # fmt: skip
                    for index, grid in enumerate(grids):
                        for tile, (frame, kept) in enumerate(zip(grid.frames[1:3], grid.keep, strict=True)):
                            if kept:
                                generated[frame] = (tiles_b, tiles_c)[tile][index : index + 1]
                known.update(generated)

        # 4. Frames
        latents = torch.cat([known[frame] for frame in range(num_frames)])
        if output_type == "latent":
            frames = latents
        else:
            middle = self.decode_latents(latents[1:-1], batch_size) if num_frames > 2 else references[:0]
            frames = _to_uint8(torch.cat([references[:1], middle, references[1:]]))
        self.maybe_free_model_hooks()
        return QffusionPipelineOutput(frames=frames, schedule=schedule)
