"""PACM against an independent float64 reference, tensor for tensor: the DDIM inversion, the pose-aware inversion of
the source, Algorithm 1 for two frames of different poses, and the embeddings and poses that generation gives frame 0
and frame k.

The reference (`pacm_reference.py`) is written from the papers' equations and the Stable Diffusion 1.5 scheduler
config, in float64, and imports nothing from `zeroshot`: only the models are shared. Each stage's reference starts
from the project's previous stage (cast to float64), so each comparison measures one stage alone.
"""

import numpy as np
import pytest
import torch
from pacm_reference import Reference

from zeroshot.generation import generate_latents
from zeroshot.pacm import ControlledDenoiser, DDIMSchedule, PACMSettings, run_pacm
from zeroshot.prompts import encode_prompt

STEPS, SOURCE_STEPS, LEARNING_RATE, DECAY, ETA, GUIDANCE = 5, 3, 5e-2, 1e-2, 1e4, 7.5


def _pose_images():
    """uint8 pose images [3, 64, 64, 3]: the source's, its mirror, and an unrelated one."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return np.stack([source, source[:, ::-1], rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)])


def _as_condition(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 255


def _relative(actual, expected, scale=None):
    scale = expected if scale is None else scale
    return float((actual.double() - expected).norm() / scale.norm())


@pytest.fixture(scope="module")
def setup(tiny_components):
    poses = _pose_images()
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    settings = PACMSettings(
        num_inference_steps=STEPS,
        source_inner_steps=SOURCE_STEPS,
        learning_rate=LEARNING_RATE,
        learning_rate_decay=DECAY,
        early_stop_epsilon=0.0,
        early_stop_slope=0.0,
        frame_step_size=ETA,
        frame_chunk_size=2,
    )
    result = run_pacm(tiny_components, latent, prompt, poses[0], poses[1:], settings, show_progress=False)
    reference = Reference(tiny_components, STEPS)
    text = {name: getattr(prompt, name).double()[None] for name in ("conditional", "unconditional")}
    return result, reference, latent.double(), text, poses


def test_inversion_matches_the_reference(setup):
    result, reference, latent, text, poses = setup
    expected = reference.inversion(latent, text["conditional"], _as_condition(poses[:1]))
    assert result.timesteps.tolist() == reference.timesteps
    for j, z in enumerate(expected):
        assert _relative(result.latents[j][None], z) < 1e-5, f"Z_{j}"


def test_source_stage_matches_the_reference(setup):
    result, reference, _, text, poses = setup
    latents = [z[None].double() for z in result.latents]
    expected = reference.source(
        latents, text["unconditional"], text["conditional"], _as_condition(poses[:1]),
        SOURCE_STEPS, LEARNING_RATE, DECAY, GUIDANCE,
    )  # fmt: skip
    torch.testing.assert_close(result.fixed_embedding.double(), text["unconditional"][0], rtol=0, atol=0)
    for i, e in enumerate(expected):
        moved = e - (expected[i - 1] if i else text["conditional"])
        assert _relative(result.source_embeddings[i][None], e, scale=moved) < 1e-3, f"step {i}"


def test_algorithm_1_matches_the_reference_for_frames_of_different_poses(setup):
    result, reference, _, text, poses = setup
    latents = [z[None].double() for z in result.latents]
    source = [e[None].double() for e in result.source_embeddings]
    updates = []
    for k in (0, 1):  # target pose k (video frame k + 1): the source's mirror, then an unrelated pose
        expected = reference.frame(
            latents, source, text["unconditional"], _as_condition(poses[k + 1 : k + 2]), ETA, 7.5
        )
        for i, e in enumerate(expected):
            moved = e - source[i]
            assert float(moved.norm()) > 0
            assert _relative(result.frame_embeddings[k, i][None], e, scale=moved) < 1e-3, f"frame {k}, step {i}"
        updates.append(torch.stack(expected) - torch.stack(source))
    # The two poses move the embeddings differently, so frames mixed up or given one pose would show.
    assert _relative(updates[0], updates[1]) > 0.1


def test_generation_gives_frame_0_the_source_conditioning_and_frame_k_its_own(setup, tiny_components):
    """Plain self-attention (lambdas 0, 0, 1): each frame samples alone, from Z_T, with its embeddings and pose."""
    result, reference, _, text, poses = setup
    denoiser = ControlledDenoiser(tiny_components)
    schedule = DDIMSchedule.from_scheduler(tiny_components.scheduler, STEPS)
    generated = generate_latents(
        denoiser, schedule, result, poses, None, lambdas=(0, 0, 1), decoupling=None, window=2, show_progress=False
    )
    start = result.latents[-1][None].double()
    conditions = _as_condition(poses)
    source = [e[None].double() for e in result.source_embeddings]
    expected = [reference.generate(start, source, text["unconditional"], conditions[:1], GUIDANCE)]
    for k in (1, 2):
        embeddings = [e[None].double() for e in result.frame_embeddings[k - 1]]
        expected.append(reference.generate(start, embeddings, text["unconditional"], conditions[k : k + 1], GUIDANCE))
    for frame, z in enumerate(expected):
        assert _relative(generated[frame][None], z) < 1e-4, f"frame {frame}"
    assert _relative(expected[1], expected[2]) > 1e-2  # frames differ, so a swap would show
