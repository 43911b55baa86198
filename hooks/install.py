"""Installing hooks on stock diffusers models, and taking them off again exactly.

Attention processors are selected by name over `model.attn_processors` (keys such as
`up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor`), never by class name or hard-coded module paths, so
the same call works on Stable Diffusion 1.5, on tiny test UNets and on ControlNets. Every installer returns a
[`HookHandle`] that restores what it replaced, also when used as a context manager around code that raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

#: Self-attention of the UNet up blocks: where PoseAnimate's dual-consistency attention goes.
UP_BLOCK_SELF_ATTENTION = r"^up_blocks\..*\.attn1\.processor$"
#: Every cross-attention (text) layer.
CROSS_ATTENTION = r"\.attn2\.processor$"


class HookHandle:
    """Undoes one installation of hooks; use it as a context manager or call [`remove`].

    Args:
        restore (`Callable[[], None]`): puts back what the installation replaced.
        names (`Sequence[str]`): what was hooked (for example the processor names), for inspection.

    Example:

    ```py
    >>> with install_attn_processors(unet, processor):
    ...     image = pipe(...).images  # hooked
    >>> # here the UNet computes exactly what it computed before
    ```
    """

    def __init__(self, restore: Callable[[], None], names: Sequence[str]):
        self._restore: Callable[[], None] | None = restore
        self.names: tuple[str, ...] = tuple(names)

    @property
    def active(self) -> bool:
        """Whether the hooks are still installed."""
        return self._restore is not None

    def remove(self) -> None:
        """Restores what was replaced. Calling it again does nothing."""
        if self._restore is not None:
            restore, self._restore = self._restore, None
            restore()

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.names)} hooks, {'active' if self.active else 'removed'})"


def select_attn_processor_names(
    model: torch.nn.Module, include: str = UP_BLOCK_SELF_ATTENTION, *, cross_attention: bool | None = None
) -> list[str]:
    """Names of the attention processors of `model` that `include` matches (`re.search`).

    Args:
        model (`torch.nn.Module`): a diffusers model with `attn_processors` (UNet, ControlNet, ...).
        include (`str`, *optional*, defaults to `UP_BLOCK_SELF_ATTENTION`): regular expression over processor names.
        cross_attention (`bool`, *optional*): keep only cross-attention layers (`True`), only self-attention layers
            (`False`), or both (`None`), as the `Attention` module's `is_cross_attention` says.

    Raises:
        `ValueError`: nothing matches.
    """
    names = list(model.attn_processors)
    pattern = re.compile(include)
    selected = [name for name in names if pattern.search(name)]
    if cross_attention is not None:
        selected = [
            name
            for name in selected
            if model.get_submodule(name.removesuffix(".processor")).is_cross_attention == cross_attention
        ]
    if not selected:
        kind = {None: "", True: " cross-attention", False: " self-attention"}[cross_attention]
        examples = ", ".join(names[:3]) or "none: the model has no attention layers"
        raise ValueError(
            f"The pattern {include!r} matches none of the {len(names)}{kind} attention processors of "
            f"{type(model).__name__} (names look like: {examples})."
        )
    return selected


def install_attn_processors(
    model: torch.nn.Module,
    processor: object,
    include: str = UP_BLOCK_SELF_ATTENTION,
    *,
    cross_attention: bool | None = None,
) -> HookHandle:
    """Sets `processor` on the attention layers of `model` whose processor names match `include`.

    One processor instance serves every selected layer; diffusers passes it the layer's `Attention` module on each
    call, which is enough to keep per-layer state. The handle restores the replaced processors only, so hooks on
    other layers (a cross-attention recorder beside a self-attention hook, say) are left alone; hooks that overlap on
    the same layers must be removed in reverse order of installation.

    Args:
        model (`torch.nn.Module`): a diffusers model with `attn_processors` and `set_attn_processor`.
        processor (attention processor): a callable with diffusers' processor signature
            `(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs)`.
        include (`str`, *optional*, defaults to `UP_BLOCK_SELF_ATTENTION`): regular expression over processor names.
        cross_attention (`bool`, *optional*): restrict to cross- (`True`) or self-attention (`False`) layers.

    Returns:
        [`HookHandle`]: restores the previous processors of the selected layers.

    Raises:
        `ValueError`: the selection matches no layer.

    Example:

    ```py
    >>> from hooks import DualConsistencyAttnProcessor, install_attn_processors
    >>> with install_attn_processors(pipe.unet, DualConsistencyAttnProcessor(cfg_chunks=2)):
    ...     frames = pipe(prompt, image=poses, num_images_per_prompt=1).images
    ```
    """
    selected = select_attn_processor_names(model, include, cross_attention=cross_attention)
    current = model.attn_processors
    replaced = {name: current[name] for name in selected}
    model.set_attn_processor({**current, **dict.fromkeys(selected, processor)})

    def restore() -> None:
        # set_attn_processor empties the dict it is given: always hand it a fresh one.
        model.set_attn_processor({**model.attn_processors, **replaced})

    return HookHandle(restore, selected)
