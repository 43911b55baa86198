"""Measuring speed and memory side by side, for `scripts/benchmark.py`.

Ratios are only meaningful when both sides run under the same conditions, so [`compare`] runs its candidates in
interleaved rounds (A, B, A, B, ...) in one process and reports medians: a slow spell of the machine hits every
candidate alike. Tests never time anything; speed lives here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..memory import PeakMemory


@dataclass
class Measurement:
    """Median wall time and peak memory of one candidate.

    Args:
        seconds (`float`): median wall time of one call.
        peak_memory_bytes (`int`): on CUDA, peak allocated GPU memory during a call; on the CPU, peak growth of the
            process's resident memory over its level before the call (sampled every 2 ms).
    """

    seconds: float
    peak_memory_bytes: int


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_call(fn: Callable[[], object], device: torch.device) -> tuple[float, int]:
    synchronize(device)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        fn()
        synchronize(device)
        elapsed = time.perf_counter() - start
    return elapsed, memory.peak_bytes


def compare(
    candidates: dict[str, Callable[[], object]], device: torch.device, *, rounds: int = 5, warmup: int = 1
) -> dict[str, Measurement]:
    """Times each candidate in interleaved rounds and returns the median time and the peak memory of each.

    Args:
        candidates (`dict[str, Callable]`): name -> zero-argument function doing one unit of work.
        device (`torch.device`): where the work runs (GPU work is synchronised before the clock stops).
        rounds (`int`, *optional*, defaults to 5): timed calls per candidate.
        warmup (`int`, *optional*, defaults to 1): untimed calls per candidate first.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    memory: dict[str, int] = dict.fromkeys(candidates, 0)
    for _ in range(rounds):
        for name, fn in candidates.items():
            seconds, peak = _one_call(fn, device)
            times[name].append(seconds)
            memory[name] = max(memory[name], peak)
    return {name: Measurement(statistics.median(times[name]), memory[name]) for name in candidates}


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned columns; floats are shown with 3 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [[cell(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ["  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    """One line naming the hardware, for the top of a benchmark's output."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"
