"""Hooks that change a stock diffusers UNet's behaviour: attention processors and UNet input/output hooks.

This package depends on torch and diffusers only; it never imports `zeroshot`.
"""

from .grid import token_grid
from .install import (
    CROSS_ATTENTION,
    UP_BLOCK_SELF_ATTENTION,
    HookHandle,
    install_attn_processors,
    select_attn_processor_names,
)
from .recorder import CrossAttentionRecorder, attention_maps_to_masks

__all__ = [
    "CROSS_ATTENTION",
    "UP_BLOCK_SELF_ATTENTION",
    "CrossAttentionRecorder",
    "HookHandle",
    "attention_maps_to_masks",
    "install_attn_processors",
    "select_attn_processor_names",
    "token_grid",
]
