"""One timestep of embedding optimisation, for one latent (the source) or a batch of independent frames.

Every latent in the batch has its own embedding and its own optimiser state (Adam, or none for a plain gradient
step), and stops on its own loss, so a batch gives what optimising each latent alone gives (to float tolerance).
Gradients are taken with `torch.autograd.grad` with respect to the embeddings only: no weight gradient is computed or
stored on the models.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .ddim import DDIMSchedule, guided_noise
from .denoiser import ControlledDenoiser
from .finite import ensure_finite
from .settings import PACMSettings

#: Opens an attention recording around one forward pass; the yielded function returns `[batch, h, w]` maps after it.
Recording = Callable[[], AbstractContextManager[Callable[[], torch.Tensor]]]


@dataclass
class OptimizedStep:
    """The outcome of one timestep for a batch of `n` latents.

    Args:
        embeddings (`torch.Tensor`): `[n, L, D]` float32 optimised embeddings (detached).
        samples (`torch.Tensor`): `[n, 4, h, w]` the DDIM samples carried to the next step.
        attention_maps (`torch.Tensor | None`): `[n, h, w]` subject-token maps of the conditional pass that produced
            `samples`, when recorded.
    """

    embeddings: torch.Tensor
    samples: torch.Tensor
    attention_maps: torch.Tensor | None


def optimize_step(
    denoiser: ControlledDenoiser,
    schedule: DDIMSchedule,
    step: int,
    latents: torch.Tensor,
    poses: torch.Tensor,
    start: torch.Tensor,
    fixed: torch.Tensor,
    target: torch.Tensor,
    settings: PACMSettings,
    inner_steps: int,
    *,
    optimizer: str,
    learning_rate: float,
    resample: bool,
    stage: str,
    recording: Recording | None = None,
) -> OptimizedStep:
    """Optimises one embedding per latent so that the guided DDIM step from `latents` lands on `target`.

    The non-optimised guidance branch is evaluated once, without gradients. Then, up to `inner_steps` times: one
    forward pass of the optimised branch, the MSE of the guided step to the target, and an optimiser step on the
    latents whose loss is still above `settings.early_stop_threshold(step)`.

    Args:
        denoiser ([`ControlledDenoiser`]): UNet and ControlNet.
        schedule ([`DDIMSchedule`]): sampling schedule.
        step (`int`): 0-based sampling step.
        latents (`torch.Tensor`): `[n, 4, h, w]` latents at `schedule.timesteps[step]`.
        poses (`torch.Tensor`): `[n, 3, H, W]` ControlNet condition images.
        start (`torch.Tensor`): `[n, L, D]` embeddings to start from.
        fixed (`torch.Tensor`): `[L, D]` embedding of the other guidance slot.
        target (`torch.Tensor`): `[1, 4, h, w]` where the step should land (the source trajectory, for every latent).
        settings ([`PACMSettings`]): guidance, slot and early stop.
        inner_steps (`int`): the most gradient steps per latent.
        optimizer (`str`): `"adam"` (a fresh Adam for this timestep) or `"gradient"` (`∅ ← ∅ - lr·∇`).
        learning_rate (`float`): Adam's learning rate, or the gradient step's size.
        resample (`bool`): after the last gradient step, sample once more with the final embeddings (null-text
            inversion; the carried sample then is what generation will compute). Otherwise the carried sample is the
            one of the last forward pass, before its update (Alg. 1: sample, then update).
        stage (`str`): stage name, for error messages.
        recording (`Recording`, *optional*): records the subject-token maps of the conditional passes.

    Returns:
        [`OptimizedStep`]: embeddings, carried samples and maps.
    """
    n = latents.shape[0]
    timestep = int(schedule.timesteps[step])
    conditional_is_optimized = settings.optimized_slot == "conditional"
    record_optimized = recording if conditional_is_optimized else None
    record_fixed = None if conditional_is_optimized else recording
    maps: torch.Tensor | None = None

    with torch.no_grad(), open_recording(record_fixed) as fixed_maps:
        fixed_noise = denoiser(latents, timestep, fixed.expand(n, *fixed.shape), poses)
    if record_fixed is not None:
        maps = fixed_maps()

    params = [embedding.detach().clone().requires_grad_(True) for embedding in start]
    if optimizer not in ("adam", "gradient"):
        raise ValueError(f"optimizer={optimizer!r}; choose 'adam' or 'gradient'.")
    # Plain SGD without momentum is exactly the gradient step; each parameter's step uses its own gradient only.
    update = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(params, lr=learning_rate)
    threshold = settings.early_stop_threshold(step)
    samples = torch.empty_like(latents)
    active = list(range(n))
    for inner in range(inner_steps + 1):
        last = inner == inner_steps
        if last and inner > 0 and not resample:
            break
        with torch.set_grad_enabled(not last), open_recording(record_optimized) as optimized_maps:
            noise = denoiser(latents[active], timestep, torch.stack([params[i] for i in active]), poses[active])
            pair = (fixed_noise[active], noise) if conditional_is_optimized else (noise, fixed_noise[active])
            sampled = schedule.sample_step(latents[active], guided_noise(*pair, settings.guidance_scale), step)
            losses = (sampled - target).pow(2).flatten(1).mean(1)
        ensure_finite(losses, "loss", stage, step, len(schedule))
        samples[active] = sampled.detach()
        if record_optimized is not None:
            recorded = optimized_maps()
            maps = recorded.new_zeros(n, *recorded.shape[1:]) if maps is None else maps
            maps[active] = recorded
        if last:
            break
        still = [position for position, loss in enumerate(losses.tolist()) if loss >= threshold]
        if not still:
            break
        gradients = torch.autograd.grad(losses[still].sum(), [params[active[position]] for position in still])
        for param in params:
            param.grad = None
        for position, gradient in zip(still, gradients, strict=True):
            params[active[position]].grad = gradient
        update.step()
        active = [active[position] for position in still]
    embeddings = torch.stack([param.detach() for param in params])
    ensure_finite(embeddings, "embeddings", stage, step, len(schedule))
    return OptimizedStep(embeddings=embeddings, samples=samples, attention_maps=maps)


def open_recording(recording: Recording | None) -> AbstractContextManager[Callable[[], torch.Tensor | None]]:
    """Opens `recording` around a forward pass, or, when it is `None`, a block whose maps are `None`."""
    return nullcontext(lambda: None) if recording is None else recording()
