"""The quadrant-grid (QGA) UNet hook: packing, exact equivalence with a hand-written grid loop under real schedulers,
composition with attention processors, and exact restore."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from hooks import (
    QuadrantGridHook,
    install_attn_processors,
    install_quadrant_grid_hook,
    pack_pair,
    pack_quadrant_grid,
    quadrant_grid_input,
    reference_grid,
    unpack_pair,
    unpack_quadrant_grid,
)
from zeroshot.testing import SD15_SCHEDULER_CONFIG, build_random_components

TILE = (4, 4)  # latent tile height, width: the tiny UNet sees 8x8 grids


@pytest.fixture(scope="module")
def unet12():
    return build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=1).unet


def _latents(batch, seed):
    return torch.randn(batch, 4, *TILE, generator=torch.Generator().manual_seed(seed))


def _grid_inputs(batch=2, seed=0):
    r_a, r_d = _latents(batch, seed), _latents(batch, seed + 1)
    conditions = [_latents(batch, seed + 2 + i) for i in range(4)]
    corner_noise = [_latents(batch, seed + 6), _latents(batch, seed + 7)]
    text = torch.randn(batch, 77, 32, generator=torch.Generator().manual_seed(seed + 8))
    return r_a, r_d, conditions, corner_noise, text


def test_pack_unpack_round_trip_and_tile_positions():
    a, b, c, d = (torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(i)) for i in range(4))
    grid = pack_quadrant_grid([a, b, c, d])
    assert grid.shape == (2, 4, 6, 10)
    expected = torch.empty(2, 4, 6, 10)
    expected[..., :3, :5], expected[..., :3, 5:], expected[..., 3:, :5], expected[..., 3:, 5:] = a, b, c, d
    assert torch.equal(grid, expected)  # b top-right, c bottom-left
    for got, want in zip(unpack_quadrant_grid(grid), (a, b, c, d), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(pack_quadrant_grid(unpack_quadrant_grid(expected)), expected)
    pair = pack_pair(b, c)
    assert pair.shape == (2, 4, 3, 10) and torch.equal(pair[..., :5], b) and torch.equal(pair[..., 5:], c)
    assert all(torch.equal(x, y) for x, y in zip(unpack_pair(pair), (b, c), strict=True))
    references = reference_grid(a, d)
    assert torch.equal(references[..., :3, :5], a) and torch.equal(references[..., 3:, 5:], d)
    assert references[..., :3, 5:].abs().sum() == 0 and references[..., 3:, :5].abs().sum() == 0
    stacked = quadrant_grid_input(references, grid, grid * 2)
    assert stacked.shape == (2, 12, 6, 10)
    assert torch.equal(stacked[:, :4], references) and torch.equal(stacked[:, 8:], grid * 2)
    with pytest.raises(ValueError, match="one shape"):
        pack_quadrant_grid([a, b, c, d[..., :2]])


def _reference_sample(unet, scheduler, r_a, r_d, conditions, corner_noise, text, noise, alpha_bar_of_step):
    """The QGA sampling loop written out by hand: builds the 12-channel grid input by slice assignment, in float64
    for the diffused corner tiles, and steps the scheduler on tiles b and c read from the full prediction."""
    batch, channels, h, w = r_a.shape
    latents = noise * scheduler.init_noise_sigma
    for step, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        alpha_bar = torch.as_tensor(alpha_bar_of_step(step, t), dtype=torch.float64)
        grid = torch.zeros(batch, 3 * channels, 2 * h, 2 * w)
        grid[:, 0:4, :h, :w], grid[:, 0:4, h:, w:] = r_a, r_d
        grid[:, 4:8, :h, :w], grid[:, 4:8, :h, w:] = conditions[0], conditions[1]
        grid[:, 4:8, h:, :w], grid[:, 4:8, h:, w:] = conditions[2], conditions[3]
        corner_a = alpha_bar.sqrt() * r_a.double() + (1 - alpha_bar).sqrt() * corner_noise[0].double()
        corner_d = alpha_bar.sqrt() * r_d.double() + (1 - alpha_bar).sqrt() * corner_noise[1].double()
        grid[:, 8:12, :h, :w], grid[:, 8:12, h:, w:] = corner_a.float(), corner_d.float()
        grid[:, 8:12, :h, w:], grid[:, 8:12, h:, :w] = model_input[..., :w], model_input[..., w:]
        prediction = unet(grid, t, encoder_hidden_states=text).sample
        pair = torch.cat([prediction[..., :h, w:], prediction[..., h:, :w]], dim=-1)
        latents = scheduler.step(pair, t, latents).prev_sample
    return latents


def _hooked_sample(unet, scheduler, r_a, r_d, conditions, corner_noise, text, noise):
    hook = QuadrantGridHook(scheduler.alphas_cumprod)
    hook.set_grid(r_a, r_d, conditions, corner_noise=corner_noise)
    latents = noise * scheduler.init_noise_sigma
    with install_quadrant_grid_hook(unet, hook):
        for t in scheduler.timesteps:
            prediction = unet(scheduler.scale_model_input(latents, t), t, encoder_hidden_states=text).sample
            latents = scheduler.step(prediction, t, latents).prev_sample
    return latents


def _ddim_alpha(scheduler):
    return lambda step, t: scheduler.alphas_cumprod[int(t)].double()


def _sigma_alpha(scheduler):
    return lambda step, t: 1 / (1 + scheduler.sigmas[step].double() ** 2)


SCHEDULERS = {
    "ddim": (DDIMScheduler, _ddim_alpha),
    "euler": (EulerDiscreteScheduler, _sigma_alpha),  # fractional timesteps; noise level from its own sigmas
    "dpm++": (DPMSolverMultistepScheduler, _ddim_alpha),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@torch.no_grad()
def test_hook_matches_hand_written_grid_loop_under_real_schedulers(unet12, name):
    scheduler_class, alpha_of = SCHEDULERS[name]
    r_a, r_d, conditions, corner_noise, text = _grid_inputs()
    noise = torch.randn(2, 4, TILE[0], 2 * TILE[1], generator=torch.Generator().manual_seed(9))
    results = []
    for hooked in (True, False):
        scheduler = scheduler_class.from_config(SD15_SCHEDULER_CONFIG)
        scheduler.set_timesteps(6)
        args = (unet12, scheduler, r_a, r_d, conditions, corner_noise, text, noise)
        results.append(_hooked_sample(*args) if hooked else _reference_sample(*args, alpha_of(scheduler)))
    if name == "euler":
        assert any(float(t) != int(t) for t in scheduler.timesteps)  # the fractional case is exercised
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)
    assert results[0].abs().max() < 50 and not torch.allclose(results[0], noise)


def test_tiles_a_and_d_carry_the_references_at_the_schedulers_own_noise_level():
    """The UNet barely couples tiles, so the sampling tests above would hardly notice a wrong noise level in tiles a
    and d: check the hook's input directly against Euler's sigmas, whose timesteps are fractional."""
    scheduler = EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    scheduler.set_timesteps(8)
    fractional = [float(t) != int(t) for t in scheduler.timesteps]
    assert fractional == [False] + [True] * 6 + [False]
    r_a, r_d, conditions, corner_noise, _ = _grid_inputs(batch=1)
    hook = QuadrantGridHook(scheduler.alphas_cumprod)
    hook.set_grid(r_a, r_d, conditions, corner_noise=corner_noise)
    pair = pack_pair(_latents(1, 30), _latents(1, 31))
    for step, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[step].double()
        signal, noise_scale = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5
        tile_a, tile_b, tile_c, tile_d = unpack_quadrant_grid(hook.unet_input(pair, t)[:, 8:])
        for tile, reference, noise in ((tile_a, r_a, corner_noise[0]), (tile_d, r_d, corner_noise[1])):
            expected = signal * reference.double() + noise_scale * noise.double()
            torch.testing.assert_close(tile.double(), expected, rtol=0, atol=1e-5)  # float32 arithmetic
        assert torch.equal(pack_pair(tile_b, tile_c), pair)
        if fractional[step]:  # the fraction matters: the integer timestep below stands for another noise level
            assert abs(float(hook.alpha_bar(float(int(t)), 1)) - float(1 / (1 + sigma**2))) > 1e-5


@torch.no_grad()
def test_hook_outputs_tiles_b_and_c_of_one_forward_pass_and_accepts_every_call_style(unet12):
    r_a, r_d, conditions, corner_noise, text = _grid_inputs(batch=1)
    hook = QuadrantGridHook(DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod)
    hook.set_grid(r_a, r_d, conditions, corner_noise=corner_noise)
    pair = pack_pair(_latents(1, 20), _latents(1, 21))
    t = torch.tensor(401)
    full = unet12(hook.unet_input(pair, t), t, text).sample
    _, tile_b, tile_c, _ = unpack_quadrant_grid(full)
    with install_quadrant_grid_hook(unet12, hook):
        positional = unet12(pair, t, text).sample
        keywords = unet12(sample=pair, timestep=t, encoder_hidden_states=text).sample
        as_tuple = unet12(pair, t, text, return_dict=False)
        # classifier-free guidance: the latents concatenated with themselves get the grids repeated
        doubled = unet12(torch.cat([pair, pair]), t, torch.cat([text, text])).sample
    for result in (positional, keywords, as_tuple[0], doubled[:1], doubled[1:]):
        torch.testing.assert_close(result, pack_pair(tile_b, tile_c), rtol=1e-5, atol=1e-6)
    assert isinstance(as_tuple, tuple)


@torch.no_grad()
def test_hook_composes_with_attention_processors_and_restores_exactly(unet12):
    class Scaled(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, *args, **kwargs):
            return 0.5 * super().__call__(attn, hidden_states, *args, **kwargs)

    r_a, r_d, conditions, corner_noise, text = _grid_inputs()
    noise = torch.randn(2, 4, TILE[0], 2 * TILE[1], generator=torch.Generator().manual_seed(3))
    grid_input = torch.randn(2, 12, 2 * TILE[0], 2 * TILE[1], generator=torch.Generator().manual_seed(4))
    baseline = unet12(grid_input, 500, text).sample
    processors_before = unet12.attn_processors

    def run(with_grid_hook):
        scheduler = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG)
        scheduler.set_timesteps(3)
        args = (unet12, scheduler, r_a, r_d, conditions, corner_noise, text, noise)
        return _hooked_sample(*args) if with_grid_hook else _reference_sample(*args, _ddim_alpha(scheduler))

    plain = run(True)
    attention = install_attn_processors(unet12, Scaled())
    try:
        composed, reference = run(True), run(False)
    finally:
        attention.remove()
    torch.testing.assert_close(composed, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(composed, plain, atol=1e-4)  # the processor did act under the grid hook

    # installed together, removed in either order: the UNet is exactly as before
    hook = QuadrantGridHook(DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod)
    for first_removed in ("grid", "attention"):
        grid_handle = install_quadrant_grid_hook(unet12, hook)
        attention = install_attn_processors(unet12, Scaled())
        handles = {"grid": grid_handle, "attention": attention}
        handles[first_removed].remove()
        handles[{"grid": "attention", "attention": "grid"}[first_removed]].remove()
        assert not unet12._forward_pre_hooks and not unet12._forward_hooks
        assert {k: type(v) for k, v in unet12.attn_processors.items()} == {
            k: type(v) for k, v in processors_before.items()
        }
        torch.testing.assert_close(unet12(grid_input, 500, text).sample, baseline, rtol=0, atol=0)


def test_context_manager_restores_after_an_exception(unet12):
    hook = QuadrantGridHook(torch.linspace(0.99, 0.01, 1000))
    with pytest.raises(RuntimeError, match="call set_grid"):
        with install_quadrant_grid_hook(unet12, hook):
            unet12(torch.zeros(1, 4, 4, 8), 10, torch.zeros(1, 77, 32))
    assert not unet12._forward_pre_hooks and not unet12._forward_hooks


def test_hook_errors(unet12, tiny_components):
    hook = QuadrantGridHook(torch.linspace(0.99, 0.01, 1000))
    with pytest.raises(ValueError, match=r"takes 12 input channels .* this one takes 4"):
        install_quadrant_grid_hook(tiny_components.unet, hook)
    with install_quadrant_grid_hook(unet12, hook):
        with pytest.raises(ValueError, match="already installed"):
            install_quadrant_grid_hook(unet12, QuadrantGridHook(torch.linspace(0.99, 0.01, 1000)))
        r_a, r_d, conditions, corner_noise, text = _grid_inputs(batch=2)
        hook.set_grid(r_a, r_d, conditions, corner_noise=corner_noise)
        with pytest.raises(ValueError, match=r"expect tiles b and c side by side: \[batch, 4, 4, 8\]"):
            unet12(torch.zeros(2, 4, 4, 4), 10, text)
        with pytest.raises(ValueError, match="must be a multiple"):
            unet12(torch.zeros(3, 4, 4, 8), 10, torch.zeros(3, 77, 32))
    with pytest.raises(ValueError, match="conditions must hold the latents of frames a, b, c, d"):
        hook.set_grid(r_a, r_d, conditions[:3])
    with pytest.raises(ValueError, match="reference_d has shape"):
        hook.set_grid(r_a, r_d[:1], conditions)


@torch.no_grad()
def test_hook_composes_with_the_cross_attention_recorder(unet12):
    """The toolkit's own CrossAttentionRecorder under the grid hook: the output is unchanged (it is a drop-in for
    AttnProcessor2_0) and it records maps over the whole 2x2 grid, from which tiles b and c can be cut."""
    from hooks import CROSS_ATTENTION, CrossAttentionRecorder

    r_a, r_d, conditions, corner_noise, text = _grid_inputs()
    hook = QuadrantGridHook(DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod)
    hook.set_grid(r_a, r_d, conditions, corner_noise=corner_noise)
    pair = torch.randn(2, 4, TILE[0], 2 * TILE[1], generator=torch.Generator().manual_seed(12))
    recorder = CrossAttentionRecorder(token_indices=[1, 2], latent_size=(2 * TILE[0], 2 * TILE[1]))
    with install_quadrant_grid_hook(unet12, hook):
        plain = unet12(pair, 300, text).sample
        with install_attn_processors(unet12, recorder, CROSS_ATTENTION, cross_attention=True):
            recorded = unet12(pair, 300, text).sample
    torch.testing.assert_close(recorded, plain, rtol=1e-4, atol=1e-5)
    maps = recorder.attention_maps()
    assert maps.shape == (2, 2 * TILE[0], 2 * TILE[1]) and recorder.num_recorded > 0
    _, tile_b, tile_c, _ = unpack_quadrant_grid(maps)
    assert tile_b.shape == tile_c.shape == (2, *TILE)
