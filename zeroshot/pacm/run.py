"""The PACM entry point: DDIM inversion, the source's and every target frame's per-step conditioning, character
masks, evaluation counts; cached, resumable and shardable across processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from accelerate import PartialState

from ..components import ModelComponents
from ..errors import ZeroshotError
from ..prompts import PromptEmbeddings
from .cache import PACMCache, cache_key, model_fingerprint
from .conditions import PoseImages
from .counters import EvaluationCounter, StageStats
from .ddim import DDIMSchedule
from .denoiser import ControlledDenoiser
from .frames import FrameConditioning, frame_conditioning
from .inversion import ddim_inversion
from .masks import character_masks, subject_attention_recording
from .progress import PACMProgress, ProgressReporter
from .settings import PACMSettings
from .sharding import FrameSharding
from .source import SourceConditioning, source_conditioning
from .stored import StoredFrameEmbeddings


@dataclass
class PACMResult:
    """Everything generation needs from PACM. Steps are sampling steps, noisiest first: step `i` goes from timestep
    `timesteps[i]` (latent `Z_{T-i}`) to the next. Video frame 0 is the source; video frame `k >= 1` is target pose
    `k - 1`.

    Tensors are float32. What grows with the number of frames (`frame_embeddings`, `attention_maps`, `masks`) stays on
    the CPU, so a long sequence never has to fit on the device: take what a window of frames needs at one step with
    [`step_embeddings`] and `masks[frames, step]`. The rest (`timesteps`, `latents`, `fixed_embedding`,
    `source_embeddings`, `source_offsets`) is on the UNet's device.

    Args:
        settings ([`PACMSettings`]): the settings of the run.
        timesteps (`torch.Tensor`): `[T]` DDIM timesteps in sampling order.
        latents (`torch.Tensor`): `[T + 1, 4, h, w]` the inversion trajectory: `latents[j]` is `Z_j`, `latents[0]`
            the source latent and `latents[T]` the starting noise `Z_T` of every frame.
        optimized_slot (`str`): the guidance slot the per-step embeddings fill, `"conditional"` or
            `"unconditional"`; `fixed_embedding` fills the other.
        fixed_embedding (`torch.Tensor`): `[L, D]`.
        source_embeddings (`torch.Tensor`): `[T, L, D]` the source's per-step embeddings `∅_s,t` (frame 0).
        frame_embeddings (`torch.Tensor | StoredFrameEmbeddings | None`): `[F, T, L, D]` on the CPU, each target
            frame's per-step pose-aware embeddings `∅~_i,t` (paper mode), or, with `frames_in_memory=False`, the same
            left in the cache files ([`StoredFrameEmbeddings`], indexed as `[frames, step]`); `None` in the fast
            modes, where frames use `source_embeddings`.
        source_offsets (`torch.Tensor | None`): `[T, 4, h, w]` in direct mode: added to every frame's latent (frame 0
            and the target frames) after sampling step `i`; frame 0 then retraces `latents` exactly.
        attention_maps (`torch.Tensor | None`): `[F, T, h, w]` on the CPU, subject-token cross-attention maps of each
            target frame at each step (`None` without a subject).
        masks (`torch.Tensor | None`): `[F, T, h, w]` on the CPU, character masks `M_i,t` (0 or 1) from
            `attention_maps`: each map divided by its maximum, then `> settings.mask_threshold`.
        num_frames (`int`): the number of target frames `F`.
        stats (`dict[str, StageStats]`): per stage (`"ddim_inversion"`, `"source"`, `"frames"`): UNet forward and
            backward evaluations, wall time, what came from the cache.
        guidance_scale (`float`): the guidance the embeddings were made for.
    """

    settings: PACMSettings
    timesteps: torch.Tensor
    latents: torch.Tensor
    optimized_slot: str
    fixed_embedding: torch.Tensor
    source_embeddings: torch.Tensor
    frame_embeddings: torch.Tensor | StoredFrameEmbeddings | None
    source_offsets: torch.Tensor | None
    attention_maps: torch.Tensor | None
    masks: torch.Tensor | None
    num_frames: int
    stats: dict[str, StageStats]

    @property
    def guidance_scale(self) -> float:
        return self.settings.guidance_scale

    def step_embeddings(
        self, step: int, frames: Sequence[int], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(unconditional, conditional)` embeddings `[len(frames), L, D]` of sampling step `step` for the video
        frames `frames` (0 is the source, `k >= 1` target pose `k - 1`), on `device`.

        Only the rows of `frames` at `step` are copied to the device, so a window of frames costs what it uses
        whatever the length of the sequence. In the fast modes every frame gets the source's embeddings.

        Args:
            step (`int`): the sampling step (0 is the noisiest).
            frames (`Sequence[int]`): video frame ids, each in `[0, num_frames]`.
            device (`torch.device` or `str`, *optional*): defaults to the device of `source_embeddings`.

        Example:

        ```py
        >>> unconditional, conditional = result.step_embeddings(step, [0, 1, 2, 3], device="cuda")
        >>> text = torch.cat([unconditional, conditional])  # classifier-free guidance batch of 4 frames
        ```
        """
        ids = torch.as_tensor(list(frames), dtype=torch.long)
        if ids.ndim != 1 or (ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) <= self.num_frames):
            raise ValueError(f"frames must be video frame ids in [0, {self.num_frames}]; got {list(frames)}.")
        device = self.source_embeddings.device if device is None else torch.device(device)
        source = self.source_embeddings[step].to(device)
        optimized = source.expand(len(ids), *source.shape)
        if self.frame_embeddings is not None:
            rows = self.frame_embeddings[(ids - 1).clamp(min=0), step].to(device)
            optimized = torch.where((ids == 0).to(device)[:, None, None], source, rows)
        fixed = self.fixed_embedding.to(device).expand(len(ids), *self.fixed_embedding.shape)
        return (fixed, optimized) if self.optimized_slot == "conditional" else (optimized, fixed)

    def stats_dict(self) -> dict[str, dict[str, int | float | bool]]:
        """`stats` as plain values, for `report.json`."""
        return {stage: stats.to_dict() for stage, stats in self.stats.items()}


def run_pacm(
    components: ModelComponents,
    source_latent: torch.Tensor,
    prompt: PromptEmbeddings,
    source_pose: torch.Tensor | np.ndarray,
    target_poses: torch.Tensor | np.ndarray,
    settings: PACMSettings | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    cache_identity: str | None = None,
    callback: Callable[[PACMProgress], None] | None = None,
    show_progress: bool = True,
    state: PartialState | None = None,
    frames_in_memory: bool = True,
) -> PACMResult:
    """Runs PoseAnimate's Pose-Aware Control Module (Sec. 3.2, Alg. 1) or one of its fast modes.

    1. DDIM inversion of the source latent with the ControlNet on the source pose, guidance 1: `Z_0..Z_T`.
    2. The source's per-step conditioning at `settings.guidance_scale`: pose-aware inversion (paper), the prompt in
       both slots (negative-prompt) or latent offsets (direct).
    3. Every target frame's per-step conditioning from `Z_T` with its own pose (Alg. 1 in paper mode), batched by
       `settings.frame_chunk_size`, with the subject-token cross-attention maps recorded as character masks. The fast
       modes run this stage only for the masks: without a subject they skip it.

    Memory does not grow with the number of frames on the device: target poses stay where they are given and only
    the chunk being optimised is converted and moved to the device; finished frames go to the CPU (see
    [`PACMResult`]).

    With `cache_dir`, each stage and each frame is stored as soon as it is done (see [`~zeroshot.pacm.cache`]): a
    second run on the same inputs evaluates nothing, and a run stopped part-way resumes at the first unfinished
    chunk of frames. A NaN or infinity stops the run with a [`~zeroshot.errors.ZeroshotError`] naming the stage and
    step; what was finished stays cached.

    Args:
        components ([`~zeroshot.components.ModelComponents`]): the models, with the pose ControlNet; they are only
            read (no weight gradient is ever computed).
        source_latent (`torch.Tensor`): `[1, 4, h, w]` or `[4, h, w]` the source image's latent, scaled by the VAE's
            scaling factor.
        prompt ([`PromptEmbeddings`]): from [`encode_prompt`]; its `subject_token_indices` select the mask tokens.
        source_pose (`torch.Tensor` or `np.ndarray`): the source pose image: a float tensor `[1, 3, 8h, 8w]` or
            `[3, 8h, 8w]` in [0, 1] (a ControlNet input), or `uint8` RGB `[1, 8h, 8w, 3]` or `[8h, 8w, 3]`.
        target_poses (`torch.Tensor` or `np.ndarray`): the target frames' pose images (F may be 0): a float tensor
            `[F, 3, 8h, 8w]` in [0, 1], or `uint8` RGB `[F, 8h, 8w, 3]` (an array or a tensor), converted a chunk at
            a time with [`~zeroshot.imaging.to_condition_tensor`]. Keep a long sequence on the CPU.
        settings ([`PACMSettings`], *optional*): defaults to the paper's settings.
        cache_dir (`str` or `os.PathLike`, *optional*): where results are cached; `None` caches nothing.
        cache_identity (`str`, *optional*): a digest of the raw inputs `source_latent` and `prompt` were made from
            ([`input_identity`] of the image and prompts). Cache keys then use it instead of the tensors' bytes, which
            vary in their last bits with the device and thread count; give it whenever the cache should be reused.
        callback (`Callable[[PACMProgress], None]`, *optional*): called after every step of every stage; raise from
            it to stop the run.
        show_progress (`bool`, *optional*, defaults to `True`): show tqdm bars (on the main process only).
        state (`accelerate.PartialState`, *optional*): under `accelerate launch`, shards the target frames across
            the processes; every process returns the full result, after the run's last collective (nothing is left
            in flight). The process group stays the script's: end it on every process with
            `state.destroy_process_group()` once it communicates no more.
        frames_in_memory (`bool`, *optional*, defaults to `True`): keep the frames' embeddings in one CPU tensor;
            `False` (needs `cache_dir`) leaves them in their cache files, read a window and a step at a time by
            [`PACMResult.step_embeddings`], so host memory does not grow with the number of frames.

    Returns:
        [`PACMResult`]

    Example:

    ```py
    >>> from zeroshot.pacm import PACMSettings, run_pacm
    >>> from zeroshot.prompts import encode_prompt
    >>> prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    >>> latent = components.vae.encode(image * 2 - 1).latent_dist.mean * components.vae.config.scaling_factor
    >>> # pose images: uint8 [F + 1, 512, 512, 3], the source's pose first
    >>> result = run_pacm(components, latent, prompt, pose_images[0], pose_images[1:], cache_dir="cache")
    >>> result.frame_embeddings.shape, result.masks.shape, result.stats["source"].backward
    ```
    """
    settings = settings if settings is not None else PACMSettings()
    if not frames_in_memory and cache_dir is None:
        raise ValueError("frames_in_memory=False leaves the frames' embeddings in the cache: give a cache_dir.")
    device = components.unet.device
    source_latent, source_poses, target_poses = _validated_inputs(
        components, source_latent, prompt, source_pose, target_poses, device
    )
    source_pose = source_poses.conditions([0], device)
    prompt = PromptEmbeddings(
        prompt.conditional.to(device, torch.float32),
        prompt.unconditional.to(device, torch.float32),
        prompt.subject_token_indices,
    )
    counter = EvaluationCounter()
    denoiser = ControlledDenoiser(components, counter, settings.controlnet_conditioning_scale)
    schedule = DDIMSchedule.from_scheduler(components.scheduler, settings.num_inference_steps)
    cache = PACMCache(cache_dir)
    sharding = FrameSharding(state)
    num_frames = len(target_poses)
    reporter = ProgressReporter(callback, show_progress and sharding.is_main_process, num_frames)
    keys = (
        _CacheKeys(components, source_latent, prompt, source_poses, target_poses, settings, cache_identity)
        if cache.enabled
        else None
    )
    try:
        # The main process runs (or reads) the source stages; the others receive their results.
        if sharding.is_main_process:
            latents = _inversion_stage(denoiser, schedule, cache, keys, source_latent, prompt, source_pose, reporter)
            source = _source_stage(denoiser, schedule, cache, keys, latents, prompt, source_pose, settings, reporter)
        if sharding.num_processes > 1:
            shared = (latents.cpu(), _to(source, "cpu")) if sharding.is_main_process else None
            latents, source = sharding.broadcast(shared)
            latents, source = latents.to(device), _to(source, device)
        kept = ("embeddings", "attention_maps") if frames_in_memory else ("attention_maps",)
        frames = _frames_stage(
            denoiser, schedule, cache, keys, latents, source, prompt, target_poses, settings, sharding, reporter, kept
        )
    finally:
        reporter.close()
    stats = counter.stats
    if sharding.num_processes > 1:
        stats = _summed(sharding.gather([counter.stats]))
    maps = frames.attention_maps
    frame_embeddings = frames.embeddings
    if not frames_in_memory and settings.mode == "paper" and num_frames:
        frame_embeddings = StoredFrameEmbeddings([cache.path("frames", key) for key in keys.frames])
    return PACMResult(
        settings=settings,
        timesteps=schedule.timesteps.to(device),
        latents=latents,
        optimized_slot=source.optimized_slot,
        fixed_embedding=source.fixed_embedding,
        source_embeddings=source.embeddings,
        frame_embeddings=frame_embeddings,
        source_offsets=source.offsets,
        attention_maps=maps,
        masks=character_masks(maps, settings.mask_threshold) if maps is not None else None,
        num_frames=num_frames,
        stats=stats,
    )


class _CacheKeys:
    """The cache keys of one run (see [`~zeroshot.pacm.cache`] for what each depends on)."""

    def __init__(
        self,
        components: ModelComponents,
        source_latent: torch.Tensor,
        prompt: PromptEmbeddings,
        source_pose: PoseImages,
        target_poses: PoseImages,
        settings: PACMSettings,
        identity: str | None,
    ):
        fingerprint = model_fingerprint(components)
        inversion_fields = settings.stage_fields("ddim_inversion")
        # The caller's identity of the raw inputs stands for the encoders' outputs, whose last bits vary by device.
        inputs = [identity] if identity is not None else [source_latent, prompt.conditional]
        # Poses are hashed as their float ControlNet inputs made on the CPU, one frame at a time: a uint8 pose image
        # and the float image made from it share their results, whatever the device.
        pose = source_pose.conditions([0], "cpu")
        self.inversion = cache_key("ddim_inversion", [fingerprint, *inputs, pose, inversion_fields])
        negative = [] if identity is not None else [prompt.unconditional]
        self.source = cache_key("source", [self.inversion, *negative, settings.stage_fields("source")])
        frame_fields = [list(prompt.subject_token_indices), settings.stage_fields("frames")]
        self.frames = [
            cache_key("frames", [self.source, target_poses.conditions([index], "cpu")[0], *frame_fields])
            for index in range(len(target_poses))
        ]


def _inversion_stage(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    cache: PACMCache,
    keys: _CacheKeys | None,
    source_latent: torch.Tensor,
    prompt: PromptEmbeddings,
    source_pose: torch.Tensor,
    reporter: ProgressReporter,
) -> torch.Tensor:
    num_steps = len(schedule)
    with denoiser.counter.stage("ddim_inversion") as stats:
        stored = cache.load("ddim_inversion", keys.inversion) if keys is not None else None
        if stored is not None:
            stats.cached = True
            return stored["latents"].to(denoiser.device)
        reporter.start("ddim_inversion", num_steps)
        latents = ddim_inversion(
            denoiser,
            schedule,
            source_latent,
            prompt.conditional,
            source_pose,
            on_step=lambda step: reporter.step("ddim_inversion", step, num_steps),
        )
        if keys is not None:
            tensors = {"latents": latents, "timesteps": schedule.timesteps}
            description = {
                "num_inference_steps": num_steps,
                "controlnet_conditioning_scale": denoiser.conditioning_scale,
            }
            cache.save("ddim_inversion", keys.inversion, tensors, description)
        return latents


def _source_stage(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    cache: PACMCache,
    keys: _CacheKeys | None,
    latents: torch.Tensor,
    prompt: PromptEmbeddings,
    source_pose: torch.Tensor,
    settings: PACMSettings,
    reporter: ProgressReporter,
) -> SourceConditioning:
    num_steps = len(schedule)
    with denoiser.counter.stage("source") as stats:
        stored = cache.load("source", keys.source) if keys is not None else None
        if stored is not None:
            stats.cached = True
            return _to(
                SourceConditioning(
                    stored["embeddings"], stored["fixed_embedding"], settings.optimized_slot, stored.get("offsets")
                ),
                denoiser.device,
            )
        reporter.start("source", num_steps)
        source = source_conditioning(
            denoiser,
            schedule,
            latents,
            prompt,
            source_pose,
            settings,
            on_step=lambda step: reporter.step("source", step, num_steps),
        )
        if keys is not None:
            tensors = {"embeddings": source.embeddings, "fixed_embedding": source.fixed_embedding}
            if source.offsets is not None:
                tensors["offsets"] = source.offsets
            cache.save("source", keys.source, tensors, settings.stage_fields("source"))
        return source


def _frames_stage(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    cache: PACMCache,
    keys: _CacheKeys | None,
    latents: torch.Tensor,
    source: SourceConditioning,
    prompt: PromptEmbeddings,
    target_poses: PoseImages,
    settings: PACMSettings,
    sharding: FrameSharding,
    reporter: ProgressReporter,
    kept: tuple[str, ...],
) -> FrameConditioning:
    num_steps, num_frames = len(schedule), len(target_poses)
    if settings.mode != "paper" and not prompt.subject_token_indices:
        return FrameConditioning(embeddings=None, attention_maps=None)  # fast modes compute frames only for masks
    results = _FrameResults(num_frames, kept)
    with denoiser.counter.stage("frames") as stats:
        # The main process decides which frames are pending, so that all processes split the same list.
        if sharding.is_main_process:
            for index in range(num_frames):
                stored = cache.load("frames", keys.frames[index]) if keys is not None else None
                if stored is not None:
                    results.put(index, stored)
            stats.frames_from_cache = len(results)
            stats.cached = num_frames > 0 and len(results) == num_frames
        pending = set(sharding.broadcast([index for index in range(num_frames) if index not in results]))
        if not sharding.is_main_process:
            for index in sorted(set(range(num_frames)) - pending):
                stored = cache.load("frames", keys.frames[index])
                if stored is None:
                    raise ZeroshotError(
                        f"The PACM cache file of frame {index} became unreadable during the run; run again."
                    )
                results.put(index, stored)
        reporter.add_frames(len(results))
        # Chunks are fixed windows of the whole sequence, whatever is cached: a frame is always batched with the same
        # frames, so a resumed run computes exactly (bit for bit) what an uninterrupted one does. A chunk with any
        # pending frame is computed whole; its frames already cached keep their stored results.
        size = settings.frame_chunk_size
        chunks = [list(range(start, min(start + size, num_frames))) for start in range(0, num_frames, size)]
        mine = sharding.split([chunk for chunk in chunks if any(index in pending for index in chunk)])
        reporter.start("frames", sum(len(chunk) for chunk in mine) * num_steps)
        computed: list[tuple[int, dict[str, torch.Tensor]]] = []
        # Installed once for the stage; each recorded pass only resets the recorder.
        with subject_attention_recording(
            denoiser.unet, prompt.subject_token_indices, tuple(latents.shape[-2:])
        ) as recording:
            for chunk in mine:
                conditioning = frame_conditioning(
                    denoiser,
                    schedule,
                    latents,
                    source,
                    target_poses.conditions(chunk, denoiser.device),
                    settings,
                    recording,
                    on_step=partial(reporter.step, "frames", num_steps=num_steps, frames=len(chunk)),
                )
                new = [(position, index) for position, index in enumerate(chunk) if index in pending]
                for position, index in new:
                    tensors = conditioning.frame(position, "cpu")
                    if keys is not None:
                        cache.save("frames", keys.frames[index], tensors, settings.stage_fields("frames"))
                    results.put(index, tensors)
                    if sharding.num_processes > 1:
                        computed.append((index, tensors))
                reporter.add_frames(len(new))
        if sharding.num_processes > 1:
            for index, tensors in sharding.gather(computed):
                results.put(index, tensors)
    return results.conditioning()


class _FrameResults:
    """Per-frame results on the CPU, each copied into one `[F, ...]` tensor per kind in `kept` as it comes (from the
    cache, this process or another), so that no frame is held twice; other kinds stay in the cache files only."""

    def __init__(self, num_frames: int, kept: tuple[str, ...]):
        self.num_frames = num_frames
        self.kept = kept
        self.tensors: dict[str, torch.Tensor] = {}
        self.done: set[int] = set()

    def put(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            if name not in self.kept:
                continue
            if name not in self.tensors:
                self.tensors[name] = torch.empty(self.num_frames, *tensor.shape, dtype=torch.float32)
            self.tensors[name][index] = tensor
        self.done.add(index)

    def __contains__(self, index: int) -> bool:
        return index in self.done

    def __len__(self) -> int:
        return len(self.done)

    def conditioning(self) -> FrameConditioning:
        return FrameConditioning(
            embeddings=self.tensors.get("embeddings"), attention_maps=self.tensors.get("attention_maps")
        )


def _to(source: SourceConditioning, device: torch.device | str) -> SourceConditioning:
    offsets = source.offsets.to(device) if source.offsets is not None else None
    return replace(
        source,
        embeddings=source.embeddings.to(device),
        fixed_embedding=source.fixed_embedding.to(device),
        offsets=offsets,
    )


def _summed(per_process: list[dict[str, StageStats]]) -> dict[str, StageStats]:
    """Evaluations and cached frames added over processes; wall time is the slowest process's; `cached` the main's."""
    first = per_process[0]
    return {
        stage: StageStats(
            forward=sum(stats[stage].forward for stats in per_process),
            backward=sum(stats[stage].backward for stats in per_process),
            seconds=max(stats[stage].seconds for stats in per_process),
            cached=first[stage].cached,
            frames_from_cache=sum(stats[stage].frames_from_cache for stats in per_process),
        )
        for stage in first
    }


def _validated_inputs(
    components: ModelComponents,
    source_latent: torch.Tensor,
    prompt: PromptEmbeddings,
    source_pose: torch.Tensor | np.ndarray,
    target_poses: torch.Tensor | np.ndarray,
    device: torch.device,
) -> tuple[torch.Tensor, PoseImages, PoseImages]:
    """The source latent as float32 on `device` with a batch dimension, and the source and target poses as given;
    `ValueError` naming any bad shape or range."""
    latent = source_latent[None] if source_latent.ndim == 3 else source_latent
    channels = components.unet.config.in_channels
    if latent.ndim != 4 or latent.shape[:2] != (1, channels):
        raise ValueError(f"source_latent must be [1, {channels}, h, w]; got {tuple(source_latent.shape)}.")
    scale = 2 ** (len(components.vae.config.block_out_channels) - 1)
    size = (latent.shape[-2] * scale, latent.shape[-1] * scale)
    pose = PoseImages(source_pose[None] if source_pose.ndim == 3 else source_pose, size, "source_pose", num_frames=1)
    targets = PoseImages(target_poses, size, "target_poses")
    dim = components.unet.config.cross_attention_dim
    if prompt.conditional.shape[-1] != dim:
        raise ValueError(f"prompt embeddings have width {prompt.conditional.shape[-1]}; the UNet expects {dim}.")
    return latent.to(device, torch.float32), pose, targets
