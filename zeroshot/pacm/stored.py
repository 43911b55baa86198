"""Per-frame pose-aware embeddings left in PACM's cache files and read a window of frames at one step at a time, so
that host memory does not grow with the length of the sequence."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from safetensors import safe_open


class StoredFrameEmbeddings:
    """The frames' embeddings `[F, T, L, D]` (float32) as they lie in their cache files, one file per frame.

    Indexing with `[frame_indices, step]` reads the rows of those frames at that step, and nothing else, from the
    files (memory-mapped by safetensors); it is what [`~zeroshot.pacm.PACMResult.step_embeddings`] does. At Stable
    Diffusion 1.5's 50 steps a frame's embeddings take 11.8 MB, so a window of 16 frames reads 3.8 MB per step
    instead of the whole sequence staying in memory (1.5 GB for 128 frames).

    Args:
        paths (`Sequence[str | os.PathLike]`): the cache file of each frame, in frame order; each holds
            `"embeddings"` `[T, L, D]`.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [str(path) for path in paths]
        if not self.paths:
            raise ValueError("StoredFrameEmbeddings needs at least one frame's file.")
        with safe_open(self.paths[0], framework="pt") as file:
            self._step_shape = tuple(file.get_slice("embeddings").get_shape())

    @property
    def shape(self) -> torch.Size:
        """`[F, T, L, D]`."""
        return torch.Size([len(self.paths), *self._step_shape])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: tuple[torch.Tensor | Sequence[int], int]) -> torch.Tensor:
        """The embeddings `[len(frames), L, D]` of `frames` at `step`, on the CPU, for `index = (frames, step)`."""
        frames, step = index
        rows = []
        for frame in torch.as_tensor(frames).tolist():
            with safe_open(self.paths[frame], framework="pt") as file:
                rows.append(file.get_slice("embeddings")[step])
        return torch.stack(rows).float()
