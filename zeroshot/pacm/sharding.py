"""Sharding the per-frame optimisation across processes (one per GPU) with accelerate, and gathering the results.

Under `accelerate launch` (or `torchrun`), pass the script's `accelerate.PartialState()` to
[`~zeroshot.pacm.run_pacm`]: the main process runs the two source stages (or reads them from the cache) and shares
them, every process optimises its own contiguous share of the pending frames, and the per-frame results are gathered
so that every process returns the full result. Without a state, or with one process, nothing is communicated.
"""

from __future__ import annotations

from typing import TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

T = TypeVar("T")


class FrameSharding:
    """Splits work across the processes of `state` (a single process when `state` is `None`).

    Args:
        state (`accelerate.PartialState`, *optional*): the distributed state of the running script.
    """

    def __init__(self, state: PartialState | None = None):
        self.state = state if state is not None and state.num_processes > 1 else None

    @property
    def num_processes(self) -> int:
        return 1 if self.state is None else self.state.num_processes

    @property
    def is_main_process(self) -> bool:
        return self.state is None or self.state.is_main_process

    def broadcast(self, value: T) -> T:
        """The main process's `value`, on every process (CPU tensors travel pickled)."""
        if self.state is None:
            return value
        return broadcast_object_list([value], from_process=0)[0]

    def split(self, items: list[T]) -> list[T]:
        """This process's contiguous share of `items` (every process must pass the same list)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(items) as share:
            return list(share)

    def gather(self, items: list[T]) -> list[T]:
        """Every process's `items`, concatenated in process order, on every process."""
        if self.state is None:
            return list(items)
        return gather_object(items)
