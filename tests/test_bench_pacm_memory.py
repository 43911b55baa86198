"""`scripts/benchmark.py pacm-memory`: one row per length with the embeddings' size (exact), both peaks, and the
SD-1.5 arithmetic; bad numbers stop with one clear message before any model is built."""

import argparse

import pytest

from zeroshot.bench import pacm_memory


def _parse(argv):
    parser = argparse.ArgumentParser()
    pacm_memory.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_table_has_each_length_with_the_exact_embedding_sizes(capsys):
    pacm_memory.main(_parse(["--frames", "1", "3", "--steps", "2", "--window", "2", "--rounds", "1"]))
    lines = capsys.readouterr().out.splitlines()
    assert "peak MiB: in the cache" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [row[0] for row in rows] == ["1", "3"]
    # Tiny models: 2 steps of 77 tokens of 32 floats per frame; SD-1.5: 50 steps of 77 x 768 floats (11.3 MiB).
    assert [row[1] for row in rows] == [f"{f * 2 * 77 * 32 * 4 / 2**20:.1f}" for f in (1, 3)]
    assert [row[4] for row in rows] == [f"{f * 50 * 77 * 768 * 4 / 2**20:.0f}" for f in (1, 3)]
    assert {row[5] for row in rows} == {f"{2 * 77 * 768 * 4 / 2**20:.1f}"}


@pytest.mark.parametrize("option", ["--frames", "--steps", "--window", "--sd15-steps", "--rounds"])
def test_non_positive_numbers_are_refused_as_they_parse(option, capsys):
    with pytest.raises(SystemExit):
        _parse([option, "0"])
    assert f"argument {option}: 0 must be at least 1" in capsys.readouterr().err
