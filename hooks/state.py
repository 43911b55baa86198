"""The shared, per-call state of the cross-frame processors: which frames a UNet call holds, the step, the masks.

diffusers drops `cross_attention_kwargs` keys a processor does not name, and passes the same dict to self- and
cross-attention layers, so per-call data reaches the hooked layers through one object handed to their processors at
construction instead. A pipeline sets its fields before each UNet call; the processors read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from .grid import resize_masks, token_grid

CrossFrameMode = Literal["batch", "windows"]
MODES: tuple[str, ...] = ("batch", "windows")


@dataclass(frozen=True)
class FrameLayout:
    """How the batch of one attention call is laid out: `chunks` blocks (guidance halves), each holding `frame_ids`.

    Args:
        chunks (`int`): number of classifier-free-guidance chunks in the batch.
        frame_ids (`tuple[int, ...]`): global frame ids of the frames of each chunk, in batch order.
    """

    chunks: int
    frame_ids: tuple[int, ...]

    def row(self, chunk: int, position: int) -> int:
        """Batch row of the frame at `position` in chunk `chunk`."""
        return chunk * len(self.frame_ids) + position


@dataclass(frozen=True, eq=False)
class GridMasks:
    """The state's masks on the token grid of one attention resolution.

    Args:
        masks (`torch.Tensor`): `[num_frames, tokens]`, indexed by global frame id, in the layer's device and dtype.
        hard (`bool`): whether the masks hold only 0 and 1 (decided once for all frames, before resizing).
    """

    masks: torch.Tensor
    hard: bool


@dataclass
class CrossFrameState:
    """What the cross-frame attention processors need to know about the current UNet call; shared by all layers.

    Set the fields before each UNet call (plain attribute assignment); one state serves every layer the processor is
    installed on, and may serve several processors.

    Args:
        mode (`str`, *optional*, defaults to `"batch"`):
            - `"batch"`: each UNet call holds every frame that its frames attend to (frame 0 and each frame's
              predecessor); nothing is cached. Suits pipelines that run the whole sequence in one batch.
            - `"windows"`: lock-step windows. Frames run in windows of any size, every window taking step `t` before
              any window takes the next step, in frame order, each window once per step. The keys and values of frame
              0 and of the last frame of each window are cached per (step, layer), and the next window of the same
              step reads them, so windowed output equals full-batch output. A cached frame is dropped as soon as its
              successor has read it, so the cache holds at most two frames per layer (frame 0 and the latest
              window's last frame) whatever the length. Requires `frame_ids` and `step`.
        frame_ids (`Sequence[int]`, *optional*): global frame ids of the frames in each guidance chunk of the next
            UNet call, in batch order. Defaults to `0 .. frames - 1`. Frame 0 is the anchor (the source image).
        num_frames (`int`, *optional*): frames in each guidance chunk of the next UNet call, when `frame_ids` is
            unset. A batch of 4 rows is 2 chunks of 2 frames with guidance and 1 chunk of 4 frames without: give the
            frame count (or `frame_ids`, or the chunk count) so the layout is never guessed.
        chunks (`int`, *optional*): number of classifier-free-guidance chunks in the batch (the batch is
            `[chunk 0: frames, chunk 1: frames, ...]`, as diffusers lays it out). Defaults to the processor's
            `cfg_chunks`; when both are unset, the batch size divided by the frame count.
        step (`int`, *optional*): index of the denoising step of the next UNet call (any value that changes from
            step to step, and with every UNet evaluation of a scheduler that evaluates several per step); keys the
            cache in `"windows"` mode.
        masks (`torch.Tensor`, *optional*): character masks `[num_frames, height, width]` indexed by global frame id
            (1 = character, 0 = background), hard or soft, at any resolution: a floating-point tensor with values in
            [0, 1], or a `bool` tensor. Anything else (`uint8` 0/255, a soft mask a rounding step above 1) is refused
            with a `ValueError`, since the decoupled attention would turn it into NaN. Setting them turns on
            mask-guided decoupling for frames other than frame 0. They count as hard when every value of every frame
            is 0 or 1. The state checks them and resizes them to each attention resolution once, then again only
            after `masks` is assigned, or edited in place (seen by the tensor's version counter, also when the same
            tensor is assigned again), or `step` changes. A tensor made under `torch.inference_mode` has no version
            counter: after editing one in place, assign a new tensor (a clone).
        latent_size (`tuple[int, int]`, *optional*): `(height, width)` of the latents the UNet runs at; needed with
            `masks`, to map each layer's tokens to a grid.

    Example:

    ```py
    >>> state = CrossFrameState(mode="windows", latent_size=(64, 64))
    >>> processor = DualConsistencyAttnProcessor(cfg_chunks=2, state=state)
    >>> with install_attn_processors(unet, processor):
    ...     for step, t in enumerate(timesteps):
    ...         state.step, state.masks = step, masks[step]          # [num_frames, H, W]
    ...         for window in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9]):
    ...             state.frame_ids = window
    ...             ...  # one UNet call holding the window's frames in every guidance chunk
    ```
    """

    mode: CrossFrameMode = "batch"
    frame_ids: Sequence[int] | None = None
    num_frames: int | None = None
    chunks: int | None = None
    step: int | None = None
    masks: torch.Tensor | None = None
    latent_size: tuple[int, int] | None = None
    _cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False
    )
    _cache_step: int | None = field(default=None, init=False, repr=False)
    _step_chunks: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _masks_seen: torch.Tensor | None = field(default=None, init=False, repr=False)
    _masks_seen_as: tuple | None = field(default=None, init=False, repr=False)
    _masks_hard: bool = field(default=False, init=False, repr=False)
    _grid_masks: dict[tuple[int, torch.device, torch.dtype], GridMasks] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._check_mode()

    def reset(self) -> None:
        """Forgets the cached keys, values and resized masks, and the per-call fields (`frame_ids`, `step`, `masks`).

        Call it before each new generation. `mode`, `num_frames`, `chunks` and `latent_size` are kept.
        """
        self._cache.clear()
        self._cache_step = None
        self._step_chunks = None
        self._grid_masks.clear()
        self._masks_seen = self._masks_seen_as = None
        self.frame_ids = None
        self.step = None
        self.masks = None

    @property
    def cached_frames(self) -> list[int]:
        """Global ids of the frames whose keys and values are cached for the current step (any layer)."""
        return sorted({frame for _, frame in self._cache})

    @property
    def cached_bytes(self) -> int:
        """Memory held by the cached keys and values, in bytes (all layers)."""
        return sum(tensor.numel() * tensor.element_size() for entry in self._cache.values() for tensor in entry)

    def layout(self, batch_size: int, default_chunks: int | None) -> FrameLayout:
        """The frame layout of a batch of `batch_size` rows, checked against the fields.

        The chunk count is `chunks`, else `default_chunks` (the processor's `cfg_chunks`), else the batch size over
        the frame count (`len(frame_ids)` or `num_frames`). In `"windows"` mode it must stay the same for every call
        of a step, since the cached keys and values of the step are laid out by it.

        Raises:
            `ValueError`: the layout is ambiguous (no chunk or frame count), the batch does not split into the chunks
                and frames the state describes, or the chunk count changes within a step in `"windows"` mode.
        """
        self._check_mode()
        frame_ids = None if self.frame_ids is None else tuple(int(frame) for frame in self.frame_ids)
        frames = len(frame_ids) if frame_ids is not None else self.num_frames
        if frame_ids is not None and self.num_frames is not None and self.num_frames != len(frame_ids):
            raise ValueError(f"state.num_frames={self.num_frames} but state.frame_ids lists {len(frame_ids)} frames.")
        chunks = self.chunks if self.chunks is not None else default_chunks
        if chunks is None:
            if frames is None:
                raise ValueError(
                    f"A batch of {batch_size} rows is ambiguous: set `state.num_frames` (frames per guidance chunk), "
                    "`state.frame_ids`, or the number of guidance chunks (`state.chunks` or the processor's "
                    "`cfg_chunks`: 2 with classifier-free guidance, 1 without)."
                )
            if frames < 1 or batch_size % frames:
                raise ValueError(f"A batch of {batch_size} does not hold whole guidance chunks of {frames} frames.")
            chunks = batch_size // frames
        if chunks < 1 or batch_size % chunks:
            raise ValueError(
                f"A batch of {batch_size} does not split into {chunks} guidance chunks: set `chunks` (state) or "
                "`cfg_chunks` (processor) to the number of guidance chunks the pipeline batches (1 without guidance)."
            )
        if frames is not None and chunks * frames != batch_size:
            raise ValueError(
                f"A batch of {batch_size} is not {chunks} guidance chunks of {frames} frames (state.frame_ids or "
                "state.num_frames): set them to the frames of each chunk, and the chunk count to 1 without guidance."
            )
        if self.mode == "windows":
            if frame_ids is None:
                raise ValueError("In 'windows' mode set `state.frame_ids` to the global frame ids of each UNet call.")
            if self.step is not None:
                previous = self._step_chunks
                if previous is not None and previous[0] == self.step and previous[1] != chunks:
                    raise ValueError(
                        f"The batch has {chunks} guidance chunks but earlier calls of step {self.step} had "
                        f"{previous[1]}: in 'windows' mode every call of a step must batch the same chunks "
                        "(the cached keys and values of the step are laid out by them)."
                    )
                self._step_chunks = (self.step, chunks)
        if frame_ids is None:
            return FrameLayout(chunks, tuple(range(batch_size // chunks)))
        if len(set(frame_ids)) != len(frame_ids) or min(frame_ids) < 0:
            raise ValueError(f"state.frame_ids={list(frame_ids)} must list distinct non-negative frame ids.")
        return FrameLayout(chunks, frame_ids)

    def masks_on_grid(self, num_tokens: int, device: torch.device, dtype: torch.dtype) -> GridMasks | None:
        """The masks on the token grid of a layer with `num_tokens` queries, or `None` when no masks are set.

        Worked out once per masks, step, grid, device and dtype, then shared by every layer (and processor) of that
        resolution: the hard-or-soft check reads the masks back to the host once, and each grid is resized once,
        where the masks are (only the resized masks move to `device`).

        Raises:
            `ValueError`: the masks are not `[num_frames, height, width]` floats in [0, 1] (or bools),
                `latent_size` is unset, or no level of the UNet's resolution ladder has `num_tokens` tokens.
        """
        masks = self.masks
        if masks is None:
            return None
        latent_size = None if self.latent_size is None else tuple(self.latent_size)
        seen_as = (None if masks.is_inference() else masks._version, self.step, latent_size)
        if masks is not self._masks_seen or seen_as != self._masks_seen_as:
            if masks.ndim != 3:
                raise ValueError(f"state.masks must be [num_frames, height, width], got shape {tuple(masks.shape)}.")
            if self.latent_size is None:
                raise ValueError("Set `state.latent_size` (the UNet's latent height and width) when setting masks.")
            self._masks_hard = _checked_masks_are_hard(masks)
            self._grid_masks.clear()
            self._masks_seen, self._masks_seen_as = masks, seen_as
        key = (num_tokens, device, dtype)
        if key not in self._grid_masks:
            grid = token_grid(num_tokens, latent_size)
            on_grid = resize_masks(masks, grid, hard=self._masks_hard).flatten(1).to(device=device, dtype=dtype)
            self._grid_masks[key] = GridMasks(on_grid, self._masks_hard)
        return self._grid_masks[key]

    def remember(self, layer: torch.nn.Module, frame: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Caches one frame's keys and values `[chunks, heads, tokens, head_dim]` of `layer` at the current step."""
        self._enter_step()
        self._cache[id(layer), frame] = (key, value)

    def recall(self, layer: torch.nn.Module, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values of `frame` in `layer` at the current step.

        Raises:
            `ValueError`: they are not cached, because windows did not run in lock-step and in frame order.
        """
        self._enter_step()
        if (id(layer), frame) not in self._cache:
            raise ValueError(
                f"Frame {frame} is needed at step {self.step} but neither in this UNet call (frames "
                f"{list(self.frame_ids or [])}) nor cached (cached: {self.cached_frames}). Run windows in lock-step "
                "and in frame order: at each step the window holding frame 0 first, each window right after the one "
                "ending just before it and only once, every window of a step before any window of the next."
            )
        return self._cache[id(layer), frame]

    def forget(self, layer: torch.nn.Module, frame: int) -> None:
        """Drops the cached keys and values of `frame` in `layer`, once no later call of the step needs them."""
        self._cache.pop((id(layer), frame), None)

    def _enter_step(self) -> None:
        if self.step is None:
            raise ValueError("In 'windows' mode set `state.step` before each UNet call.")
        if self.step != self._cache_step:
            self._cache.clear()
            self._cache_step = self.step

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")


def _checked_masks_are_hard(masks: torch.Tensor) -> bool:
    """Whether `masks` holds only 0 and 1, after checking them: `bool`, or floating point with every value in [0, 1].
    Masks outside that range weight keys by negative or above-one amounts, which decoupled attention turns into NaN.
    The facts come back to the host in one transfer."""
    if masks.dtype == torch.bool:
        return True
    if not masks.is_floating_point():
        raise ValueError(
            f"state.masks must be floating point in [0, 1] or bool, got {masks.dtype}; convert 0/255 masks with "
            "`masks.float() / 255`."
        )
    if not masks.numel():
        return True
    hard = ((masks == 0) | (masks == 1)).all()
    low, high, hard = torch.stack([masks.min(), masks.max(), hard.to(masks.dtype)]).tolist()
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(
            f"state.masks must hold values in [0, 1], got values from {low:.9g} to {high:.9g}; clamp soft masks "
            "to [0, 1]."
        )
    return bool(hard)
