"""The parts of an attention processor that every processor of this package shares with diffusers' own.

[`project`] and [`finish`] do exactly what diffusers' `AttnProcessor2_0` does before and after its
`scaled_dot_product_attention` call (spatial norm, 4-D inputs, group norm, projections, q/k norms, output projection,
residual, rescaling), so a processor only has to say how queries meet keys and values. Keeping them in one place
is what makes "λ = (0, 0, 1) equals `AttnProcessor2_0`" hold for every layer type diffusers builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention


@dataclass
class Projected:
    """Queries, keys and values of one attention call, split into heads, plus what [`finish`] needs.

    Args:
        query (`torch.Tensor`): `[batch, heads, queries, head_dim]`.
        key (`torch.Tensor`): `[batch, heads, keys, head_dim]`.
        value (`torch.Tensor`): `[batch, heads, keys, head_dim]`.
        residual (`torch.Tensor`): the layer's input, for `attn.residual_connection`.
        spatial_shape (`tuple[int, int, int]`, *optional*): `(channels, height, width)` when the input was 4-D.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    residual: torch.Tensor
    spatial_shape: tuple[int, int, int] | None


def split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """`[batch, tokens, heads * head_dim]` -> `[batch, heads, tokens, head_dim]`."""
    batch, tokens, inner = tensor.shape
    return tensor.view(batch, tokens, heads, inner // heads).transpose(1, 2)


def project(
    attn: Attention,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
) -> Projected:
    """Everything `AttnProcessor2_0` does before its attention call: norms and the q, k, v projections."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial_shape = None
    if hidden_states.ndim == 4:
        batch, channels, height, width = hidden_states.shape
        spatial_shape = (channels, height, width)
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    query = split_heads(query, attn.heads)
    key = split_heads(attn.to_k(encoder_hidden_states), attn.heads)
    value = split_heads(attn.to_v(encoder_hidden_states), attn.heads)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return Projected(query, key, value, residual, spatial_shape)


def finish(attn: Attention, attended: torch.Tensor, projected: Projected) -> torch.Tensor:
    """Everything `AttnProcessor2_0` does after its attention call, from `[batch, heads, queries, head_dim]`."""
    batch, heads, tokens, head_dim = attended.shape
    hidden_states = attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
    hidden_states = hidden_states.to(projected.query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if projected.spatial_shape is not None:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, *projected.spatial_shape)
    if attn.residual_connection:
        hidden_states = hidden_states + projected.residual
    return hidden_states / attn.rescale_output_factor
