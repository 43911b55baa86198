"""The order in which Qffusion generates the frames of a video: quadrant-grid propagation (QGP) and the naive order.

A Qffusion UNet generates two frames at a time (tiles b and c of a quadrant grid) from two known frames (tiles a and
d). Given the first and last frames of a video of `N` frames, a *schedule* lists the grids `(a, b, c, d)` that fill in
the frames `1 .. N - 2`, grouped in *waves*: every reference of a grid is known before its wave starts (a given frame,
or one generated in an earlier wave), so the grids of one wave are independent and run as one batch.

QGP (paper Sec. 4.3 and Appendix A) fills a *segment* between two known frames `s < e` by recursive trisection. With
`g = e - s` and `m = g - 1` frames missing in between:

- `m = 0`: nothing to do.
- `m >= 2`: one grid `(s, s + floor(g / 3), s + floor(2g / 3), e)`, the paper's indices: its three spacings differ by
  at most one frame. Its three sub-segments are filled in the next wave. (`m = 2` is the grid `(s, s+1, s+2, s+3)`.)
- `m = 1` (one frame `x = s + 1` missing between `s` and `e = s + 2`): a grid needs two new frames, so these lone
  frames wait until every other frame is known and are then filled in two final waves:

  1. lone frames two apart (`x` and `x + 2`, which share the known frame `x + 1`) are paired left to right into the
     grid `(x - 1, x, x + 2, x + 3)`, spacings (1, 2, 1);
  2. a lone frame left over uses the grid `(x - 1, x, x + 1, x + 2)` (or `(x - 2, x - 1, x, x + 1)` at the end of
     the video), spacings (1, 1, 1): the known frame in the other generated tile is regenerated for context and its
     output discarded. A 3-frame video has no such neighbour: its one middle frame fills both generated tiles,
     `(0, 1, 1, 2)`, and tile c's output is discarded.

The paper's pseudo-code covers only `N = 3^n + 1` (where every segment splits evenly down to `m = 2`); the rules
above give every `N >= 2` a schedule in which each missing frame is generated exactly once.

The naive order (paper Sec. 4.3) keeps the first and last frames as the references of every grid and generates
`(1, N - 2), (2, N - 3), ...` inwards; all its grids form one wave. When `N - 2` is odd, the middle frame fills both
generated tiles of the last grid and tile c's output is discarded.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Names of the frame orders [`build_schedule`] knows.
SCHEDULES = ("qgp", "naive")


@dataclass(frozen=True)
class QuadrantGridFrames:
    """The frames of one quadrant grid.

    Args:
        frames (`tuple[int, int, int, int]`): frame indices of tiles a, b, c, d; a and d are references, b and c are
            generated (a <= b <= c <= d).
        keep (`tuple[bool, bool]`, *optional*, defaults to `(True, True)`): whether tile b's and tile c's outputs
            become those frames; `False` for a tile that only gives the grid its context (a frame known already, or a
            duplicate).
    """

    frames: tuple[int, int, int, int]
    keep: tuple[bool, bool] = (True, True)

    @property
    def references(self) -> tuple[int, int]:
        """Frames of tiles a and d."""
        return self.frames[0], self.frames[3]

    @property
    def generated(self) -> tuple[int, ...]:
        """Frames whose outputs this grid provides."""
        return tuple(frame for frame, kept in zip(self.frames[1:3], self.keep, strict=True) if kept)

    @property
    def spacings(self) -> tuple[int, int, int]:
        """Frame distances b - a, c - b, d - c."""
        a, b, c, d = self.frames
        return b - a, c - b, d - c


@dataclass(frozen=True)
class PropagationSchedule:
    """The grids that generate frames `1 .. num_frames - 2` from frames `0` and `num_frames - 1`, in waves.

    Args:
        num_frames (`int`): frames of the video, the two references included.
        waves (`tuple[tuple[QuadrantGridFrames, ...], ...]`): grids in the order they run; a grid's references are
            known before its wave starts.
        kind (`str`): `"qgp"` or `"naive"`.
    """

    num_frames: int
    waves: tuple[tuple[QuadrantGridFrames, ...], ...]
    kind: str

    @property
    def grids(self) -> list[QuadrantGridFrames]:
        """Every grid, wave after wave."""
        return [grid for wave in self.waves for grid in wave]

    def __len__(self) -> int:
        return sum(len(wave) for wave in self.waves)


def _check_num_frames(num_frames: int) -> None:
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"A schedule needs at least 2 frames (the two references), got {num_frames!r}.")


def _trisect(start: int, end: int) -> QuadrantGridFrames:
    gap = end - start
    return QuadrantGridFrames((start, start + gap // 3, start + 2 * gap // 3, end))


def _lone_frame_waves(lone: list[int], last: int) -> list[tuple[QuadrantGridFrames, ...]]:
    """Grids for frames whose both neighbours are known: adjacent ones (two apart) in pairs, then the rest."""
    pairs, singles = [], []
    index = 0
    while index < len(lone):
        frame = lone[index]
        if index + 1 < len(lone) and lone[index + 1] == frame + 2:
            pairs.append(QuadrantGridFrames((frame - 1, frame, frame + 2, frame + 3)))
            index += 2
        else:
            singles.append(frame)
            index += 1
    single_grids = []
    for frame in singles:
        if frame + 2 <= last:
            single_grids.append(QuadrantGridFrames((frame - 1, frame, frame + 1, frame + 2), keep=(True, False)))
        elif frame - 2 >= 0:
            single_grids.append(QuadrantGridFrames((frame - 2, frame - 1, frame, frame + 1), keep=(False, True)))
        else:
            single_grids.append(QuadrantGridFrames((frame - 1, frame, frame, frame + 1), keep=(True, False)))
    return [wave for wave in (tuple(pairs), tuple(single_grids)) if wave]


def qgp_schedule(num_frames: int) -> PropagationSchedule:
    """Quadrant-grid propagation for a video of `num_frames` frames (any number from 2).

    Args:
        num_frames (`int`): frames of the video, the first and last (the references) included.

    Returns:
        [`PropagationSchedule`]: the grids in waves; see the module documentation for the rules.

    Example:

    ```py
    >>> [[grid.frames for grid in wave] for wave in qgp_schedule(10).waves]
    [[(0, 3, 6, 9)], [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]]
    ```
    """
    _check_num_frames(num_frames)
    last = num_frames - 1
    waves: list[tuple[QuadrantGridFrames, ...]] = []
    lone: list[int] = []
    segments = [(0, last)]
    while segments:
        wave, next_segments = [], []
        for start, end in segments:
            missing = end - start - 1
            if missing == 1:
                lone.append(start + 1)
            elif missing >= 2:
                grid = _trisect(start, end)
                wave.append(grid)
                a, b, c, d = grid.frames
                next_segments += [(a, b), (b, c), (c, d)]
        if wave:
            waves.append(tuple(wave))
        segments = next_segments
    waves += _lone_frame_waves(sorted(lone), last)
    return PropagationSchedule(num_frames, tuple(waves), "qgp")


def naive_schedule(num_frames: int) -> PropagationSchedule:
    """The naive order: every grid takes the first and last frames as references, `(0, i, N-1-i, N-1)` for
    `i = 1, 2, ...`, all in one wave.

    Args:
        num_frames (`int`): frames of the video, the first and last included.
    """
    _check_num_frames(num_frames)
    last = num_frames - 1
    grids = []
    for frame in range(1, num_frames // 2 + num_frames % 2):
        mirror = last - frame
        keep = (True, mirror != frame)
        grids.append(QuadrantGridFrames((0, frame, mirror, last), keep=keep))
    return PropagationSchedule(num_frames, (tuple(grids),) if grids else (), "naive")


def build_schedule(num_frames: int, kind: str = "qgp") -> PropagationSchedule:
    """The schedule of `kind` (`"qgp"` or `"naive"`) for `num_frames` frames."""
    if kind == "qgp":
        return qgp_schedule(num_frames)
    if kind == "naive":
        return naive_schedule(num_frames)
    raise ValueError(f"Unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
