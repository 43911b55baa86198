"""`scripts/benchmark.py pipeline` with its own parser: its JSON holds every mode at every window with the UNet
evaluations PACM and generation must cost, windows change no frame, and sd15 without random weights stops with one
clear message."""

import argparse
import json

import pytest

from zeroshot.bench import pipeline
from zeroshot.errors import ZeroshotError

STEPS, FRAMES, WINDOWS = 2, 3, (3, 1)
SOURCE_INNER_STEPS = 10  # PACMSettings' default


def _expected_evaluations(
    mode: str, source_backward: int, separate_mask_pass: bool = False
) -> dict[str, tuple[int, int]]:
    """(forward, backward) per stage for `STEPS` steps and `FRAMES` frames (frame 0 and `FRAMES - 1` targets); the fast
    modes' frame stage is the separate mask pass, which they skip unless asked (masks are made in generation)."""
    targets = FRAMES - 1
    source = {
        # Per step: one fixed-branch pass, then one pass per gradient step and one resampling pass.
        "paper": (2 * STEPS + source_backward, source_backward),
        "negative-prompt": (0, 0),
        "direct": (2 * STEPS, 0),
    }[mode]
    frames = {
        "paper": (2 * targets * STEPS, targets * STEPS),  # Alg. 1: fixed branch + one gradient step per frame and step
        "negative-prompt": (targets * STEPS, 0),  # one pass per step: both guidance slots hold the prompt
        "direct": (2 * targets * STEPS, 0),
    }[mode]
    if mode != "paper" and not separate_mask_pass:
        frames = (0, 0)
    return {
        "ddim_inversion": (STEPS, 0),
        "source": source,
        "frames": frames,
        "generation": (2 * FRAMES * STEPS, 0),  # classifier-free guidance on every frame, frame 0 included
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    pipeline.add_arguments(parser)
    return parser.parse_args(argv)


def test_benchmark_json_has_every_mode_and_window_with_exact_counts_and_equal_frames(tmp_path, capsys):
    output = tmp_path / "pipeline.json"
    argv = ["--frames", str(FRAMES), "--steps", str(STEPS), "--windows", ",".join(map(str, WINDOWS)), "--rounds", "1"]
    argv += ["--refine-face", "0.5"]  # one of the two steps
    pipeline.main(_parse([*argv, "--modes", "paper,direct,negative-prompt", "--json", str(output)]))
    printed = capsys.readouterr().out
    assert "Wall time per stage" in printed and "max |frame diff|" in printed and "Face refinement" in printed
    assert "Fast modes at window 3: character masks made in generation" in printed
    document = json.loads(output.read_text())
    runs = {(run["mode"], run["window"]): run for run in document["runs"]}
    assert set(runs) == {(mode, window) for mode in ("paper", "direct", "negative-prompt") for window in WINDOWS}
    for (mode, window), run in runs.items():
        assert run["failure"] is None
        stages = run["report"]["stages"]
        expected = _expected_evaluations(mode, stages["source"]["backward"])
        assert {name: (stages[name]["forward"], stages[name]["backward"]) for name in expected} == expected, mode
        assert 0 <= stages["source"]["backward"] <= SOURCE_INNER_STEPS * STEPS
        # The face pass beside it: the source crop's inversion and direct-mode stage, then one guided step per crop.
        face = run["face_refinement"]
        base = sum(stage["forward"] + stage["backward"] for name, stage in stages.items() if name != "face_refinement")
        assert face["face_evaluations"] == STEPS + 2 * STEPS + 2 * FRAMES and face["base_evaluations"] == base
        assert face["evaluation_ratio"] == face["face_evaluations"] / base and 0 < face["seconds_ratio"]
        # Stages are disjoint parts of the run, so their times cannot add up to more than the run's.
        assert 0 < sum(run["stage_seconds"].values()) <= run["seconds"]
        # Windows change speed and memory only: the same frames to float round-off.
        assert run["max_latent_difference"] < 1e-4 and run["max_frame_difference"] <= 1, (mode, window)
        if window == WINDOWS[0]:
            assert run["max_latent_difference"] == 0 and run["max_frame_difference"] == 0
    # The fast modes beside their separate mask pass: exactly the frame stage's evaluations saved.
    assert [row["mode"] for row in document["mask_pass"]] == ["direct", "negative-prompt"]
    for row in document["mask_pass"]:
        separate = _expected_evaluations(row["mode"], 0, separate_mask_pass=True)
        in_generation = _expected_evaluations(row["mode"], 0)
        totals = [sum(sum(counts) for counts in stages.values()) for stages in (in_generation, separate)]
        assert [row["evaluations_in_generation"], row["evaluations_separate_pass"]] == totals
        assert row["evaluations_saved"] == pytest.approx(row["evaluations_saved_expected"], rel=1e-12)
        assert row["window"] == WINDOWS[0] and row["speed_up"] > 0


def test_sd15_without_random_weights_stops_with_one_clear_message():
    with pytest.raises(ZeroshotError, match=r"--arch sd15 needs --random-weights: .* loads no weights"):
        pipeline.main(_parse(["--arch", "sd15"]))
