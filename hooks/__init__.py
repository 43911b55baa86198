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

__all__ = [
    "CROSS_ATTENTION",
    "UP_BLOCK_SELF_ATTENTION",
    "HookHandle",
    "install_attn_processors",
    "select_attn_processor_names",
]
