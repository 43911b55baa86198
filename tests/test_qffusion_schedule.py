"""Frame orders for Qffusion. QGP is checked against the paper's Algorithm 1, written here again with exact fractions
(a queue of `[start, interval]`, rounding down only to name frames), and against the indices Sec. 4.3 prints; every
length gets the fewest grids possible, none of them wasting a tile unless `N - 2` is odd; the naive order."""

from collections import deque
from fractions import Fraction
from math import floor

import pytest

from zeroshot.qffusion.schedule import build_schedule, naive_schedule, qgp_schedule


def paper_recursion(num_frames):
    """Algorithm 1 of the paper: grids `[i, i + k/3, i + 2k/3, i + k]` from a queue of `[i, k]`, breadth first, the
    positions exact and rounded down; a segment continues while its grid has four different frames. Returns the grids
    of each level."""
    levels = {}
    queue = deque([(Fraction(0), Fraction(num_frames - 1), 0)])
    while queue:
        start, interval, level = queue.popleft()
        frames = tuple(floor(start + interval * j / 3) for j in range(4))
        if len(set(frames)) < 4:
            continue
        levels.setdefault(level, []).append(frames)
        for j in range(3):
            queue.append((start + interval * j / 3, interval / 3, level + 1))
    return [levels[level] for level in sorted(levels)]


def check_coverage_and_references(schedule):
    """Every middle frame generated exactly once, from references known before their wave; frames ordered."""
    last = schedule.num_frames - 1
    known = {0, last}
    generated = []
    for wave in schedule.waves:
        made_in_wave = []
        for grid in wave:
            a, b, c, d = grid.frames
            assert 0 <= a < b <= c < d <= last, grid
            assert a in known and d in known, f"references of {grid} not generated yet"
            made_in_wave += grid.generated
        known.update(made_in_wave)
        generated += made_in_wave
    assert sorted(generated) == list(range(1, last)), "each middle frame exactly once"


@pytest.mark.parametrize("num_frames", range(2, 201))
def test_qgp_is_the_papers_recursion_plus_lone_frames_paired_without_waste(num_frames):
    schedule = qgp_schedule(num_frames)
    check_coverage_and_references(schedule)
    paper = paper_recursion(num_frames)
    waves = [[grid.frames for grid in wave] for wave in schedule.waves]
    for level, grids in enumerate(paper):  # every grid of the paper, in the wave of its level
        assert set(grids) <= set(waves[level]), (level, grids, waves[level])
    papers = {frames for grids in paper for frames in grids}
    others = [grid for grid in schedule.grids if grid.frames not in papers]
    lone = set(range(1, num_frames - 1)) - {frame for frames in papers for frame in frames}
    assert {frame for grid in others for frame in grid.generated} == lone
    for grid in others:  # lone frames: each next to both of its references
        a, b, c, d = grid.frames
        assert (b - a, d - c) == (1, 1) or grid.keep != (True, True), grid
    # the fewest grids possible; a tile wasted only where N - 2 is odd, and then once
    assert len(schedule) == (num_frames - 1) // 2
    wasted = [grid for grid in schedule.grids if grid.keep != (True, True)]
    assert len(wasted) == (num_frames - 2) % 2
    if num_frames in {3**n + 1 for n in range(1, 5)}:  # the lengths the paper covers: exactly its order
        assert waves == paper and not others


@pytest.mark.parametrize("num_frames", [10, 11, 12, 15, 19, 28, 37, 50, 82, 100, 200])
def test_qgp_uses_the_indices_the_paper_prints(num_frames):
    """Sec. 4.3: [0, K/3, 2K/3, K], then [0, K/9, 2K/9, K/3], [K/3, 4K/9, 5K/9, 2K/3], [2K/3, 7K/9, 8K/9, K], rounded
    down."""
    k = num_frames - 1
    waves = [[grid.frames for grid in wave] for wave in qgp_schedule(num_frames).waves]
    assert waves[0] == [(0, k // 3, 2 * k // 3, k)]
    second = [
        (0, k // 9, 2 * k // 9, k // 3),
        (k // 3, 4 * k // 9, 5 * k // 9, 2 * k // 3),
        (2 * k // 3, 7 * k // 9, 8 * k // 9, k),
    ]
    assert set(second) <= set(waves[1])


def test_qgp_examples():
    # Appendix A: 82 frames
    waves = [[grid.frames for grid in wave] for wave in qgp_schedule(82).waves]
    assert waves[:2] == [[(0, 27, 54, 81)], [(0, 9, 18, 27), (27, 36, 45, 54), (54, 63, 72, 81)]]
    assert [len(wave) for wave in waves] == [1, 3, 9, 27]
    assert all(grid.spacings == (1, 1, 1) for grid in qgp_schedule(82).waves[3])
    # 15 frames: the paper's (0, 1, 3, 4), not (0, 1, 2, 4); lone frames 2, 5, 8, 11, 13: 5 and 8 share a grid as
    # soon as 4 and 9 are known, 11 and 13 once 10 is; 2 is left over and regenerates 3 for context
    assert [[(g.frames, g.keep) for g in wave] for wave in qgp_schedule(15).waves] == [
        [((0, 4, 9, 14), (True, True))],
        [((0, 1, 3, 4), (True, True)), ((4, 5, 8, 9), (True, True)), ((4, 6, 7, 9), (True, True)),
         ((9, 10, 12, 14), (True, True))],
        [((1, 2, 3, 4), (True, False)), ((10, 11, 13, 14), (True, True))],
    ]  # fmt: skip
    # 100 frames: 49 grids, none regenerating a known frame (before: 58, 18 of them wasting a tile)
    assert len(qgp_schedule(100)) == 49
    assert [g.frames for g in qgp_schedule(4).grids] == [(0, 1, 2, 3)]
    (only,) = qgp_schedule(3).grids
    assert only.frames == (0, 1, 1, 2) and only.keep == (True, False)
    # 5 frames: frame 3 is left over at the end of the video and regenerates frame 2 for context
    assert [(g.frames, g.keep) for g in qgp_schedule(5).grids] == [
        ((0, 1, 2, 4), (True, True)),
        ((1, 2, 3, 4), (False, True)),
    ]


def test_the_leftover_lone_frame_keeps_paired_frames_close():
    # 7 frames: lone 1, 3, 5; leaving out 3 would pair 1 with 5 (4 apart), leaving out 1 or 5 pairs frames 2 apart
    waves = [[(g.frames, g.keep) for g in wave] for wave in qgp_schedule(7).waves]
    assert waves == [[((0, 2, 4, 6), (True, True))], [((2, 3, 5, 6), (True, True))], [((0, 1, 2, 3), (True, False))]]


@pytest.mark.parametrize("num_frames", [2, 3, 4, 9, 10, 57])
def test_naive_order(num_frames):
    schedule = naive_schedule(num_frames)
    check_coverage_and_references(schedule)
    last = num_frames - 1
    assert len(schedule.waves) <= 1
    assert all(grid.references == (0, last) for grid in schedule.grids)
    assert [grid.frames[1] for grid in schedule.grids] == list(range(1, (num_frames - 2 + 1) // 2 + 1))
    assert all(grid.frames[1] + grid.frames[2] == last for grid in schedule.grids)


def test_build_schedule_rejects_bad_input():
    assert build_schedule(10, "naive").kind == "naive"
    with pytest.raises(ValueError, match="Unknown schedule 'spiral'"):
        build_schedule(10, "spiral")
    with pytest.raises(ValueError, match="at least 2 frames"):
        qgp_schedule(1)


def test_benchmark_table_of_schedules(capsys):
    from zeroshot.bench.qffusion import print_schedules

    print_schedules()
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()[2:]}
    # frames, schedule -> grids, waves, grids wasting a tile, UNet evaluations (25 steps), calls (batches of 8)
    assert rows[("100", "qgp")] == ["49", "5", "0", "1225", "250"]
    assert rows[("100", "naive")] == ["49", "1", "0", "1225", "175"]
    assert rows[("100", "qgp-before")] == ["58", "5", "18", "1450", "275"]
