"""Quadrant-grid arrangement (QGA, Qffusion): a UNet input/output hook that turns a stock 12-channel diffusers UNet
into a dual-reference frame generator.

A Qffusion UNet sees four frames a, b, c, d at once, as 2x2 grids of latents stacked along the channels (paper Eq. 5):

```
reference grid  [[r_a, 0  ],     condition grid  [[c_a, c_b],     noisy grid  [[z_a, z_b],
                 [0,   r_d]]                      [c_c, c_d]]                  [z_c, z_d]]
```

`r_a` and `r_d` are the latents of the two reference frames, `c_*` the latents of the four condition images, `z_*`
the noisy latents. The UNet input is `cat([reference, condition, noisy], dim=1)` (12 channels for Stable
Diffusion's 4) at twice the tile size; it predicts noise for the whole noisy grid, of which tiles b (top-right) and c
(bottom-left) are the two frames being generated.

[`QuadrantGridHook`] lets any sampling loop and any diffusers scheduler drive such a UNet as if it were an ordinary
4-channel one. The loop's latents hold only the two generated tiles, side by side (`[batch, 4, h, 2w]`, tile b left of
tile c: see [`pack_pair`]). Before each forward pass the hook builds the 12-channel grid input from them; after it, the
hook reads tiles b and c of the prediction back out into the same side-by-side layout. The scheduler therefore steps
on exactly the tiles it generates, whatever its algorithm.

The noisy tiles a and d hold the references diffused to the noise level of the current timestep,
`sqrt(alpha_bar_t) * r + sqrt(1 - alpha_bar_t) * noise`, with one fixed noise draw per tile. This is what those tiles
hold in training: there, the four tiles of the noisy grid are the four ground-truth frames diffused to `t`, and tiles
a and d *are* the references. The UNet's predictions for tiles a and d are discarded.

The hook uses PyTorch's removable module hooks (`register_forward_pre_hook` / `register_forward_hook`), so it never
touches the UNet's `forward` and composes with attention processors installed by
[`~hooks.install.install_attn_processors`] and with accelerate's device hooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from .install import HookHandle

#: Order of the three grids along the channels of the UNet input (paper Eq. 5 and 6: the noisy grid comes last).
GRID_CHANNEL_ORDER = ("reference", "condition", "noisy")


def pack_quadrant_grid(tiles: Sequence[torch.Tensor]) -> torch.Tensor:
    """Arranges four `[..., h, w]` tiles a, b, c, d into one `[..., 2h, 2w]` grid `[[a, b], [c, d]]`.

    Args:
        tiles (`Sequence[torch.Tensor]`): tiles a (top-left), b (top-right), c (bottom-left), d (bottom-right), all of
            one shape.

    Returns:
        `torch.Tensor`: the grid.
    """
    if len(tiles) != 4:
        raise ValueError(f"A quadrant grid has 4 tiles (a, b, c, d), got {len(tiles)}.")
    shapes = {tuple(tile.shape) for tile in tiles}
    if len(shapes) != 1:
        raise ValueError(f"The four tiles of a quadrant grid must have one shape, got {sorted(shapes)}.")
    a, b, c, d = tiles
    return torch.cat([torch.cat([a, b], dim=-1), torch.cat([c, d], dim=-1)], dim=-2)


def unpack_quadrant_grid(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Splits a `[..., 2h, 2w]` grid into its tiles a (top-left), b (top-right), c (bottom-left), d (bottom-right).

    The inverse of [`pack_quadrant_grid`].
    """
    height, width = grid.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(f"A quadrant grid has even height and width, got {height}x{width}.")
    h, w = height // 2, width // 2
    return grid[..., :h, :w], grid[..., :h, w:], grid[..., h:, :w], grid[..., h:, w:]


def pack_pair(tile_b: torch.Tensor, tile_c: torch.Tensor) -> torch.Tensor:
    """Puts the two generated tiles side by side, `[..., h, 2w]` with b on the left: the layout of the latents a
    sampling loop holds while [`QuadrantGridHook`] is installed.
    """
    if tile_b.shape != tile_c.shape:
        raise ValueError(f"Tiles b and c must have one shape, got {tuple(tile_b.shape)} and {tuple(tile_c.shape)}.")
    return torch.cat([tile_b, tile_c], dim=-1)


def unpack_pair(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits side-by-side latents `[..., h, 2w]` into tiles b and c; the inverse of [`pack_pair`]."""
    width = pair.shape[-1]
    if width % 2:
        raise ValueError(f"A pair of tiles has an even width, got {width}.")
    return pair[..., : width // 2], pair[..., width // 2 :]


def reference_grid(reference_a: torch.Tensor, reference_d: torch.Tensor) -> torch.Tensor:
    """The reference grid `[[r_a, 0], [0, r_d]]`: the two references on the diagonal, zeros where b and c go."""
    zeros = torch.zeros_like(reference_a)
    return pack_quadrant_grid([reference_a, zeros, zeros, reference_d])


def quadrant_grid_input(reference: torch.Tensor, condition: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """The UNet input of QGA: the reference, condition and noisy grids concatenated along the channels, in the order
    of `GRID_CHANNEL_ORDER`.

    Args:
        reference (`torch.Tensor`): the reference grid, `[batch, C, 2h, 2w]` (see [`reference_grid`]).
        condition (`torch.Tensor`): the condition grid `[[c_a, c_b], [c_c, c_d]]`, same shape.
        noisy (`torch.Tensor`): the noisy grid `[[z_a, z_b], [z_c, z_d]]`, same shape.

    Returns:
        `torch.Tensor`: `[batch, 3C, 2h, 2w]`.
    """
    if not reference.shape == condition.shape == noisy.shape:
        raise ValueError(
            f"The reference, condition and noisy grids must have one shape, got {tuple(reference.shape)}, "
            f"{tuple(condition.shape)} and {tuple(noisy.shape)}."
        )
    return torch.cat([reference, condition, noisy], dim=1)


@dataclasses.dataclass
class _Grids:
    """What one call of [`QuadrantGridHook.set_grid`] fixes: everything but the noisy tiles b and c."""

    reference: torch.Tensor  # [B, C, 2h, 2w]
    condition: torch.Tensor  # [B, C, 2h, 2w]
    clean_corners: torch.Tensor  # [2, B, C, h, w]: r_a, r_d
    corner_noise: torch.Tensor  # [2, B, C, h, w]


class QuadrantGridHook:
    """Feeds a 12-channel Qffusion UNet from a sampling loop whose latents are the generated tiles b and c only.

    Configure it with [`set_grid`] (references, conditions, noise for tiles a and d), install it with
    [`install_quadrant_grid_hook`], then run any diffusers scheduler over latents `[batch, 4, h, 2w]` (tile b left of
    tile c, see [`pack_pair`]) as for an ordinary UNet. A batch that is a multiple of the grids' batch (classifier-free
    guidance concatenates the latents with themselves) gets the grids repeated in the same way.

    The noisy tiles a and d hold the references diffused to the noise level that the UNet's timestep stands for in
    the training noise schedule (`alphas_cumprod`). For fractional timesteps (Euler, LMS and Heun schedulers) the
    noise scale `sigma = sqrt((1 - alpha_bar) / alpha_bar)` is interpolated linearly between integer timesteps, as
    those schedulers place their default sigmas. (Schedulers that pick sigmas first and convert them to timesteps,
    such as Karras sigmas or KDPM2's midpoints, interpolate `log sigma` instead; within one integer timestep the two
    differ by under 2% of sigma.) The lookup runs on the UNet's device with no host-device synchronisation.

    Args:
        alphas_cumprod (`torch.Tensor`): the training noise schedule, as every diffusers scheduler of Stable Diffusion
            holds it (`scheduler.alphas_cumprod`).

    Example:

    ```py
    >>> hook = QuadrantGridHook(pipe.scheduler.alphas_cumprod)
    >>> hook.set_grid(r_a, r_d, (c_a, c_b, c_c, c_d), generator=generator)
    >>> latents = torch.randn(1, 4, h, 2 * w) * scheduler.init_noise_sigma
    >>> with install_quadrant_grid_hook(unet, hook):
    ...     for t in scheduler.timesteps:
    ...         noise = unet(scheduler.scale_model_input(latents, t), t, text).sample
    ...         latents = scheduler.step(noise, t, latents).prev_sample
    >>> tile_b, tile_c = unpack_pair(latents)
    ```
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        alphas = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().flatten()
        if alphas.numel() < 2 or not bool(((alphas > 0) & (alphas <= 1)).all()):
            raise ValueError("alphas_cumprod must hold at least two values in (0, 1].")
        # sigma = sqrt((1 - alpha_bar) / alpha_bar) per training timestep, in float64 here; a float32 copy goes to the
        # device the UNet runs on, once, so that no call moves the schedule or the timestep between devices.
        self._sigmas = ((1 - alphas) / alphas).sqrt()
        self._device_sigmas = self._sigmas.float()
        self._grids: _Grids | None = None

    def set_grid(
        self,
        reference_a: torch.Tensor,
        reference_d: torch.Tensor,
        conditions: Sequence[torch.Tensor],
        *,
        corner_noise: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Fixes the references, conditions and tile-a/d noise for the next sampling run.

        Args:
            reference_a (`torch.Tensor`): latents of the reference before the generated frames, `[B, C, h, w]`.
            reference_d (`torch.Tensor`): latents of the reference after them, same shape.
            conditions (`Sequence[torch.Tensor]`): latents of the condition images of frames a, b, c, d, same shape.
            corner_noise (`Sequence[torch.Tensor]`, *optional*): the noise that diffuses tiles a and d (two tensors
                of the references' shape); drawn with `generator` when not given.
            generator (`torch.Generator`, *optional*): random source for `corner_noise`.
        """
        if len(conditions) != 4:
            raise ValueError(f"conditions must hold the latents of frames a, b, c, d, got {len(conditions)}.")
        shape = tuple(reference_a.shape)
        if len(shape) != 4:
            raise ValueError(f"Latents must be [batch, channels, height, width], got shape {shape}.")
        named = [("reference_d", reference_d), *((f"conditions[{i}]", c) for i, c in enumerate(conditions))]
        for name, tensor in named:
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)} but reference_a has {shape}.")
        if corner_noise is None:
            noise = randn_tensor((2, *shape), generator=generator, device=reference_a.device, dtype=reference_a.dtype)
        else:
            if len(corner_noise) != 2 or any(tuple(n.shape) != shape for n in corner_noise):
                raise ValueError(f"corner_noise must be two tensors of shape {shape}.")
            noise = torch.stack(list(corner_noise))
        self._grids = _Grids(
            reference=reference_grid(reference_a, reference_d),
            condition=pack_quadrant_grid(list(conditions)),
            clean_corners=torch.stack([reference_a, reference_d]),
            corner_noise=noise,
        )

    def reset(self) -> None:
        """Forgets the grids set by [`set_grid`]."""
        self._grids = None

    def _sigmas_on(self, device: torch.device) -> torch.Tensor:
        if self._device_sigmas.device != device:
            self._device_sigmas = self._sigmas.to(device, torch.float32)
        return self._device_sigmas

    def alpha_bar(
        self, timestep: float | torch.Tensor, batch_size: int, device: torch.device | None = None
    ) -> torch.Tensor:
        """`alpha_bar` of the training schedule at `timestep` (a number, or one per batch element), `[batch_size]`
        float32, computed on `device` (by default the timestep's; the CPU for a number) without synchronising with
        the host: the schedule is copied to a device once, and the lookup runs there."""
        if device is None:
            device = timestep.device if isinstance(timestep, torch.Tensor) else torch.device("cpu")
        sigmas = self._sigmas_on(device)
        t = torch.as_tensor(timestep, device=device).detach().to(sigmas.dtype).flatten()
        if t.numel() == 1:
            t = t.expand(batch_size)
        if t.numel() != batch_size:
            raise ValueError(f"Got {t.numel()} timesteps for a batch of {batch_size}.")
        last = len(sigmas) - 1
        t = t.clamp(0, last)
        low = t.floor().long()
        high = (low + 1).clamp(max=last)
        sigma = torch.lerp(sigmas[low], sigmas[high], t - low)
        return 1 / (1 + sigma**2)

    def _grids_for(self, batch_size: int) -> _Grids:
        if self._grids is None:
            raise RuntimeError("QuadrantGridHook has no grid: call set_grid(...) before running the UNet.")
        grids = self._grids
        grid_batch = grids.reference.shape[0]
        if batch_size % grid_batch:
            raise ValueError(
                f"The UNet got a batch of {batch_size} but the grids hold {grid_batch}: the batch must be a multiple "
                f"of it (for classifier-free guidance, the latents concatenated with themselves)."
            )
        repeats = batch_size // grid_batch
        if repeats == 1:
            return grids
        return _Grids(
            reference=grids.reference.repeat(repeats, 1, 1, 1),
            condition=grids.condition.repeat(repeats, 1, 1, 1),
            clean_corners=grids.clean_corners.repeat(1, repeats, 1, 1, 1),
            corner_noise=grids.corner_noise.repeat(1, repeats, 1, 1, 1),
        )

    def unet_input(self, pair: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """The 12-channel UNet input for side-by-side latents `pair` (`[batch, C, h, 2w]`) at `timestep`."""
        grids = self._grids_for(pair.shape[0])
        channels, height, width = grids.clean_corners.shape[2:]
        if pair.ndim != 4 or tuple(pair.shape[1:]) != (channels, height, 2 * width):
            raise ValueError(
                f"The UNet got latents of shape {tuple(pair.shape)}, but the grids expect tiles b and c side by side: "
                f"[batch, {channels}, {height}, {2 * width}]."
            )
        alpha_bar = self.alpha_bar(timestep, pair.shape[0], pair.device).view(-1, 1, 1, 1)
        signal = alpha_bar.sqrt().to(pair.dtype)
        noise_scale = (1 - alpha_bar).sqrt().to(pair.dtype)
        clean = grids.clean_corners.to(pair.device, pair.dtype)
        noise = grids.corner_noise.to(pair.device, pair.dtype)
        tile_a, tile_d = signal * clean + noise_scale * noise
        tile_b, tile_c = unpack_pair(pair)
        noisy = pack_quadrant_grid([tile_a, tile_b, tile_c, tile_d])
        return quadrant_grid_input(grids.reference.to(pair.device, pair.dtype), grids.condition.to(noisy), noisy)

    @staticmethod
    def unet_output(grid: torch.Tensor) -> torch.Tensor:
        """Tiles b and c of the UNet's `[batch, C, 2h, 2w]` prediction, side by side (`[batch, C, h, 2w]`)."""
        _, tile_b, tile_c, _ = unpack_quadrant_grid(grid)
        return pack_pair(tile_b, tile_c)

    def _pre_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            sample, rest = args[0], args[1:]
        else:
            sample, rest = kwargs.pop("sample"), ()
        timestep = rest[0] if rest else kwargs["timestep"]
        return (self.unet_input(sample, timestep), *rest), kwargs

    def _post_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> object:
        if isinstance(output, tuple):
            return (self.unet_output(output[0]), *output[1:])
        return dataclasses.replace(output, sample=self.unet_output(output.sample))


def install_quadrant_grid_hook(unet: torch.nn.Module, hook: QuadrantGridHook) -> HookHandle:
    """Installs `hook` on a 12-channel UNet with PyTorch's removable forward hooks.

    Args:
        unet (`torch.nn.Module`): a diffusers `UNet2DConditionModel` whose `in_channels` is three times its
            `out_channels` (a Qffusion checkpoint).
        hook ([`QuadrantGridHook`]): the configured hook.

    Returns:
        [`~hooks.install.HookHandle`]: removes both forward hooks; the UNet is then exactly as before.

    Raises:
        `ValueError`: the UNet does not take three grids, or a quadrant-grid hook is already installed on it.

    Example:

    ```py
    >>> with install_quadrant_grid_hook(unet, hook):
    ...     prediction = unet(pair_latents, t, text).sample  # tiles b and c, side by side
    ```
    """
    config = unet.config
    if config.in_channels != 3 * config.out_channels:
        raise ValueError(
            f"A quadrant-grid UNet takes {3 * config.out_channels} input channels (reference, condition and noisy "
            f"grids of {config.out_channels}); this one takes {config.in_channels}."
        )
    if any(isinstance(getattr(fn, "__self__", None), QuadrantGridHook) for fn in unet._forward_pre_hooks.values()):
        raise ValueError("A QuadrantGridHook is already installed on this UNet; remove it first.")
    pre_handle = unet.register_forward_pre_hook(hook._pre_forward, with_kwargs=True)
    post_handle = unet.register_forward_hook(hook._post_forward, with_kwargs=True)

    def restore() -> None:
        pre_handle.remove()
        post_handle.remove()

    return HookHandle(restore, ["forward_pre_hook", "forward_hook"])
