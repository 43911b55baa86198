"""Long sequences: pose images stay as given and are converted a chunk at a time, per-frame results live on the CPU,
a window of frames takes only its own embeddings, and the attention recorder is installed once per stage."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

import zeroshot.pacm.conditions
from hooks import CROSS_ATTENTION, install_attn_processors, select_attn_processor_names
from zeroshot.imaging import to_condition_tensor
from zeroshot.pacm import PACMSettings, run_pacm
from zeroshot.prompts import encode_prompt

T, F, CHUNK = 4, 5, 2
SETTINGS = PACMSettings(num_inference_steps=T, learning_rate=5e-2, source_inner_steps=1, frame_chunk_size=CHUNK)


@pytest.fixture(scope="module")
def inputs(tiny_components):
    generator = np.random.default_rng(0)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    source_pose = generator.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    targets = generator.integers(0, 256, (F, 64, 64, 3), dtype=np.uint8)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    return latent, prompt, source_pose, targets


@pytest.fixture(scope="module")
def float_run(tiny_components, inputs, tmp_path_factory):
    """The run on float condition tensors, as PACM took them before it accepted uint8 images; its cache kept."""
    latent, prompt, source_pose, targets = inputs
    cache = tmp_path_factory.mktemp("pacm-cache")
    pose, poses = to_condition_tensor(source_pose), to_condition_tensor(targets)
    result = run_pacm(tiny_components, latent, prompt, pose, poses, SETTINGS, cache_dir=cache, show_progress=False)
    return result, cache


def test_uint8_poses_are_converted_one_chunk_at_a_time_and_frame_results_stay_on_the_cpu(
    tiny_components, inputs, float_run, monkeypatch
):
    latent, prompt, source_pose, targets = inputs
    frame_steps = 0
    conversions = []  # (frames converted, frame-stage steps done before the conversion)

    def counting_conversion(images, device="cpu"):
        conversions.append((len(images), frame_steps))
        return to_condition_tensor(images, device)

    def count_steps(progress):
        nonlocal frame_steps
        frame_steps += progress.stage == "frames"

    monkeypatch.setattr(zeroshot.pacm.conditions, "to_condition_tensor", counting_conversion)
    # The source pose as a uint8 tensor [H, W, 3], the targets as a uint8 array [F, H, W, 3].
    result = run_pacm(
        tiny_components, latent, prompt, torch.from_numpy(source_pose), targets, SETTINGS,
        callback=count_steps, show_progress=False,
    )  # fmt: skip
    # The source pose once; then each chunk of targets just before its T steps, never the whole sequence.
    chunks = [min(CHUNK, F - start) for start in range(0, F, CHUNK)]
    assert conversions == [(1, 0), *[(size, T * i) for i, size in enumerate(chunks)]]

    expected, _ = float_run
    for name in ("latents", "source_embeddings", "frame_embeddings", "attention_maps", "masks"):
        torch.testing.assert_close(getattr(result, name), getattr(expected, name), rtol=0, atol=0, msg=name)
    for name in ("frame_embeddings", "attention_maps", "masks"):
        assert getattr(result, name).device == torch.device("cpu"), name
    assert result.frame_embeddings.shape == (F, T, 77, tiny_components.unet.config.cross_attention_dim)


def test_uint8_poses_read_the_cache_of_the_float_images_made_from_them(tiny_components, inputs, float_run):
    latent, prompt, source_pose, targets = inputs
    expected, cache = float_run
    result = run_pacm(tiny_components, latent, prompt, source_pose, targets, SETTINGS, cache_dir=cache,
                      show_progress=False)  # fmt: skip
    assert result.stats["frames"].frames_from_cache == F and result.stats["frames"].forward == 0
    torch.testing.assert_close(result.frame_embeddings, expected.frame_embeddings, rtol=0, atol=0)


def test_step_embeddings_give_each_video_frame_its_own_rows(float_run):
    result, _ = float_run
    frames = [0, 3, 1, 5, 0]  # video frame ids: 0 is the source, k the target pose k - 1
    for step in (0, T - 1):
        unconditional, conditional = result.step_embeddings(step, frames, "cpu")
        assert unconditional.shape == conditional.shape == (len(frames), *result.fixed_embedding.shape)
        for row, frame in enumerate(frames):
            own = result.source_embeddings[step] if frame == 0 else result.frame_embeddings[frame - 1, step]
            torch.testing.assert_close(conditional[row], own, rtol=0, atol=0)  # the conditional slot is optimised
            torch.testing.assert_close(unconditional[row], result.fixed_embedding, rtol=0, atol=0)
    with pytest.raises(ValueError, match=rf"frames must be video frame ids in \[0, {F}\]; got \[0, {F + 1}\]"):
        result.step_embeddings(0, [0, F + 1])


class _CountingProcessor:
    """`AttnProcessor2_0`, counting its calls."""

    def __init__(self):
        self.calls = 0
        self.stock = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.calls += 1
        return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


@pytest.mark.parametrize("slot", ["conditional", "unconditional"])
def test_the_recorder_is_installed_once_per_stage_and_unrecorded_passes_run_the_previous_processors(
    tiny_components, inputs, float_run, slot
):
    latent, prompt, source_pose, targets = inputs
    unet = tiny_components.unet
    layers = select_attn_processor_names(unet, CROSS_ATTENTION)
    counter = _CountingProcessor()
    seen_during_frames = []
    calls = {}

    def inspect(progress):
        processors = unet.attn_processors
        if progress.stage == "frames":
            seen_during_frames.append({id(processors[name]) for name in layers})
        calls[progress.stage] = counter.calls

    settings = dataclasses.replace(SETTINGS, optimized_slot=slot, frame_chunk_size=F)
    with install_attn_processors(unet, counter, CROSS_ATTENTION):
        result = run_pacm(tiny_components, latent, prompt, source_pose, targets, settings, callback=inspect,
                          show_progress=False)  # fmt: skip
        # Between passes, every cross-attention layer holds the one recorder, all through the stage.
        assert len(seen_during_frames) == T and len(set.union(*seen_during_frames)) == 1
        assert seen_during_frames[0] != {id(counter)}
        # At each step one pass per frame is not recorded (the fixed slot's, or the optimised one's when the
        # unconditional slot is optimised): it runs the layers' previous processor.
        assert calls["frames"] - calls["source"] == len(layers) * T
        assert {id(processor) for processor in (unet.attn_processors[name] for name in layers)} == {id(counter)}
    assert result.attention_maps.shape == (F, T, 8, 8)
    if slot == "conditional":
        torch.testing.assert_close(result.attention_maps, float_run[0].attention_maps, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("poses", "message"),
    [
        (np.zeros((2, 64, 64, 3), np.float32), r"target_poses must be a float tensor \[frames, 3, H, W\] in \[0, 1\] "
         r"or uint8 RGB images \[frames, H, W, 3\]; got ndarray of float32"),
        (np.zeros((2, 3, 64, 64), np.uint8), r"target_poses must be \[frames, 64, 64, 3\]; got \(2, 3, 64, 64\)"),
        (torch.zeros(2, 3, 32, 32), r"target_poses must be \[frames, 3, 64, 64\]; got \(2, 3, 32, 32\)"),
        (torch.full((2, 3, 64, 64), 255.0), r"target_poses must hold values in \[0, 1\]"),
    ],
    ids=["float-array", "uint8-channels-first", "wrong-size", "float-0-255"],
)  # fmt: skip
def test_pose_images_in_neither_form_are_refused_naming_the_forms(tiny_components, inputs, poses, message):
    latent, prompt, source_pose, _ = inputs
    with pytest.raises(ValueError, match=message):
        run_pacm(tiny_components, latent, prompt, source_pose, poses, SETTINGS, show_progress=False)


def test_frames_left_in_the_cache_hand_out_the_embeddings_of_memory(tiny_components, inputs, float_run):
    """`frames_in_memory=False`: the same rows, bit for bit, for any window and step, read from the frames' cache
    files."""
    from zeroshot.pacm import StoredFrameEmbeddings

    latent, prompt, source_pose, targets = inputs
    expected, cache = float_run
    result = run_pacm(tiny_components, latent, prompt, source_pose, targets, SETTINGS, cache_dir=cache,
                      show_progress=False, frames_in_memory=False)  # fmt: skip
    assert isinstance(result.frame_embeddings, StoredFrameEmbeddings)
    assert result.frame_embeddings.shape == expected.frame_embeddings.shape
    assert sorted(result.frame_embeddings.paths) == sorted(map(str, cache.glob("frames-*.safetensors")))
    torch.testing.assert_close(result.attention_maps, expected.attention_maps, rtol=0, atol=0)
    for step in range(T):
        for window in ([0, 1, 2], [3, 4, 5], [0, 5, 2]):
            for got, want in zip(
                result.step_embeddings(step, window), expected.step_embeddings(step, window), strict=True
            ):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"frames_in_memory=False leaves .* give a cache_dir"):
        run_pacm(tiny_components, latent, prompt, source_pose, targets, SETTINGS, frames_in_memory=False)


def test_the_pipeline_with_a_cache_reads_the_frames_from_it_and_generates_the_same_frames(tiny_components, tmp_path):
    """Paper mode with a cache folder leaves the frames' embeddings in it; the animation is the one made in memory."""
    from pathlib import Path

    from zeroshot import PoseAnimatePipeline
    from zeroshot.poseanimate import prepare_source
    from zeroshot.poses import load_poses
    from zeroshot.video import load_image

    assets = Path(__file__).parents[1] / "zeroshot" / "assets"
    image = load_image(assets / "astronaut.jpg")
    source = prepare_source(image, 64, 64, mask="selfie")
    pipe = PoseAnimatePipeline.from_components(tiny_components)
    options = dict(height=64, width=64, source=source, pacm_settings=SETTINGS, transition_frames=0, window=2,
                   show_progress=False, output_type="latent")  # fmt: skip
    poses = load_poses(assets / "wave.json")[np.arange(3)]
    in_memory = pipe(image, poses, "a photo of an astronaut", **options)
    stored = pipe(image, poses, "a photo of an astronaut", cache_dir=tmp_path, **options)
    assert len(list(tmp_path.glob("frames-*.safetensors"))) == 3
    torch.testing.assert_close(stored.frames, in_memory.frames, rtol=0, atol=0)
