"""PoseAnimate's generation stage: every frame sampled from the source's `Z_T` with its own pose and pose-aware
embeddings, dual-consistency attention in the UNet up blocks, mask-guided decoupling, in lock-step windows.

Windows keep memory bounded for any length: at every step each window of frames takes the step in frame order
before any window takes the next, and the hooks' cache hands each window the keys and values of frame 0 and of the
frame just before it, so the result equals generating all frames in one batch.

Decoupling's masks of the target frames come from PACM's frame stage in paper mode. In the fast modes, which sample
nothing per frame before generation, each UNet call makes them itself ([`~hooks.InCallSubjectMasks`]): the subject
word's cross-attention maps of the down and mid blocks give the masks that the up blocks of the same call use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from hooks import CrossFrameState, DualConsistencyAttnProcessor, InCallSubjectMasks, install_attn_processors

from .imaging import to_condition_tensor
from .pacm import DDIMSchedule, PACMResult, guided_noise
from .pacm.denoiser import ControlledDenoiser


def frame_windows(num_frames: int, window: int) -> list[list[int]]:
    """Consecutive windows of at most `window` frame ids covering `0 .. num_frames - 1`, in order."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}.")
    return [list(range(start, min(start + window, num_frames))) for start in range(0, num_frames, window)]


@torch.no_grad()
def generate_latents(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    pacm: PACMResult,
    pose_images: np.ndarray,
    source_mask: torch.Tensor | None,
    *,
    lambdas: tuple[float, float, float] = (0.7, 0.15, 0.15),
    decoupling: str | None = "exclusive",
    window: int = 16,
    show_progress: bool = True,
    on_step: Callable[[int, int, torch.Tensor], torch.Tensor | None] | None = None,
    interrupted: Callable[[], bool] | None = None,
    initial_latents: torch.Tensor | None = None,
    subject_token_indices: Sequence[int] = (),
    on_masks: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Samples every frame of the animation and returns their latents `[frames, 4, h, w]` (float32).

    Frame 0 is the source: its embeddings are the source's and its attention plain, so it reconstructs the source.
    Frame `k >= 1` is target pose `k - 1`: its pose image, its pose-aware embeddings, and dual-consistency attention
    to frame 0, frame `k - 1` and itself in the self-attention of the UNet up blocks.

    Args:
        denoiser ([`~zeroshot.pacm.denoiser.ControlledDenoiser`]): UNet and pose ControlNet, counting evaluations.
        schedule ([`~zeroshot.pacm.DDIMSchedule`]): the DDIM schedule PACM ran with.
        pacm ([`~zeroshot.pacm.PACMResult`]): `Z_T`, per-step embeddings of the source and frames, character masks
            (or none, see `subject_token_indices`) and, in direct mode, the latent offsets.
        pose_images (`np.ndarray`): `uint8` `[frames, H, W, 3]` ControlNet pose images, frame 0 the source pose.
        source_mask (`torch.Tensor`, *optional*): `[h, w]` character mask of the source at latent size; with
            `decoupling`, it is frame 0's mask, and PACM's masks (or those made in each call) are the other frames'.
        lambdas (`tuple[float, float, float]`, *optional*, defaults to `(0.7, 0.15, 0.15)`): weights of attention to
            frame 0, to the previous frame and to the frame itself.
        decoupling (`str`, *optional*, defaults to `"exclusive"`): `"exclusive"` (each region attends to its own
            keys), `"literal"` (the paper's masked keys and values), or `None` to attend to whole frames.
        window (`int`, *optional*, defaults to 16): frames per UNet call; any value gives the same frames.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        on_step (`Callable[[int, int, torch.Tensor], torch.Tensor | None]`, *optional*): called after every step
            with the step index, the timestep and the latents of all frames; it may return latents to continue from.
        interrupted (`Callable[[], bool]`, *optional*): asked after every step; `True` stops sampling there.
        initial_latents (`torch.Tensor`, *optional*): `[frames, 4, h, w]` latents at `schedule`'s first timestep to
            start every frame from, instead of `Z_T` (image-to-image, as the face refinement pass starts part-way).
        subject_token_indices (`Sequence[int]`, *optional*): the subject's token positions in the prompt; with
            `decoupling` and no masks in `pacm` (the fast modes), each UNet call makes its frames' masks from their
            maps in its down and mid blocks, thresholded at `pacm.settings.mask_threshold`, for its up blocks.
        on_masks (`Callable[[int, torch.Tensor], None]`, *optional*): with `decoupling`, called after every step
            with the step index and the masks `[frames, h, w]` decoupling used at that step (frame 0 the source's).
    """
    num_frames = pacm.num_frames + 1
    if len(pose_images) != num_frames:
        raise ValueError(f"Expected {num_frames} pose images (source and targets), got {len(pose_images)}.")
    if decoupling is not None:
        if source_mask is None or (pacm.masks is None and not subject_token_indices):
            raise ValueError(
                "Decoupling needs the source mask, and PACM's character masks or the subject's token indices."
            )
    device = denoiser.device
    if initial_latents is None:
        latents = pacm.latents[-1][None].to(device).repeat(num_frames, 1, 1, 1)
    elif initial_latents.shape != (num_frames, *pacm.latents.shape[1:]):
        raise ValueError(
            f"initial_latents must be {[num_frames, *pacm.latents.shape[1:]]}, got {list(initial_latents.shape)}."
        )
    else:
        latents = initial_latents.to(device, torch.float32).clone()
    state = CrossFrameState(mode="windows", latent_size=tuple(latents.shape[-2:]))
    processor = DualConsistencyAttnProcessor(
        lambdas=lambdas, cfg_chunks=2, state=state, decoupling=decoupling or "exclusive"
    )
    in_call = None
    if decoupling is not None and pacm.masks is None:
        frame0_mask = {0: source_mask.to(device, torch.float32)}
        threshold = pacm.settings.mask_threshold
        in_call = InCallSubjectMasks(
            state, subject_token_indices, num_frames, threshold=threshold, cfg_chunks=2, fixed_masks=frame0_mask
        )
    windows = frame_windows(num_frames, window)
    progress = tqdm(total=len(schedule) * len(windows), desc="generation", disable=not show_progress, leave=False)
    masks_made = nullcontext() if in_call is None else in_call.install(denoiser.unet)
    with install_attn_processors(denoiser.unet, processor), masks_made, progress:
        for step in range(len(schedule)):
            timestep = int(schedule.timesteps[step])
            state.step = step
            if decoupling is not None and in_call is None:
                frame_masks = pacm.masks[:, step].to(device, torch.float32)
                state.masks = torch.cat([source_mask.to(device, torch.float32)[None], frame_masks])
            for frames in windows:
                state.frame_ids = frames
                current = latents[frames]
                poses = to_condition_tensor(pose_images[frames], device)
                unconditional, conditional = pacm.step_embeddings(step, frames, device)
                noise = denoiser(
                    torch.cat([current, current]),
                    timestep,
                    torch.cat([unconditional, conditional]),
                    torch.cat([poses, poses]),
                )
                guided = guided_noise(*noise.chunk(2), pacm.guidance_scale)
                latents[frames] = schedule.sample_step(current, guided, step)
                progress.update()
            if pacm.source_offsets is not None:
                latents += pacm.source_offsets[step].to(device)
            if on_masks is not None and state.masks is not None:
                on_masks(step, state.masks)
            if on_step is not None:
                replaced = on_step(step, timestep, latents)
                latents = latents if replaced is None else replaced.to(device, torch.float32)
            if interrupted is not None and interrupted():
                break
    state.reset()
    return latents
