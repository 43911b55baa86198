"""The PACM disk cache: a second run evaluates nothing, an interrupted run resumes where it stopped, a broken file is
never read as valid, and a numerical failure names its stage and step and leaves the cache usable."""

import dataclasses

import pytest
import torch

from zeroshot.errors import ZeroshotError
from zeroshot.pacm import STAGES, PACMCache, PACMSettings, input_identity, run_pacm
from zeroshot.prompts import encode_prompt

STEPS, FRAMES = 6, 4
# No early stop, so every frame costs exactly 2 * STEPS forward and STEPS backward evaluations.
SETTINGS = PACMSettings(
    num_inference_steps=STEPS,
    learning_rate=5e-2,
    source_inner_steps=2,
    early_stop_epsilon=0.0,
    early_stop_slope=0.0,
    frame_chunk_size=1,
)


@pytest.fixture(scope="module")
def inputs(tiny_components):
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    targets = torch.rand(FRAMES, 3, 64, 64, generator=generator)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    return latent, prompt, pose, targets


def _run(components, inputs, cache_dir, settings=SETTINGS, **kwargs):
    return run_pacm(components, *inputs, settings, cache_dir=cache_dir, show_progress=False, **kwargs)


def _assert_same_results(actual, expected, exact=True):
    tolerance = {"rtol": 0, "atol": 0} if exact else {}
    for field in ("latents", "source_embeddings", "fixed_embedding", "frame_embeddings", "attention_maps", "masks"):
        torch.testing.assert_close(getattr(actual, field), getattr(expected, field), msg=field, **tolerance)


@pytest.fixture(scope="module")
def uncached(tiny_components, inputs):
    return _run(tiny_components, inputs, None)


def test_second_run_evaluates_nothing_and_longer_sequences_reuse_finished_frames(
    tiny_components, inputs, uncached, tmp_path
):
    first = _run(tiny_components, inputs, tmp_path)
    assert all(first.stats[stage].forward > 0 and not first.stats[stage].cached for stage in STAGES)
    _assert_same_results(first, uncached)

    second = _run(tiny_components, inputs, tmp_path)
    for stage in STAGES:
        assert (second.stats[stage].forward, second.stats[stage].backward) == (0, 0), stage
        assert second.stats[stage].cached
    assert second.stats["frames"].frames_from_cache == FRAMES
    _assert_same_results(second, first)

    # One more target frame: only that frame is computed.
    latent, prompt, pose, targets = inputs
    longer = torch.cat([targets, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))])
    third = _run(tiny_components, (latent, prompt, pose, longer), tmp_path)
    assert third.stats["ddim_inversion"].forward == third.stats["source"].forward == 0
    assert (third.stats["frames"].forward, third.stats["frames"].backward) == (2 * STEPS, STEPS)
    torch.testing.assert_close(third.frame_embeddings[:FRAMES], first.frame_embeddings, rtol=0, atol=0)

    # A setting of the frame stage recomputes the frames only; a setting of the source stage, stages 2 and 3.
    more_steps = _run(tiny_components, inputs, tmp_path, dataclasses.replace(SETTINGS, frame_inner_steps=2))
    assert more_steps.stats["source"].cached and more_steps.stats["frames"].forward > 0
    other_slot = _run(tiny_components, inputs, tmp_path, dataclasses.replace(SETTINGS, optimized_slot="unconditional"))
    assert other_slot.stats["ddim_inversion"].cached and other_slot.stats["source"].forward > 0


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_without_redoing_finished_stages_or_frames(
    tiny_components, inputs, uncached, tmp_path
):
    finished = 2

    def stop_after_two_frames(progress):
        if progress.stage == "frames" and progress.frames_done >= finished:
            raise _Stop  # a real exception in the middle of frame 3's optimisation

    with pytest.raises(_Stop):
        _run(tiny_components, inputs, tmp_path, callback=stop_after_two_frames)
    resumed = _run(tiny_components, inputs, tmp_path)
    for stage in ("ddim_inversion", "source"):
        assert (resumed.stats[stage].forward, resumed.stats[stage].backward) == (0, 0), stage
    assert resumed.stats["frames"].frames_from_cache == finished
    left = FRAMES - finished
    assert (resumed.stats["frames"].forward, resumed.stats["frames"].backward) == (2 * STEPS * left, STEPS * left)
    _assert_same_results(resumed, uncached)


def test_broken_or_foreign_cache_files_are_never_read_as_valid(tiny_components, inputs, uncached, tmp_path):
    _run(tiny_components, inputs, tmp_path)
    source_file = next(tmp_path.glob("source-*.safetensors"))
    data = source_file.read_bytes()
    source_file.write_bytes(data[: len(data) // 2])  # half-written
    frame_files = sorted(tmp_path.glob("frames-*.safetensors"))
    frame_files[0].write_bytes(frame_files[1].read_bytes())  # a valid file, but another entry's
    (tmp_path / f".{frame_files[2].name}.abc.partial").write_bytes(b"\0" * 10)  # an interrupted write's leftover

    rerun = _run(tiny_components, inputs, tmp_path)
    assert rerun.stats["ddim_inversion"].cached
    assert rerun.stats["source"].forward > 0 and not rerun.stats["source"].cached
    # The source stage was recomputed, so every frame's key is the same again, but frame 0's file was foreign.
    assert rerun.stats["frames"].frames_from_cache == FRAMES - 1
    _assert_same_results(rerun, uncached)
    assert _run(tiny_components, inputs, tmp_path).stats["frames"].frames_from_cache == FRAMES


def test_non_finite_values_stop_naming_stage_and_step_and_the_cache_stays_valid(tiny_components, inputs, tmp_path):
    exploding = dataclasses.replace(SETTINGS, learning_rate=1e30)
    with pytest.raises(ZeroshotError, match=rf"stage 'source' produced non-finite loss .* at step 1 of {STEPS}\."):
        _run(tiny_components, inputs, tmp_path, exploding)
    assert not list(tmp_path.glob("source-*")) and len(list(tmp_path.glob("ddim_inversion-*"))) == 1
    rerun = _run(tiny_components, inputs, tmp_path)
    assert rerun.stats["ddim_inversion"].cached and rerun.stats["ddim_inversion"].forward == 0

    latent, prompt, pose, targets = inputs
    with pytest.raises(ZeroshotError, match=r"stage 'ddim_inversion' produced non-finite latents .* at step 1 "):
        run_pacm(tiny_components, latent * float("nan"), prompt, pose, targets, SETTINGS, show_progress=False)


KEY_SETTINGS = PACMSettings(
    num_inference_steps=3, learning_rate=5e-2, source_inner_steps=1, early_stop_epsilon=0.0, early_stop_slope=0.0
)
_OTHER_POSE = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def keyed(tiny_components, tmp_path_factory):
    """A cache filled by one run of one frame; the variants below each change one input or setting."""
    generator = torch.Generator().manual_seed(5)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    target = torch.rand(1, 3, 64, 64, generator=generator)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    directory = tmp_path_factory.mktemp("keyed-cache")
    inputs = dict(source_latent=latent, prompt=prompt, source_pose=pose, target_poses=target)
    run_pacm(tiny_components, **inputs, settings=KEY_SETTINGS, cache_dir=directory, show_progress=False)
    return inputs, directory


def _settings(**fields):
    return lambda components: {"settings": dataclasses.replace(KEY_SETTINGS, **fields)}


def _encoded(components, prompt, negative=""):
    return encode_prompt(components, prompt, subject="astronaut", negative_prompt=negative)


@pytest.mark.parametrize(
    ("change", "first_missed"),
    [
        (lambda c: {"prompt": _encoded(c, "a picture of an astronaut")}, "ddim_inversion"),
        (lambda c: {"prompt": _encoded(c, "a photo of an astronaut", "best quality")}, "source"),
        (lambda c: {"source_latent": torch.randn(1, 4, 8, 8)}, "ddim_inversion"),
        (lambda c: {"source_pose": _OTHER_POSE}, "ddim_inversion"),
        (lambda c: {"target_poses": _OTHER_POSE}, "frames"),
        (_settings(num_inference_steps=4), "ddim_inversion"),
        (_settings(controlnet_conditioning_scale=0.5), "ddim_inversion"),
        (_settings(guidance_scale=5.0), "source"),
        (_settings(learning_rate=2e-2), "source"),
        (_settings(learning_rate_decay=0.1), "source"),
        (_settings(source_inner_steps=2), "source"),
        (_settings(early_stop_epsilon=1e-3), "source"),
        (_settings(optimized_slot="unconditional"), "source"),
        (_settings(mode="direct"), "source"),
        (_settings(frame_inner_steps=2), "frames"),
        (_settings(frame_step_size=10.0), "frames"),
        (_settings(frame_optimizer="adam"), "frames"),
    ],
    ids=[
        "prompt", "negative-prompt", "source-latent", "source-pose", "target-pose", "steps", "controlnet-scale",
        "guidance", "learning-rate", "learning-rate-decay", "source-inner-steps", "early-stop", "slot", "mode",
        "frame-inner-steps", "frame-step-size", "frame-optimizer",
    ],
)  # fmt: skip
def test_every_input_and_setting_that_changes_a_result_misses_the_cache(tiny_components, keyed, change, first_missed):
    inputs, directory = keyed
    arguments = {**inputs, "settings": KEY_SETTINGS, **change(tiny_components)}
    result = run_pacm(tiny_components, **arguments, cache_dir=directory, show_progress=False)
    missed = STAGES.index(first_missed)
    for stage in STAGES[:missed]:
        assert result.stats[stage].cached, stage
    for stage in STAGES[missed:]:
        assert not result.stats[stage].cached and result.stats[stage].forward > 0, stage


def test_input_identity_depends_on_the_image_prompt_negative_prompt_and_encoders():
    image = torch.zeros(64, 64, 3, dtype=torch.uint8)
    base = input_identity(image, "a photo", "", "encoders")
    assert input_identity(image.clone(), "a photo", "", "encoders") == base
    others = [
        input_identity(image + 1, "a photo", "", "encoders"),
        input_identity(image, "a picture", "", "encoders"),
        input_identity(image, "a photo", "blurry", "encoders"),
        input_identity(image, "a photo", "", "other encoders"),
    ]
    assert len({base, *others}) == 5


IN_PAIRS = dataclasses.replace(SETTINGS, frame_chunk_size=2)


@pytest.fixture(scope="module")
def uninterrupted_in_pairs(tiny_components, inputs):
    return _run(tiny_components, inputs, None, IN_PAIRS)


@pytest.mark.parametrize("killed_at_save", [1, 3])
def test_a_run_killed_between_frame_saves_resumes_bit_identically(
    tiny_components, inputs, uninterrupted_in_pairs, tmp_path, killed_at_save
):
    """Chunks of 2 over 4 frames ([0, 1], [2, 3]): a kill between the two saves of either chunk leaves half a chunk
    cached; the resumed run batches the same frames as an uninterrupted one, so its results are bit-identical."""
    saves = []
    original = PACMCache.save

    def killed(self, kind, key, tensors, description):
        if kind == "frames" and len(saves) == killed_at_save:
            raise _Stop
        original(self, kind, key, tensors, description)
        saves.extend([kind] if kind == "frames" else [])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PACMCache, "save", killed)
        with pytest.raises(_Stop):
            _run(tiny_components, inputs, tmp_path, IN_PAIRS)
    assert len(list(tmp_path.glob("frames-*"))) == killed_at_save
    resumed = _run(tiny_components, inputs, tmp_path, IN_PAIRS)
    assert resumed.stats["frames"].frames_from_cache == killed_at_save
    _assert_same_results(resumed, uninterrupted_in_pairs, exact=True)
