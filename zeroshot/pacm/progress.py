"""Progress of a PACM run: tqdm bars for people, and a callback for programs (which may raise to stop the run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tqdm.auto import tqdm

_DESCRIPTIONS = {
    "ddim_inversion": "PACM DDIM inversion",
    "source": "PACM source embeddings",
    "frames": "PACM frame embeddings",
}


@dataclass(frozen=True)
class PACMProgress:
    """One step done.

    Args:
        stage (`str`): `"ddim_inversion"`, `"source"` or `"frames"`.
        step (`int`): 0-based step just finished within the stage (for `"frames"`, within the current chunk).
        num_steps (`int`): steps of the stage (per chunk for `"frames"`).
        frames_done (`int`): target frames finished (computed and stored, or read from the cache) so far.
        num_frames (`int`): target frames in all.
    """

    stage: str
    step: int
    num_steps: int
    frames_done: int
    num_frames: int


class ProgressReporter:
    """Feeds one tqdm bar per stage and the user's callback.

    Args:
        callback (`Callable[[PACMProgress], None]`, *optional*): called after every step; an exception it raises stops
            the run (finished stages and frames stay cached).
        show_bars (`bool`): draw tqdm bars.
        num_frames (`int`): target frames in all.
    """

    def __init__(self, callback: Callable[[PACMProgress], None] | None, show_bars: bool, num_frames: int):
        self.callback = callback
        self.show_bars = show_bars
        self.num_frames = num_frames
        self.frames_done = 0
        self._bar: tqdm | None = None

    def start(self, stage: str, total: int) -> None:
        """Opens the bar of `stage`, whose steps will add up to `total`."""
        self.close()
        self._bar = tqdm(total=total, desc=_DESCRIPTIONS[stage], disable=not self.show_bars, leave=False)

    def step(self, stage: str, step: int, num_steps: int, frames: int = 1) -> None:
        """Reports one finished step of `frames` frames (the bar advances by that many)."""
        if self._bar is not None:
            self._bar.update(frames)
        if self.callback is not None:
            self.callback(PACMProgress(stage, step, num_steps, self.frames_done, self.num_frames))

    def add_frames(self, count: int) -> None:
        """Counts `count` more finished frames."""
        self.frames_done += count

    def close(self) -> None:
        """Closes the open bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
