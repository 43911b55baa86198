"""Hooks that change a stock diffusers UNet's behaviour: attention processors and UNet input/output hooks.

This package depends on torch and diffusers only; it never imports `zeroshot`.
"""
