"""All-frame attention: the self-attention inflation of ControlVideo and Make-Your-Anchor, without training.

Every frame's queries attend to the keys and values of every frame of its guidance chunk (one softmax over all of
them), which ties the frames of a window together more tightly than cross-frame attention to an anchor. The frames
of a chunk are laid end to end along the token axis, so it is one attention call over `chunks` rows with nothing
copied F times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .projection import finish, project


class AllFrameAttnProcessor:
    """Self-attention over all frames of the batch's guidance chunk, for `attn1` layers.

    Args:
        cfg_chunks (`int`, *optional*, defaults to 2): guidance chunks in the batch (`[chunk 0: frames, chunk 1:
            frames, ...]`, diffusers' layout); frames of different chunks never attend to each other.

    Example:

    ```py
    >>> with install_attn_processors(pipe.unet, AllFrameAttnProcessor(cfg_chunks=2)):
    ...     frames = pipe([prompt] * 8, image=poses, guidance_scale=7.5).images
    ```
    """

    def __init__(self, cfg_chunks: int = 2):
        if cfg_chunks < 1:
            raise ValueError(f"cfg_chunks must be at least 1, got {cfg_chunks}.")
        self.cfg_chunks = cfg_chunks

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(
                "AllFrameAttnProcessor replaces self-attention without an attention mask: install it on attn1 layers."
            )
        projected = project(attn, hidden_states, None, temb)
        batch, heads, tokens, head_dim = projected.query.shape
        if batch % self.cfg_chunks:
            raise ValueError(f"A batch of {batch} does not split into cfg_chunks={self.cfg_chunks} guidance chunks.")

        def chunked(tensor: torch.Tensor) -> torch.Tensor:
            # [chunks * frames, heads, tokens, d] -> [chunks, heads, frames * tokens, d]
            frames = tensor.view(self.cfg_chunks, batch // self.cfg_chunks, heads, tokens, head_dim)
            return frames.transpose(1, 2).reshape(self.cfg_chunks, heads, -1, head_dim)

        attended = F.scaled_dot_product_attention(
            chunked(projected.query), chunked(projected.key), chunked(projected.value), scale=attn.scale
        )
        attended = attended.view(self.cfg_chunks, heads, batch // self.cfg_chunks, tokens, head_dim).transpose(1, 2)
        return finish(attn, attended.reshape(batch, heads, tokens, head_dim), projected)
