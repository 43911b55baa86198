"""`QffusionPipeline`: a whole video from its first and last frames and one condition image per frame.

A Qffusion UNet (12 input channels) generates two frames at a time from two known ones (quadrant-grid arrangement,
QGA, through [`hooks.QuadrantGridHook`]). The pipeline runs a [`~zeroshot.qffusion.schedule.PropagationSchedule`]
over the video: quadrant-grid propagation (QGP) by default, each wave of independent grids batched through the UNet.
Frames generated in one wave serve as references in the next as latents, without a decode/encode round trip.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from hooks import QuadrantGridHook, install_quadrant_grid_hook, unpack_pair

from ..components import ModelComponents
from ..errors import ZeroshotError
from ..imaging import decode_latents, encode_latents, to_model_tensor, to_uint8
from ..prompts import encode_texts
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


def _model_tensors(images: Sequence[ImageInput] | np.ndarray, height: int, width: int) -> torch.Tensor:
    """Images as one float tensor `[n, 3, height, width]` in [-1, 1]; images of another size are resized (Lanczos for
    PIL images and arrays, bicubic for tensors)."""
    tensors = []
    for image in images:
        if isinstance(image, torch.Tensor):
            tensor = image.detach().float().cpu()
            if tensor.ndim != 3 or tensor.shape[0] != 3:
                raise ValueError(f"An image tensor must be [3, height, width] in [-1, 1], got {tuple(tensor.shape)}.")
            if tensor.shape[1:] != (height, width):
                tensor = torch.nn.functional.interpolate(tensor[None], size=(height, width), mode="bicubic")[0]
            tensors.append(tensor.clamp(-1, 1))
            continue
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"An image array must be uint8 [height, width, 3], got {image.dtype} {image.shape}.")
            image = Image.fromarray(image)
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        tensors.append(to_model_tensor(np.asarray(image))[0])
    return torch.stack(tensors)


def _image_size(image: ImageInput) -> tuple[int, int]:
    """`(height, width)` of an image given as PIL image, `[h, w, 3]` array or `[3, h, w]` tensor."""
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray):
        return image.shape[0], image.shape[1]
    return image.shape[-2], image.shape[-1]


def _step_kwargs(scheduler: object, generator: torch.Generator | None) -> dict[str, object]:
    """The keyword arguments this pipeline gives `scheduler.step`, limited to those its signature accepts (as
    diffusers' `prepare_extra_step_kwargs` does): the generator for schedulers that draw noise while stepping (DDIM
    with `eta`, ancestral and SDE samplers); LMS, PNDM, UniPC, Heun and KDPM2 take none."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


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

    def check_inputs(
        self, conditions: Sequence[ImageInput], height: int, width: int, num_inference_steps: int, batch_size: int
    ) -> None:
        """Raises [`~zeroshot.errors.ZeroshotError`] for inputs or settings the pipeline cannot run, with the fix."""
        if len(conditions) < 2:
            raise ZeroshotError(
                f"Got {len(conditions)} condition image(s); give one per frame, at least 2 (the first and last)."
            )
        multiple = self.size_multiple
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ZeroshotError(
                f"The frame size {width}x{height} is not made of positive multiples of {multiple}, which this UNet "
                f"needs; pass height and width that are (the images are resized to them)."
            )
        for value, name in ((num_inference_steps, "num_inference_steps"), (batch_size, "batch_size")):
            if value < 1:
                raise ZeroshotError(f"{name} must be at least 1, got {value}.")
        if self.unet.config.in_channels != 3 * self.unet.config.out_channels:
            raise ZeroshotError(
                f"The UNet takes {self.unet.config.in_channels} input channels; a Qffusion UNet takes "
                f"{3 * self.unet.config.out_channels} (reference, condition and noisy grids). Load a Qffusion "
                f"checkpoint with load_qffusion_components."
            )

    def _initial_noise(
        self, num_grids: int, tile_shape: tuple[int, ...], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting noise of tiles b and c (`[num_grids, C, h, 2w]`) and the noise that diffuses tiles a and d
        (`[2, num_grids, C, h, w]`), drawn for every grid before any sampling, grid by grid in schedule order (tiles
        b and c, then a and d): the result does not depend on how the grids are batched, nor on what a scheduler
        draws while stepping."""
        device, dtype = self._execution_device, self.unet.dtype
        channels, height, width = tile_shape
        options = {"generator": generator, "device": device, "dtype": dtype}
        pairs, corners = [], []
        for _ in range(num_grids):
            pairs.append(randn_tensor((1, channels, height, 2 * width), **options))
            corners.append(randn_tensor((2, 1, *tile_shape), **options))
        return torch.cat(pairs), torch.cat(corners, dim=1)

    def _sample_grids(
        self,
        hook: QuadrantGridHook,
        grids: Sequence[QuadrantGridFrames],
        known: dict[int, torch.Tensor],
        condition_latents: torch.Tensor,
        text: torch.Tensor,
        noise: torch.Tensor,
        corner_noise: torch.Tensor,
        num_inference_steps: int,
        generator: torch.Generator | None,
        progress: tqdm,
        callback_on_step_end: Callable | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples tiles b and c of a batch of grids whose references are in `known`, from their initial noise."""
        device, dtype = self._execution_device, self.unet.dtype
        references_a = torch.cat([known[grid.frames[0]] for grid in grids]).to(device, dtype)
        references_d = torch.cat([known[grid.frames[3]] for grid in grids]).to(device, dtype)
        conditions = [condition_latents[[grid.frames[tile] for grid in grids]].to(device, dtype) for tile in range(4)]
        hook.set_grid(references_a, references_d, conditions, corner_noise=list(corner_noise))
        self.scheduler.set_timesteps(num_inference_steps, device=device)  # also clears multistep schedulers' history
        latents = noise * self.scheduler.init_noise_sigma
        embeddings = text.expand(len(grids), -1, -1)
        step_kwargs = _step_kwargs(self.scheduler, generator)
        for step, timestep in enumerate(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            prediction = self.unet(model_input, timestep, encoder_hidden_states=embeddings).sample
            latents = self.scheduler.step(prediction, timestep, latents, **step_kwargs).prev_sample
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
        show_progress: bool = True,
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
            num_inference_steps (`int`, *optional*, defaults to 25): denoising steps per grid (second-order
                schedulers such as Heun call the UNet about twice per step).
            prompt (`str`, *optional*, defaults to `""`): the text the checkpoint was trained with.
            generator (`torch.Generator`, *optional*): random source; every grid's noise is drawn first, in schedule
                order, so the result does not depend on `batch_size` (for schedulers that add no noise while
                stepping; ancestral and SDE samplers draw theirs from it per batch).
            batch_size (`int`, *optional*, defaults to 8): grids per UNet batch (and images per VAE batch).
            output_type (`str`, *optional*, defaults to `"np"`): `"np"` for `uint8` frames, `"latent"` for latents.
            show_progress (`bool`, *optional*, defaults to `True`): a progress bar over the UNet calls.
            callback_on_step_end (`Callable`, *optional*): called as `callback(pipe, step, timestep, kwargs)` after
                every denoising step of every batch of grids with `kwargs = {"latents", "grids"}`; may return a dict
                with replacement `"latents"`.

        Returns:
            [`QffusionPipelineOutput`]: the frames and the schedule.
        """
        # 1. Settings
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}.")
        if isinstance(schedule, str) and schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        default_height, default_width = _image_size(conditions[0])
        height, width = height or default_height, width or default_width
        self.check_inputs(conditions, height, width, num_inference_steps, batch_size)
        num_frames = len(conditions)
        if isinstance(schedule, str):
            schedule = build_schedule(num_frames, schedule)
        elif schedule.num_frames != num_frames:
            raise ValueError(f"The schedule is for {schedule.num_frames} frames, the conditions for {num_frames}.")
        device = self._execution_device

        # 2. Prompt, references and conditions in latent space
        text = encode_texts(self.tokenizer, self.text_encoder, [prompt]).to(device, self.unet.dtype)
        references = _model_tensors([start_image, end_image], height, width)
        reference_latents = encode_latents(self.vae, references, batch_size)
        condition_latents = encode_latents(self.vae, _model_tensors(conditions, height, width), batch_size)
        known = {0: reference_latents[:1], num_frames - 1: reference_latents[1:]}

        # 3. Waves of grids, each wave's grids batched
        hook = QuadrantGridHook(self.scheduler.alphas_cumprod)
        try:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        except ValueError as error:  # e.g. PNDM with Runge-Kutta warm-up steps needs at least 4 steps
            raise ZeroshotError(
                f"{type(self.scheduler).__name__} cannot make a schedule of {num_inference_steps} steps ({error}); "
                f"use more steps or another scheduler."
            ) from error
        unet_calls = len(self.scheduler.timesteps)  # more than the steps for second-order schedulers
        total = sum(-(-len(wave) // batch_size) for wave in schedule.waves) * unet_calls
        progress = tqdm(total=total, desc="qffusion", unit="call", disable=not show_progress, leave=False)
        noise, corner_noise = self._initial_noise(len(schedule), condition_latents.shape[1:], generator)
        first = 0  # of the batch, among the grids in schedule order
        with install_quadrant_grid_hook(self.unet, hook), progress:
            for wave in schedule.waves:
                generated = {}
                for start in range(0, len(wave), batch_size):
                    grids = wave[start : start + batch_size]
                    batch = slice(first, first + len(grids))
                    first += len(grids)
                    tiles_b, tiles_c = self._sample_grids(
                        hook, grids, known, condition_latents, text, noise[batch], corner_noise[:, batch],
                        num_inference_steps, generator, progress, callback_on_step_end,
                    )  # fmt: skip
                    for index, grid in enumerate(grids):
                        for tile, (frame, kept) in enumerate(zip(grid.frames[1:3], grid.keep, strict=True)):
                            if kept:
                                generated[frame] = (tiles_b, tiles_c)[tile][index : index + 1]
                known.update(generated)

        # 4. Frames: the references as given, the others decoded
        latents = torch.cat([known[frame] for frame in range(num_frames)])
        if output_type == "latent":
            frames = latents
        else:
            ends = to_uint8(references)
            middle = ends[:0]
            if num_frames > 2:
                middle = decode_latents(self.vae, latents[1:-1], batch_size, show_progress=show_progress)
            frames = np.concatenate([ends[:1], middle, ends[1:]])
        self.maybe_free_model_hooks()
        return QffusionPipelineOutput(frames=frames, schedule=schedule)
