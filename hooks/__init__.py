"""Hooks that change a stock diffusers UNet's behaviour: attention processors and UNet input/output hooks.

This package depends on torch and diffusers only; it never imports `zeroshot`.
"""

from .all_frame import AllFrameAttnProcessor
from .dual_consistency import DualConsistencyAttnProcessor
from .grid import token_grid
from .install import (
    CROSS_ATTENTION,
    UP_BLOCK_SELF_ATTENTION,
    HookHandle,
    install_attn_processors,
    select_attn_processor_names,
)
from .quadrant_grid import (
    GRID_CHANNEL_ORDER,
    QuadrantGridHook,
    install_quadrant_grid_hook,
    pack_pair,
    pack_quadrant_grid,
    quadrant_grid_input,
    reference_grid,
    unpack_pair,
    unpack_quadrant_grid,
)
from .recorder import CrossAttentionRecorder, attention_maps_to_masks
from .state import CrossFrameState, FrameLayout
from .subject_masks import DOWN_AND_MID_CROSS_ATTENTION, InCallSubjectMasks

__all__ = [
    "CROSS_ATTENTION",
    "DOWN_AND_MID_CROSS_ATTENTION",
    "GRID_CHANNEL_ORDER",
    "UP_BLOCK_SELF_ATTENTION",
    "AllFrameAttnProcessor",
    "CrossAttentionRecorder",
    "CrossFrameState",
    "DualConsistencyAttnProcessor",
    "FrameLayout",
    "HookHandle",
    "InCallSubjectMasks",
    "QuadrantGridHook",
    "attention_maps_to_masks",
    "install_attn_processors",
    "install_quadrant_grid_hook",
    "pack_pair",
    "pack_quadrant_grid",
    "quadrant_grid_input",
    "reference_grid",
    "select_attn_processor_names",
    "token_grid",
    "unpack_pair",
    "unpack_quadrant_grid",
]
