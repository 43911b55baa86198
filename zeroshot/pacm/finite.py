"""Stopping cleanly on NaN or infinite values, naming the stage and step where they appeared."""

from __future__ import annotations

import torch

from ..errors import ZeroshotError


def ensure_finite(tensor: torch.Tensor, what: str, stage: str, step: int, num_steps: int) -> None:
    """Raises when `tensor` holds a NaN or an infinity.

    Args:
        tensor (`torch.Tensor`): the values to check (this synchronises with the device).
        what (`str`): what the values are, e.g. `"loss"` or `"latents"`.
        stage (`str`): the PACM stage, e.g. `"source"`.
        step (`int`): the sampling or inversion step (0-based; shown 1-based).
        num_steps (`int`): the stage's number of steps.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the values are not all finite.
    """
    if not bool(torch.isfinite(tensor).all()):
        raise ZeroshotError(
            f"PACM stage {stage!r} produced non-finite {what} (NaN or infinity) at step {step + 1} of {num_steps}. "
            "Finished stages stay cached. Try a lower learning rate, --dtype fp32 (half precision can overflow), or "
            "check that the source image and poses are valid."
        )
