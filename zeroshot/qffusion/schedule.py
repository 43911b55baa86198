"""The order in which Qffusion generates the frames of a video: quadrant-grid propagation (QGP) and the naive order.

A Qffusion UNet generates two frames at a time (tiles b and c of a quadrant grid) from two known frames (tiles a and
d). Given the first and last frames of a video of `N = K + 1` frames (indices `0 .. K`), a *schedule* lists the grids
`(a, b, c, d)` that fill in the frames `1 .. K - 1`, grouped in *waves*: every reference of a grid is known before its
wave starts (a given frame, or one generated in an earlier wave), so the grids of one wave are independent and run as
one batch.

QGP (paper Sec. 4.3 and Appendix A, Algorithm 1) trisects the video recursively. At level `L = 1, 2, ...` its frames
are the paper's indices `p_L(i) = floor(i * K / 3^L)`: level 1 is `[0, floor(K/3), floor(2K/3), K]`, level 2
`[0, floor(K/9), floor(2K/9), floor(K/3)]`, `[floor(K/3), floor(4K/9), floor(5K/9), floor(2K/3)]`, ... (Sec. 4.3
prints both). A segment `p_{L-1}(j) .. p_{L-1}(j + 1)` of a level is

- three or more frames apart (`g >= 3`): the grid `(p_L(3j), p_L(3j + 1), p_L(3j + 2), p_L(3j + 3))`, in wave `L - 1`;
  its two generated frames are new and distinct, its three spacings differ by at most one frame, and its three
  sub-segments are those of level `L + 1`;
- two frames apart: its middle frame is a *lone frame*, whose both neighbours are known;
- one frame apart: complete.

For `N = 3^n + 1` every segment splits evenly down to `(s, s + 1, s + 2, s + 3)` and QGP is exactly the paper's
example (82 frames: `(0, 27, 54, 81)`, then `(0, 9, 18, 27)`, `(27, 36, 45, 54)`, `(54, 63, 72, 81)`, ...). Other
lengths leave lone frames, which the paper does not cover. No grid wastes a tile on them: they are paired in frame
order, `x < y` into `(x - 1, x, y, y + 1)`, each pair in the first wave after which both references are known
(usually a few frames apart; near `N = 3^n + 1`, where lone frames are few, they can be far apart). When the
number of lone frames is odd (exactly when `N - 2` is odd, so some grid must regenerate a frame), the one left over is
chosen so that the largest distance between paired frames (then their sum) is smallest, and gets the grid
`(x - 1, x, x + 1, x + 2)` (or `(x - 2, x - 1, x, x + 1)` at the end of the video), whose other generated tile only
gives context and is discarded; a 3-frame video has no such neighbour, and its one middle frame fills both generated
tiles, `(0, 1, 1, 2)`. Every QGP schedule thus has the fewest grids possible, `ceil((N - 2) / 2)`.

The naive order (paper Sec. 4.3) keeps the first and last frames as the references of every grid and generates
`(1, N - 2), (2, N - 3), ...` inwards; all its grids form one wave. When `N - 2` is odd, the middle frame fills both
generated tiles of the last grid and tile c's output is discarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

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


def _paper_index(index: int, level: int, last: int) -> int:
    """The paper's frame index `floor(index * K / 3^level)`, `K` the last frame."""
    return index * last // 3**level


def _trisection_levels(last: int) -> tuple[list[list[QuadrantGridFrames]], list[int]]:
    """The trisection grids of every level (level 1 first) and the lone frames they leave (see the module)."""
    levels, lone = [], []
    segments = [0]  # segment j of the previous level: frames p(j) .. p(j + 1)
    level = 0
    while segments:
        level += 1
        grids, next_segments = [], []
        for j in segments:
            start, end = _paper_index(j, level - 1, last), _paper_index(j + 1, level - 1, last)
            if end - start >= 3:
                frames = tuple(_paper_index(3 * j + tile, level, last) for tile in range(4))
                grids.append(QuadrantGridFrames(frames))
                next_segments += [3 * j, 3 * j + 1, 3 * j + 2]
            elif end - start == 2:
                lone.append(start + 1)
        if grids:
            levels.append(grids)
        segments = next_segments
    return levels, sorted(lone)


def _leftover(lone: list[int]) -> int | None:
    """Position in `lone` of the frame left unpaired when their number is odd: the one whose removal leaves
    consecutive pairs with the smallest largest distance, then the smallest total distance (the earliest on a tie)."""
    if len(lone) % 2 == 0:
        return None
    pairs = len(lone) // 2
    # leaving out position 2k pairs (0, 1) .. (2k - 2, 2k - 1) on its left and (2k + 1, 2k + 2) .. on its right
    left = [lone[2 * i + 1] - lone[2 * i] for i in range(pairs)]
    right = [lone[2 * i + 2] - lone[2 * i + 1] for i in range(pairs)]
    left_max, left_sum = [0, *accumulate(left, max)], [0, *accumulate(left)]
    right_max = [*accumulate(right[::-1], max)][::-1] + [0]
    right_sum = [*accumulate(right[::-1])][::-1] + [0]
    costs = [(max(left_max[k], right_max[k]), left_sum[k] + right_sum[k]) for k in range(pairs + 1)]
    return 2 * costs.index(min(costs))


def _lone_frame_grids(lone: list[int], last: int) -> list[QuadrantGridFrames]:
    """Grids for the lone frames: consecutive ones in pairs, one left over when their number is odd."""
    left_out = _leftover(lone)
    paired = [frame for position, frame in enumerate(lone) if position != left_out]
    grids = [QuadrantGridFrames((x - 1, x, y, y + 1)) for x, y in zip(paired[::2], paired[1::2], strict=True)]
    if left_out is not None:
        x = lone[left_out]
        if x + 2 <= last:
            grids.append(QuadrantGridFrames((x - 1, x, x + 1, x + 2), keep=(True, False)))
        elif x - 2 >= 0:
            grids.append(QuadrantGridFrames((x - 2, x - 1, x, x + 1), keep=(False, True)))
        else:
            grids.append(QuadrantGridFrames((x - 1, x, x, x + 1), keep=(True, False)))
    return grids


def qgp_schedule(num_frames: int) -> PropagationSchedule:
    """Quadrant-grid propagation for a video of `num_frames` frames (any number from 2), at the paper's indices.

    Args:
        num_frames (`int`): frames of the video, the first and last (the references) included.

    Returns:
        [`PropagationSchedule`]: the grids in waves; see the module documentation for the rules.

    Example:

    ```py
    >>> [[grid.frames for grid in wave] for wave in qgp_schedule(10).waves]
    [[(0, 3, 6, 9)], [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]]
    >>> [[grid.frames for grid in wave] for wave in qgp_schedule(15).waves]
    [[(0, 4, 9, 14)], [(0, 1, 3, 4), (4, 6, 7, 9), (9, 10, 12, 14)], [(1, 2, 3, 4), (7, 8, 10, 11)]]
    ```
    """
    _check_num_frames(num_frames)
    last = num_frames - 1
    levels, lone = _trisection_levels(last)
    known_after = {0: -1, last: -1}  # the wave after which a frame is known; -1 for the references
    waves: list[list[QuadrantGridFrames]] = []
    for wave, grids in enumerate(levels):
        waves.append(list(grids))
        known_after.update({frame: wave for grid in grids for frame in grid.generated})
    # a pair's generated frames are lone, so no reference depends on them; a leftover's reference may be paired
    for grid in _lone_frame_grids(lone, last):
        wave = max(known_after[frame] for frame in grid.references) + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(grid)
        known_after.update({frame: wave for frame in grid.generated})
    return PropagationSchedule(num_frames, tuple(tuple(sorted(wave, key=lambda g: g.frames)) for wave in waves), "qgp")


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
