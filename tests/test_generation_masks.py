"""The fast modes' character masks, made in generation's own UNet calls: the masks decoupling uses at step t are the
subject's cross-attention of the down and mid blocks of that same call (an independent float64 recorder), windows
give the masks and frames of one batch, and the saved separate mask pass shows in the pipeline's counters exactly."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from hooks import CrossFrameState, InCallSubjectMasks, install_attn_processors
from zeroshot import PoseAnimatePipeline
from zeroshot.generation import generate_latents
from zeroshot.imaging import encode_latents, to_condition_tensor, to_model_tensor
from zeroshot.masks import resize_mask
from zeroshot.pacm import ControlledDenoiser, DDIMSchedule, PACMSettings, run_pacm
from zeroshot.poseanimate import prepare_source
from zeroshot.poses import load_poses
from zeroshot.prompts import encode_prompt
from zeroshot.video import load_image

ROOT = Path(__file__).parents[1]
IMAGE = ROOT / "zeroshot" / "assets" / "astronaut.jpg"
POSES = ROOT / "zeroshot" / "assets" / "wave.json"
SIZE, STEPS, TARGETS = 64, 4, 4
LATENT = (SIZE // 8, SIZE // 8)
# Cross-attention layers that run before the up blocks, written here independently of the hooks' own pattern.
BEFORE_UP_BLOCKS = r"^(down_blocks\.\d+|mid_block)\.attentions\.\d+\.transformer_blocks\.\d+\.attn2\.processor$"


@pytest.fixture(scope="module")
def setup(tiny_components):
    """Direct mode without PACM's frame stage: the astronaut, 4 wave poses, its selfie mask at latent size."""
    pipe = PoseAnimatePipeline.from_components(tiny_components)
    source = prepare_source(load_image(IMAGE), SIZE, SIZE, mask="selfie")
    pose_images = pipe.prepare_poses(source.pose, load_poses(POSES)[np.arange(TARGETS)], 0)[1]
    latent = encode_latents(tiny_components.vae, to_model_tensor(np.asarray(source.image)))
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    # The tiny UNet's maps are flat (every value above 0.6 of its map's maximum): a high threshold splits them.
    settings = PACMSettings(mode="direct", num_inference_steps=STEPS, mask_threshold=0.8)
    no_subject = dataclasses.replace(prompt, subject_token_indices=())
    pacm = run_pacm(
        tiny_components, latent, no_subject, pose_images[0], pose_images[1:], settings, show_progress=False
    )
    assert pacm.masks is None and pacm.stats["frames"].forward == 0
    source_mask = torch.from_numpy(resize_mask(source.mask, *LATENT)).float()
    return pacm, pose_images, prompt, source_mask


def _generate(components, setup, window):
    """Latents, the masks decoupling used at each step, and the latents each step started from."""
    pacm, pose_images, prompt, source_mask = setup
    used, starts = [], [pacm.latents[-1][None].repeat(TARGETS + 1, 1, 1, 1)]
    latents = generate_latents(
        ControlledDenoiser(components),
        DDIMSchedule.from_scheduler(components.scheduler, STEPS),
        pacm,
        pose_images,
        source_mask,
        window=window,
        show_progress=False,
        subject_token_indices=prompt.subject_token_indices,
        on_masks=lambda step, masks: used.append(masks.clone()),
        on_step=lambda step, timestep, latents: starts.append(latents.clone()),
    )
    return latents, used, starts[:-1]


class _Float64SubjectMaps:
    """Attention as diffusers computes it, plus each call's softmax mass on the subject tokens in float64, averaged
    over heads and bilinearly upsampled to the latent size."""

    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.maps = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch, queries, _ = hidden_states.shape
        query = attn.to_q(hidden_states).double().view(batch, queries, attn.heads, -1).transpose(1, 2)
        key = attn.to_k(encoder_hidden_states).double()
        key = key.view(batch, key.shape[1], attn.heads, -1).transpose(1, 2)
        probabilities = torch.softmax(query @ key.transpose(-1, -2) * attn.scale, dim=-1)
        mass = probabilities[..., self.tokens].sum(dim=-1).mean(dim=1)
        side = round(queries**0.5)
        grid = mass.view(batch, 1, side, side)
        self.maps.append(F.interpolate(grid, size=LATENT, mode="bilinear", align_corners=False)[:, 0])
        return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


@torch.no_grad()
def _reference_masks(components, pacm, pose_images, tokens, step, latents):
    """Every frame's mask at `step` from a plain ControlNet + UNet call on its conditional branch (no hook but the
    float64 recorder on the down and mid blocks): the mean map over those layers, divided by its maximum, > 0.8."""
    recorder = _Float64SubjectMaps(tokens)
    frames = list(range(TARGETS + 1))
    text = pacm.step_embeddings(step, frames)[1]  # the conditional slot
    poses = to_condition_tensor(pose_images)
    timestep = int(pacm.timesteps[step])
    with install_attn_processors(components.unet, recorder, BEFORE_UP_BLOCKS):
        down, mid = components.controlnet(latents, timestep, text, controlnet_cond=poses, return_dict=False)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        components.unet(latents, timestep, text, **residuals)
    assert len(recorder.maps) == 3  # two 8x8 layers in the down blocks, one 4x4 in the mid block
    maps = torch.stack(recorder.maps).mean(dim=0)
    return (maps / maps.amax(dim=(-2, -1), keepdim=True) > 0.8).float()


def test_masks_at_each_step_are_the_down_and_mid_blocks_maps_of_the_same_call(tiny_components, setup):
    """Catches a one-step lag, maps of the unconditional chunk, up-block layers averaged in (as PACM's recorder
    does), frames written at the wrong ids, and frame 0 losing the source's mask."""
    pacm, pose_images, prompt, source_mask = setup
    _, used, starts = _generate(tiny_components, setup, window=2)
    assert len(used) == STEPS
    for step in range(STEPS):
        expected = _reference_masks(
            tiny_components, pacm, pose_images, prompt.subject_token_indices, step, starts[step]
        )
        assert torch.equal(used[step][0], source_mask), step
        assert torch.equal(used[step][1:], expected[1:]), step
        # Masks that decouple something: each frame has character and background.
        assert (expected[1:].flatten(1).mean(1) > 0).all() and (expected[1:].flatten(1).mean(1) < 1).all()
    # The masks move from step to step, so a lag of one step would show, and frames differ, so a mix-up would.
    assert not torch.equal(used[0][1:], used[-1][1:])
    assert all(not torch.equal(used[-1][k], used[-1][k + 1]) for k in range(1, TARGETS))


def test_windows_give_the_masks_and_frames_of_one_batch(tiny_components, setup):
    """Windows of 1 and 3 frames (3 leaves a window of 2) against one batch of all 5 frames; and the masks matter:
    without decoupling the frames differ."""
    latents, used, _ = _generate(tiny_components, setup, window=TARGETS + 1)
    for window in (1, 3):
        windowed, windowed_masks, _ = _generate(tiny_components, setup, window=window)
        torch.testing.assert_close(windowed, latents, rtol=1e-4, atol=1e-5)
        for step in range(STEPS):
            assert torch.equal(windowed_masks[step], used[step]), (window, step)
    pacm, pose_images, _, _ = setup
    undecoupled = generate_latents(
        ControlledDenoiser(tiny_components),
        DDIMSchedule.from_scheduler(tiny_components.scheduler, STEPS),
        pacm,
        pose_images,
        None,
        decoupling=None,
        show_progress=False,
    )
    assert (undecoupled[1:] - latents[1:]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("mode", "frame_pass_per_step"),
    [("direct", lambda targets: 2 * targets), ("negative-prompt", lambda targets: targets)],
)
def test_the_pipeline_saves_the_separate_mask_pass_exactly(tiny_components, mode, frame_pass_per_step):
    """Counted by the pipeline's own counters: in direct mode the separate pass was 2F of (4F + 5) evaluations per
    step, in negative-prompt mode F of (3F + 3); in-generation masks cost none."""
    pipe = PoseAnimatePipeline.from_components(tiny_components)
    source = prepare_source(load_image(IMAGE), SIZE, SIZE, mask="selfie")
    poses = load_poses(POSES)[np.arange(TARGETS)]
    settings = PACMSettings(mode=mode, num_inference_steps=2)
    stages = {}
    for separate in (False, True):
        output = pipe(load_image(IMAGE), poses, "a photo of an astronaut", height=SIZE, width=SIZE, source=source,
                      pacm_settings=settings, transition_frames=0, separate_mask_pass=separate, show_progress=False,
                      output_type="latent")  # fmt: skip
        stages[separate] = output.report["stages"]
        assert output.report["settings"]["separate_mask_pass"] is separate
    frames_stage = frame_pass_per_step(TARGETS) * 2
    assert (stages[True]["frames"]["forward"], stages[False]["frames"]["forward"]) == (frames_stage, 0)
    for name in ("ddim_inversion", "source", "generation"):
        assert stages[True][name]["forward"] == stages[False][name]["forward"], name
    totals = {separate: sum(stage["forward"] + stage["backward"] for stage in stages[separate].values())
              for separate in stages}  # fmt: skip
    saved = 1 - totals[False] / totals[True]
    expected = {"direct": 2 * TARGETS / (4 * TARGETS + 5), "negative-prompt": TARGETS / (3 * TARGETS + 3)}[mode]
    assert saved == pytest.approx(expected, rel=1e-12)


def test_in_call_masks_refuse_what_they_cannot_place():
    state = CrossFrameState()
    with pytest.raises(ValueError, match=r"Set `state.latent_size`"):
        InCallSubjectMasks(state, [5], 4)
    state.latent_size = LATENT
    with pytest.raises(ValueError, match=r"fixed_masks must map frame ids in \[0, 4\) .* got frame 4"):
        InCallSubjectMasks(state, [5], 4, fixed_masks={4: torch.zeros(LATENT)})
    with pytest.raises(ValueError, match=r"got frame 0 with shape \(4, 4\)"):
        InCallSubjectMasks(state, [5], 4, fixed_masks={0: torch.zeros(4, 4)})
