"""Counting UNet evaluations (forward and backward, per latent) and wall time, stage by stage.

One *evaluation* is one latent through the UNet, with its ControlNet: a classifier-free-guided step on one latent is
two forward evaluations; a gradient step through the conditional branch of four frames is four forward and four
backward evaluations. These figures are hardware-independent, so they compare modes and settings exactly, and they go
to `report.json` and the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from .settings import STAGES


@dataclass
class StageStats:
    """What one PACM stage cost.

    Args:
        forward (`int`): latents evaluated by the UNet (with its ControlNet) in forward passes.
        backward (`int`): latents back-propagated through the UNet (and ControlNet).
        seconds (`float`): wall time of the stage, cache reads and writes included.
        cached (`bool`): whether the stage was read from the cache as a whole.
        frames_from_cache (`int`): for the frame stage, how many frames were read from the cache.
    """

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0
    cached: bool = False
    frames_from_cache: int = 0

    def to_dict(self) -> dict[str, int | float | bool]:
        """Plain values, for `report.json`."""
        return asdict(self)


class EvaluationCounter:
    """Per-stage [`StageStats`]: forward evaluations are counted as they run, backward ones by a gradient hook on the
    UNet's output, so a backward pass is counted when (and only when) gradients actually flow through the UNet.

    Example:

    ```py
    >>> counter = EvaluationCounter()
    >>> with counter.stage("source"):
    ...     ...  # ControlledDenoiser(components, counter) calls count here
    >>> counter.stats["source"].forward
    ```

    Args:
        stages (`tuple[str, ...]`, *optional*, defaults to PACM's `STAGES`): the names of the stages counted.
    """

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.stats: dict[str, StageStats] = {stage: StageStats() for stage in stages}
        self._current: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[StageStats]:
        """Attributes evaluations inside the block to stage `name` and adds the block's wall time to it."""
        if name not in self.stats:
            raise ValueError(f"Unknown stage {name!r}; stages are {tuple(self.stats)}.")
        previous, self._current = self._current, name
        start = time.perf_counter()
        try:
            yield self.stats[name]
        finally:
            self.stats[name].seconds += time.perf_counter() - start
            self._current = previous

    def _active(self) -> StageStats:
        if self._current is None:
            raise RuntimeError("UNet evaluations must run inside `EvaluationCounter.stage(...)`.")
        return self.stats[self._current]

    def count(self, output: torch.Tensor) -> None:
        """Records one forward pass that produced `output` (batch first), and its backward pass if there is one."""
        stats = self._active()
        batch = output.shape[0]
        stats.forward += batch
        if output.requires_grad:

            def count_backward(grad: torch.Tensor) -> None:
                stats.backward += batch

            output.register_hook(count_backward)

    def to_dict(self) -> dict[str, dict[str, int | float | bool]]:
        """`{stage: {"forward": ..., "backward": ..., "seconds": ..., ...}}`, for `report.json`."""
        return {name: stats.to_dict() for name, stats in self.stats.items()}
