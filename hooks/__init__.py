"""Hooks that change a stock diffusers UNet's behaviour: attention processors and UNet input/output hooks.

This package depends on torch and diffusers only; it never imports `zeroshot`.
"""

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

__all__ = [
    "CROSS_ATTENTION",
    "GRID_CHANNEL_ORDER",
    "UP_BLOCK_SELF_ATTENTION",
    "HookHandle",
    "QuadrantGridHook",
    "install_attn_processors",
    "install_quadrant_grid_hook",
    "pack_pair",
    "pack_quadrant_grid",
    "quadrant_grid_input",
    "reference_grid",
    "select_attn_processor_names",
    "unpack_pair",
    "unpack_quadrant_grid",
]
