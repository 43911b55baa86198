"""Peak memory of a block of work: allocated GPU memory on CUDA, resident memory of the process elsewhere."""

from __future__ import annotations

import threading
import time

import psutil
import torch


class PeakMemory:
    """Measures the peak memory used while the `with` block runs, in bytes (`peak_bytes`, set on exit).

    On CUDA it is the peak of allocated GPU memory above the level at entry (`torch.cuda.max_memory_allocated`); on
    other devices, the peak growth of the process's resident memory over its level at entry, sampled every
    `interval` seconds by a background thread (memory the allocator reuses does not count twice, so small blocks of
    work can read near zero).

    Args:
        device (`torch.device`): where the work runs.

    Example:

    ```py
    >>> with PeakMemory(torch.device("cpu")) as memory:
    ...     big = torch.zeros(10_000_000)
    >>> memory.peak_bytes > 30_000_000
    True
    ```
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._baseline = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss - self._baseline)
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._baseline = self._process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss - self._baseline)
