"""PoseAnimate's dual consistency attention (Sec. 3.3) with mask-guided decoupling (Sec. 3.4).

For frame `i >= 1` of a sequence, self-attention becomes

    DCA_i = λ1·A(Q_i, K_0, V_0) + λ2·A(Q_i, K_{i-1}, V_{i-1}) + λ3·A(Q_i, K_i, V_i)

and frame 0 (the source image) keeps plain self-attention. All the attentions of one call run as one batched
`scaled_dot_product_attention`: each (query frame, source frame) pair is a row of the batch, duplicate sources are
merged (frame 1's first two terms both read frame 0) and terms with λ = 0 are dropped.

Mask-guided decoupling lets character and background attend separately. With hard masks, the default
(`"exclusive"`) lets each query see only the keys of its own region, falling back to every key when the source frame
has no key of that region. The exclusion is folded into the same attention call by two extra query/key features
whose dot product is 0 for same-region pairs and a large negative logit otherwise, so it costs three attentions,
not six, and no `[queries, keys]` mask is ever built. Soft masks blend a character and a background attention
(keys weighted by the mask inside the softmax); `"literal"` is the paper's form, keys and values multiplied by the
mask, blended by the query frame's mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .grid import is_hard, resize_masks, token_grid
from .projection import finish, project
from .state import CrossFrameState, FrameLayout

Decoupling = Literal["exclusive", "literal"]
DECOUPLINGS: tuple[str, ...] = ("exclusive", "literal")

#: Logit added to a query-key pair of different regions under hard exclusive decoupling: exp(-1000) is 0 in float32.
_REGION_PENALTY = 1000.0


@dataclass
class _Plan:
    """The (query row, source row, weight) triples of one call; rows index the batch and the key bank."""

    query_rows: list[int]
    source_rows: list[int]
    weights: list[float]
    query_frames: list[int]
    source_frames: list[int]


@dataclass
class _Regions:
    """Masks of one call on a layer's token grid, per (query frame, source frame) pair.

    Args:
        query_masks (`torch.Tensor`): `[pairs, tokens]`, the query frame's mask.
        source_masks (`torch.Tensor`): `[pairs, tokens]`, the source frame's mask.
        decoupled (`torch.Tensor`): `[pairs]` bool, False for frame 0's pairs (plain self-attention).
        hard (`bool`): whether every mask holds only 0 and 1.
    """

    query_masks: torch.Tensor
    source_masks: torch.Tensor
    decoupled: torch.Tensor
    hard: bool


class DualConsistencyAttnProcessor:
    """Dual consistency attention for the self-attention (`attn1`) layers of a UNet, with mask-guided decoupling.

    The batch of each call is `[chunk 0: frames, chunk 1: frames, ...]` (diffusers' guidance layout): by default
    `cfg_chunks` chunks of frames `0 .. F-1`; `state.frame_ids` and `state.chunks` override that. Decoupling turns
    on when `state.masks` is set; frame 0 is never decoupled, so it stays plain self-attention.

    Args:
        lambdas (`tuple[float, float, float]`, *optional*, defaults to `(0.7, 0.15, 0.15)`): weights of the
            attention to frame 0, to the previous frame and to the frame itself; non-negative, summing to 1.
            `(0, 0, 1)` is plain self-attention, `(1, 0, 0)` frame-0 cross-frame attention (Text2Video-Zero).
        cfg_chunks (`int`, *optional*, defaults to 2): guidance chunks in the batch when `state.chunks` is unset
            (2 with classifier-free guidance, 1 without).
        state ([`CrossFrameState`], *optional*): the shared per-call state (frame ids, step, masks, windows cache).
            Defaults to a fresh `"batch"`-mode state, which suits a pipeline that batches every frame.
        decoupling (`str`, *optional*, defaults to `"exclusive"`): how masks decouple character and background:
            `"exclusive"` (each query attends to its own region's keys) or `"literal"` (the paper's masked keys and
            values).

    Example:

    ```py
    >>> from hooks import DualConsistencyAttnProcessor, install_attn_processors
    >>> processor = DualConsistencyAttnProcessor(lambdas=(0.7, 0.15, 0.15), cfg_chunks=2)
    >>> with install_attn_processors(pipe.unet, processor):  # attn1 of the up blocks
    ...     frames = pipe([prompt] * 8, image=poses, guidance_scale=7.5).images  # frame 0 is the anchor
    ```
    """

    def __init__(
        self,
        lambdas: Sequence[float] = (0.7, 0.15, 0.15),
        cfg_chunks: int = 2,
        state: CrossFrameState | None = None,
        decoupling: Decoupling = "exclusive",
    ):
        self.lambdas = tuple(float(weight) for weight in lambdas)
        if len(self.lambdas) != 3 or min(self.lambdas) < 0 or not math.isclose(sum(self.lambdas), 1.0, abs_tol=1e-6):
            raise ValueError(f"lambdas must be three non-negative weights summing to 1, got {tuple(lambdas)}.")
        if cfg_chunks < 1:
            raise ValueError(f"cfg_chunks must be at least 1, got {cfg_chunks}.")
        if decoupling not in DECOUPLINGS:
            raise ValueError(f"decoupling must be one of {DECOUPLINGS}, got {decoupling!r}.")
        self.cfg_chunks = cfg_chunks
        self.state = state if state is not None else CrossFrameState()
        self.decoupling = decoupling

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
                "DualConsistencyAttnProcessor replaces self-attention without an attention mask: install it on "
                "attn1 layers only (the default pattern UP_BLOCK_SELF_ATTENTION)."
            )
        projected = project(attn, hidden_states, None, temb)
        layout = self.state.layout(projected.query.shape[0], self.cfg_chunks)
        keys, values, bank_frames = self._key_bank(attn, layout, projected.key, projected.value)
        plan = self._plan(layout, bank_frames)
        attended = self._attend(attn, projected.query, keys, values, plan)
        return finish(attn, attended, projected)

    def _sources(self, frame: int) -> dict[int, float]:
        """Source frame -> weight for one query frame; duplicates merged, zero weights dropped."""
        if frame == 0:
            return {0: 1.0}
        sources: dict[int, float] = {}
        for source, weight in zip((0, frame - 1, frame), self.lambdas, strict=True):
            if weight > 0:
                sources[source] = sources.get(source, 0.0) + weight
        return sources

    def _key_bank(
        self, attn: Attention, layout: FrameLayout, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Keys and values of every source frame: the batch's rows, then cached frames; plus (chunk, frame) per row."""
        bank_frames = [(chunk, frame) for chunk in range(layout.chunks) for frame in layout.frame_ids]
        present = set(layout.frame_ids)
        needed = {source for frame in layout.frame_ids for source in self._sources(frame)}
        missing = sorted(needed - present)
        if missing and self.state.mode == "batch":
            raise ValueError(
                f"Frames {missing} are attended to but not in the batch (frames {list(layout.frame_ids)}). In "
                "'batch' mode every UNet call must hold frame 0 and each frame's predecessor; run long sequences "
                "in lock-step windows with CrossFrameState(mode='windows')."
            )
        if self.state.mode == "windows":
            self._remember(attn, layout, key, value)
            if missing:
                cached = [self.state.recall(attn, frame) for frame in missing]
                key = torch.cat([key, *(entry[0] for entry in cached)])
                value = torch.cat([value, *(entry[1] for entry in cached)])
                bank_frames += [(chunk, frame) for frame in missing for chunk in range(layout.chunks)]
        return key, value, bank_frames

    def _remember(self, attn: Attention, layout: FrameLayout, key: torch.Tensor, value: torch.Tensor) -> None:
        """Caches frame 0 and every frame whose successor is not in this call: what later windows attend to."""
        present = set(layout.frame_ids)
        for position, frame in enumerate(layout.frame_ids):
            anchor = frame == 0 and self.lambdas[0] > 0
            predecessor = frame + 1 not in present and self.lambdas[1] > 0
            if anchor or predecessor:
                rows = [layout.row(chunk, position) for chunk in range(layout.chunks)]
                self.state.remember(attn, frame, key[rows], value[rows])

    def _plan(self, layout: FrameLayout, bank_frames: list[tuple[int, int]]) -> _Plan:
        bank_row = {entry: row for row, entry in enumerate(bank_frames)}
        plan = _Plan([], [], [], [], [])
        for chunk in range(layout.chunks):
            for position, frame in enumerate(layout.frame_ids):
                for source, weight in self._sources(frame).items():
                    plan.query_rows.append(layout.row(chunk, position))
                    plan.source_rows.append(bank_row[chunk, source])
                    plan.weights.append(weight)
                    plan.query_frames.append(frame)
                    plan.source_frames.append(source)
        return plan

    def _attend(
        self, attn: Attention, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: _Plan
    ) -> torch.Tensor:
        device = query.device
        query_rows = torch.tensor(plan.query_rows, device=device)
        source_rows = torch.tensor(plan.source_rows, device=device)
        weights = torch.tensor(plan.weights, device=device, dtype=query.dtype)
        regions = self._regions(query, plan)
        if regions is None:
            attended = F.scaled_dot_product_attention(
                query[query_rows], keys[source_rows], values[source_rows], scale=attn.scale
            )
            attended = attended * weights[:, None, None, None]
        elif self.decoupling == "exclusive" and regions.hard:
            attended = _exclusive_hard(attn, query, keys, values, query_rows, source_rows, regions)
            attended = attended * weights[:, None, None, None]
        else:
            attended = self._two_regions(attn, query, keys, values, query_rows, source_rows, weights, regions)
            query_rows = torch.cat([query_rows, query_rows])
        return torch.zeros_like(query).index_add_(0, query_rows, attended)

    def _regions(self, query: torch.Tensor, plan: _Plan) -> _Regions | None:
        """Per pair: the query frame's and the source frame's masks on this layer's token grid (`None`: no masks)."""
        masks = self.state.masks
        if masks is None:
            return None
        if self.state.latent_size is None:
            raise ValueError("Set `state.latent_size` (the UNet's latent height and width) when setting masks.")
        if masks.ndim != 3:
            raise ValueError(f"state.masks must be [num_frames, height, width], got shape {tuple(masks.shape)}.")
        frames = sorted(set(plan.query_frames) | set(plan.source_frames))
        if frames[-1] >= masks.shape[0]:
            raise ValueError(
                f"state.masks holds {masks.shape[0]} frames but frame {frames[-1]} is attended: give one mask per "
                "frame of the whole sequence, indexed by global frame id."
            )
        selected = masks[frames].to(query.device)
        hard = is_hard(selected)
        grid = token_grid(query.shape[2], self.state.latent_size)
        on_grid = resize_masks(selected, grid, hard=hard).flatten(1).to(query.dtype)  # [frames, tokens]
        index = {frame: row for row, frame in enumerate(frames)}
        query_masks = on_grid[torch.tensor([index[frame] for frame in plan.query_frames], device=query.device)]
        source_masks = on_grid[torch.tensor([index[frame] for frame in plan.source_frames], device=query.device)]
        decoupled = torch.tensor([frame != 0 for frame in plan.query_frames], device=query.device)
        return _Regions(query_masks, source_masks, decoupled, hard)

    def _two_regions(
        self,
        attn: Attention,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        query_rows: torch.Tensor,
        source_rows: torch.Tensor,
        weights: torch.Tensor,
        regions: _Regions,
    ) -> torch.Tensor:
        """Character and background attentions for every pair, blended by the query frame's mask (six attentions).

        Pairs that are not decoupled (frame 0's) get all-ones masks, which makes their two halves sum to plain
        attention.
        """
        ones = torch.ones_like(regions.query_masks)
        decoupled = regions.decoupled[:, None]
        query_masks = torch.where(decoupled, regions.query_masks, ones)
        source_masks = torch.where(decoupled, regions.source_masks, ones)
        key_weights = torch.cat([source_masks, 1 - source_masks])  # [2 * pairs, tokens]
        blend = torch.cat([query_masks, 1 - query_masks]) * torch.cat([weights, weights])[:, None]
        query_rows, source_rows = torch.cat([query_rows, query_rows]), torch.cat([source_rows, source_rows])
        key, value = keys[source_rows], values[source_rows]
        if self.decoupling == "literal":
            key = key * key_weights[:, None, :, None]
            value = value * key_weights[:, None, :, None]
            bias = None
        else:
            empty = key_weights.sum(dim=-1, keepdim=True) == 0
            bias = torch.where(empty, torch.zeros_like(key_weights), key_weights.log())[:, None, None, :]
        attended = F.scaled_dot_product_attention(query[query_rows], key, value, attn_mask=bias, scale=attn.scale)
        return attended * blend[:, None, :, None]


def _exclusive_hard(
    attn: Attention,
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    query_rows: torch.Tensor,
    source_rows: torch.Tensor,
    regions: _Regions,
) -> torch.Tensor:
    """Region-exclusive attention with hard masks, in one attention call over the pairs.

    Two features are appended to queries and keys (then zero padding to a multiple of 8, which fast kernels want):
    query `-c·(m_q·has_char, (1 - m_q)·has_background)`, key `c·(1 - m_k, m_k)`. Their dot product is 0 when query
    and key are in the same region and `-c²` otherwise, with `c²·scale` = `_REGION_PENALTY`; a query whose region has
    no key in the source frame gets zero features, i.e. unmasked attention. (Penalising every key of such a query
    alike would give the same softmax in exact arithmetic, but loses precision in the logits.)
    """
    head_dim = query.shape[-1]
    padded = math.ceil((head_dim + 2) / 8) * 8
    strength = math.sqrt(_REGION_PENALTY / attn.scale)
    query_masks, source_masks = regions.query_masks, regions.source_masks
    has_character = (source_masks.amax(dim=-1, keepdim=True) > 0).to(query.dtype)
    has_background = (source_masks.amin(dim=-1, keepdim=True) < 1).to(query.dtype)
    active = regions.decoupled[:, None].to(query.dtype)
    query_features = (
        -strength
        * active[..., None]
        * torch.stack([query_masks * has_character, (1 - query_masks) * has_background], dim=-1)
    )
    key_features = strength * torch.stack([1 - source_masks, source_masks], dim=-1)
    padding = (0, padded - head_dim)
    query_pairs = F.pad(query, padding)[query_rows]
    key_pairs = F.pad(keys, padding)[source_rows]
    heads = query.shape[1]
    query_pairs[..., head_dim : head_dim + 2] = query_features[:, None].expand(-1, heads, -1, -1)
    key_pairs[..., head_dim : head_dim + 2] = key_features[:, None].expand(-1, heads, -1, -1)
    value_pairs = F.pad(values, padding)[source_rows]
    attended = F.scaled_dot_product_attention(query_pairs, key_pairs, value_pairs, scale=attn.scale)
    return attended[..., :head_dim]
