"""PACM's settings: command-line options map onto them with the paper's defaults, bad values say what is wrong, and the
model fingerprint of the cache keys identifies weights, not folders, and reads tensors of any size."""

import argparse

import pytest
import torch

from zeroshot.errors import ZeroshotError
from zeroshot.loading import load_components
from zeroshot.pacm import (
    PACMSettings,
    add_pacm_arguments,
    model_fingerprint,
    pacm_cache_dir_from_args,
    pacm_settings_from_args,
)
from zeroshot.pacm.cache import weights_fingerprint
from zeroshot.testing import build_random_components


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_pacm_arguments(parser)
    return parser.parse_args(argv)


def test_options_default_to_the_paper_and_map_onto_settings(tmp_path):
    assert pacm_settings_from_args(_parse([])) == PACMSettings()
    paper = PACMSettings()
    assert (paper.learning_rate, paper.source_inner_steps, paper.guidance_scale) == (1e-2, 10, 7.5)
    assert (paper.early_stop_epsilon, paper.early_stop_slope, paper.optimized_slot) == (0.0, 0.0, "conditional")
    assert (paper.frame_inner_steps, paper.frame_optimizer, paper.frame_step_size) == (1, "gradient", 1e5)
    argv = ["--inversion", "direct", "--steps", "20", "--early-stop", "1e-5", "2e-5", "--cache-dir", str(tmp_path)]
    argv += ["--frame-optimizer", "adam", "--frame-step-size", "50"]
    settings = pacm_settings_from_args(_parse(argv))
    assert (settings.mode, settings.num_inference_steps, settings.early_stop_epsilon) == ("direct", 20, 1e-5)
    assert (settings.early_stop_slope, settings.frame_optimizer, settings.frame_step_size) == (2e-5, "adam", 50.0)
    args = _parse(argv)
    assert pacm_cache_dir_from_args(args) == tmp_path
    assert pacm_cache_dir_from_args(_parse(["--no-cache"])) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "200"], "keep the learning rate positive over 200 steps"),
        (["--mask-threshold", "1.5"], r"mask_threshold=1.5 must lie in \[0, 1\)"),
    ],
)
def test_bad_options_raise_one_clear_error(argv, message):
    with pytest.raises(ZeroshotError, match=message):
        pacm_settings_from_args(_parse(argv))


def test_a_step_size_that_moves_nothing_is_refused(capsys):
    with pytest.raises(SystemExit):  # by the option's type, as it parses
        _parse(["--frame-step-size", "0"])
    assert "argument --frame-step-size: 0 must be greater than 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"frame_step_size=0\.0 must be positive"):  # and by the settings themselves
        PACMSettings(frame_step_size=0.0)


def test_model_fingerprint_identifies_the_weights_not_the_folder(tiny_components, tiny_model_paths):
    loaded = load_components(str(tiny_model_paths.model), str(tiny_model_paths.controlnet), offline=True)
    assert model_fingerprint(loaded) == model_fingerprint(tiny_components)
    assert model_fingerprint(build_random_components("tiny", seed=1)) != model_fingerprint(tiny_components)
    rescaled = build_random_components("tiny", seed=0, conv_out_scale=0.2)
    assert model_fingerprint(rescaled) != model_fingerprint(tiny_components)


def test_weights_fingerprint_reads_tensors_larger_than_float32_can_index():
    # Stable Diffusion's token embedding has 49408 x 768 values: float32 positions would round past its end.
    embedding = torch.nn.Embedding(49408, 768, dtype=torch.float16)
    before = weights_fingerprint(embedding)
    with torch.no_grad():
        embedding.weight[-1, -1] += 1  # the last value is always read
    assert weights_fingerprint(embedding) != before
