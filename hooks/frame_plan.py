"""Which frames each query frame of a dual-consistency attention call attends, worked out once per batch layout.

A call's plan depends only on its [`~hooks.state.FrameLayout`], the processor's λ and the state's mode, so every
layer of a UNet call shares it, and so does every later call with the same layout (the same window at the next
step). Its index tensors therefore reach the device once per layout, not once per layer: building them from Python
lists is a host-to-device copy that, on a GPU, makes the host wait for the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .state import CrossFrameMode, FrameLayout


def frame_sources(frame: int, lambdas: Sequence[float]) -> dict[int, float]:
    """Source frame -> weight for one query frame: frame 0 attends to itself; frame `i` to frames 0, `i - 1` and `i`
    with weights λ, duplicates merged (frame 1 reads frame 0 twice) and zero weights dropped."""
    if frame == 0:
        return {0: 1.0}
    sources: dict[int, float] = {}
    for source, weight in zip((0, frame - 1, frame), lambdas, strict=True):
        if weight > 0:
            sources[source] = sources.get(source, 0.0) + weight
    return sources


@dataclass(frozen=True, eq=False)
class FramePlan:
    """The (query, source) pairs of one call, as index tensors on the call's device.

    The key bank of a call is the batch's rows followed, in `"windows"` mode, by `chunks` rows per recalled frame.

    Args:
        layout ([`~hooks.state.FrameLayout`]): the call's batch layout.
        remembered (`tuple[tuple[int, int], ...]`): `(position, frame)` of the frames of this call that a later
            call of the same step reads: frame 0 (the anchor) and each frame whose successor is not in this call.
        recalled (`tuple[int, ...]`): frames read from the windows cache, in key-bank order.
        released (`tuple[int, ...]`): recalled frames that no later call of the step reads (each predecessor has one
            successor); the cache drops them after this call.
        query_rows (`torch.Tensor`): `[pairs]` batch row of each pair's query.
        source_rows (`torch.Tensor`): `[pairs]` key-bank row of each pair's keys and values.
        weights (`torch.Tensor`): `[pairs]` weight of each pair, in the call's dtype.
        query_frames (`torch.Tensor`): `[pairs]` global frame id of each pair's query.
        source_frames (`torch.Tensor`): `[pairs]` global frame id of each pair's source.
        decoupled (`torch.Tensor`): `[pairs]` bool, False for frame 0's pairs (never decoupled).
        last_frame (`int`): the highest frame id the call reads.
    """

    layout: FrameLayout
    remembered: tuple[tuple[int, int], ...]
    recalled: tuple[int, ...]
    released: tuple[int, ...]
    query_rows: torch.Tensor
    source_rows: torch.Tensor
    weights: torch.Tensor
    query_frames: torch.Tensor
    source_frames: torch.Tensor
    decoupled: torch.Tensor
    last_frame: int


def build_plan(
    layout: FrameLayout, lambdas: Sequence[float], mode: CrossFrameMode, device: torch.device, dtype: torch.dtype
) -> FramePlan:
    """The plan of a call with `layout` for a processor with weights `lambdas` and a state in `mode`.

    Raises:
        `ValueError`: in `"batch"` mode, a frame that the call attends to is not in its batch.
    """
    present = set(layout.frame_ids)
    needed = {source for frame in layout.frame_ids for source in frame_sources(frame, lambdas)}
    recalled = tuple(sorted(needed - present))
    if recalled and mode == "batch":
        raise ValueError(
            f"Frames {list(recalled)} are attended to but not in the batch (frames {list(layout.frame_ids)}). In "
            "'batch' mode every UNet call must hold frame 0 and each frame's predecessor; run long sequences "
            "in lock-step windows with CrossFrameState(mode='windows')."
        )
    anchor_kept = lambdas[0] > 0
    remembered = tuple(
        (position, frame)
        for position, frame in enumerate(layout.frame_ids)
        if (frame == 0 and anchor_kept) or (frame + 1 not in present and lambdas[1] > 0)
    )
    released = tuple(frame for frame in recalled if not (frame == 0 and anchor_kept))

    batch = layout.chunks * len(layout.frame_ids)
    bank_row: dict[tuple[int, int], int] = {}
    for chunk in range(layout.chunks):
        for position, frame in enumerate(layout.frame_ids):
            bank_row[chunk, frame] = layout.row(chunk, position)
        for index, frame in enumerate(recalled):
            bank_row[chunk, frame] = batch + index * layout.chunks + chunk
    query_rows, source_rows, query_frames, source_frames, weights = [], [], [], [], []
    for chunk in range(layout.chunks):
        for position, frame in enumerate(layout.frame_ids):
            for source, weight in frame_sources(frame, lambdas).items():
                query_rows.append(layout.row(chunk, position))
                source_rows.append(bank_row[chunk, source])
                query_frames.append(frame)
                source_frames.append(source)
                weights.append(weight)
    indices = torch.tensor([query_rows, source_rows, query_frames, source_frames], device=device)
    return FramePlan(
        layout=layout,
        remembered=remembered,
        recalled=recalled,
        released=released,
        query_rows=indices[0],
        source_rows=indices[1],
        weights=torch.tensor(weights, device=device, dtype=dtype),
        query_frames=indices[2],
        source_frames=indices[3],
        decoupled=indices[2] != 0,
        last_frame=max(needed | present),
    )
