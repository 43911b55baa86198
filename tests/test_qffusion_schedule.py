"""Frame orders for Qffusion: QGP for every length covers each frame once, from references that already exist, with
spacing as even as possible; the paper's own example; the naive order."""

import pytest

from zeroshot.qffusion.schedule import build_schedule, naive_schedule, qgp_schedule


def _check_coverage_and_references(schedule):
    """Every middle frame generated exactly once; references known before their wave; frames in range and ordered."""
    last = schedule.num_frames - 1
    known = {0, last}
    generated = []
    for wave in schedule.waves:
        made_in_wave = []
        for grid in wave:
            a, b, c, d = grid.frames
            assert 0 <= a < b <= c < d <= last, grid
            assert a in known and d in known, f"references of {grid} not generated yet"
            for frame, kept in zip((b, c), grid.keep, strict=True):
                if kept:
                    made_in_wave.append(frame)
                else:
                    assert frame in known or frame == b, f"{grid} discards a frame that is not a duplicate or known"
        known.update(made_in_wave)
        generated += made_in_wave
    assert sorted(generated) == list(range(1, last)), "each middle frame exactly once"
    assert len(generated) == len(set(generated))


@pytest.mark.parametrize("num_frames", range(2, 201))
def test_qgp_every_length(num_frames):
    schedule = qgp_schedule(num_frames)
    _check_coverage_and_references(schedule)
    for grid in schedule.grids:
        a, _, _, d = grid.frames
        spacings = grid.spacings
        # as even as possible: three spacings summing to d - a differ by at most one, and by none when 3 divides it
        assert max(spacings) - min(spacings) == (0 if (d - a) % 3 == 0 else 1), grid
        if num_frames > 3:
            assert min(spacings) >= 1, grid
    # at most one wasted tile per grid, and only where a lone frame has no partner
    assert len(schedule) <= num_frames - 2


def test_qgp_reproduces_the_papers_82_frame_example():
    """Appendix A: 82 frames -> (0, 27, 54, 81), then (0, 9, 18, 27), (27, 36, 45, 54), (54, 63, 72, 81), ..."""
    waves = [[grid.frames for grid in wave] for wave in qgp_schedule(82).waves]
    assert waves[0] == [(0, 27, 54, 81)]
    assert waves[1] == [(0, 9, 18, 27), (27, 36, 45, 54), (54, 63, 72, 81)]
    assert len(waves) == 4 and [len(wave) for wave in waves] == [1, 3, 9, 27]
    assert all(grid.spacings == (1, 1, 1) for grid in qgp_schedule(82).waves[3])
    assert all(grid.keep == (True, True) for grid in qgp_schedule(82).grids)


def test_qgp_short_gap_rules():
    # two frames missing: one grid, spacings (1, 1, 1)
    assert [g.frames for g in qgp_schedule(4).grids] == [(0, 1, 2, 3)]
    # one frame missing in a 3-frame video: the frame fills both generated tiles, tile c discarded
    (only,) = qgp_schedule(3).grids
    assert only.frames == (0, 1, 1, 2) and only.keep == (True, False)
    # 7 frames: trisection (0, 2, 4, 6) leaves frames 1, 3, 5 alone; 1 and 3 pair up, 5 regenerates 4 for context
    waves = [[(g.frames, g.keep) for g in wave] for wave in qgp_schedule(7).waves]
    assert waves == [
        [((0, 2, 4, 6), (True, True))],
        [((0, 1, 3, 4), (True, True))],
        [((3, 4, 5, 6), (False, True))],
    ]
    # a lone frame with a known frame two to its right regenerates its right neighbour
    assert [(g.frames, g.keep) for g in qgp_schedule(12).waves[-1]] == [
        ((5, 6, 7, 8), (True, False)),
        ((8, 9, 10, 11), (False, True)),
    ]


@pytest.mark.parametrize("num_frames", [2, 3, 4, 9, 10, 57])
def test_naive_order(num_frames):
    schedule = naive_schedule(num_frames)
    _check_coverage_and_references(schedule)
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
