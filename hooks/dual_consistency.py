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

Nothing that is the same for every layer of a UNet call is computed per layer: the call's pairs come from a
[`~hooks.frame_plan.FramePlan`] built once per batch layout, the masks on each token grid from the state (once per
step and grid), and the per-pair region tensors once per call and grid. A layer call then never copies data between
host and device, which on a GPU would make the host wait and leave the device idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .frame_plan import FramePlan, build_plan
from .projection import finish, project
from .state import CrossFrameState, FrameLayout, GridMasks

Decoupling = Literal["exclusive", "literal"]
DECOUPLINGS: tuple[str, ...] = ("exclusive", "literal")

#: Logit added to a query-key pair of different regions under hard exclusive decoupling: exp(-1000) is 0 in float32.
_REGION_PENALTY = 1000.0
#: Plans kept per processor (one per batch layout: a window, at every step); the oldest goes first beyond this.
_MAX_PLANS = 256


@dataclass(frozen=True, eq=False)
class _HardRegions:
    """Region features of hard exclusive decoupling, per pair, before scaling (see [`_exclusive_hard`]).

    Args:
        query_features (`torch.Tensor`): `[pairs, tokens, 2]`, `-(m_q·has_character, (1 - m_q)·has_background)`,
            zero for pairs that are not decoupled.
        key_features (`torch.Tensor`): `[pairs, tokens, 2]`, `(1 - m_k, m_k)`.
    """

    query_features: torch.Tensor
    key_features: torch.Tensor


@dataclass(frozen=True, eq=False)
class _TwoRegions:
    """A character and a background attention per pair (soft masks, or the literal form); see [`_two_regions`].

    Args:
        query_rows (`torch.Tensor`): `[2 * pairs]`, the plan's query rows twice (character, then background).
        source_rows (`torch.Tensor`): `[2 * pairs]`, the plan's source rows twice.
        key_weights (`torch.Tensor`): `[2 * pairs, tokens]`, the source mask and its complement (all ones for pairs
            that are not decoupled, whose two halves then sum to plain attention).
        blend (`torch.Tensor`): `[2 * pairs, tokens]`, the query mask and its complement, times the pair's weight.
        bias (`torch.Tensor`, *optional*): `[2 * pairs, 1, 1, tokens]`, `log(key_weights)` (0 for a region with no
            key) for `"exclusive"`; `None` for `"literal"`, which multiplies keys and values by `key_weights`.
    """

    query_rows: torch.Tensor
    source_rows: torch.Tensor
    key_weights: torch.Tensor
    blend: torch.Tensor
    bias: torch.Tensor | None


class DualConsistencyAttnProcessor:
    """Dual consistency attention for the self-attention (`attn1`) layers of a UNet, with mask-guided decoupling.

    The batch of each call is `[chunk 0: frames, chunk 1: frames, ...]` (diffusers' guidance layout): `cfg_chunks`
    (or `state.chunks`) chunks of frames `0 .. F-1`, or of `state.frame_ids`. A batch is never guessed: with no chunk
    count, the state's frame count (`state.frame_ids` or `state.num_frames`) gives it, and a call with neither is
    refused. Decoupling turns
    on when `state.masks` is set; frame 0 is never decoupled, so it stays plain self-attention.

    Args:
        lambdas (`tuple[float, float, float]`, *optional*, defaults to `(0.7, 0.15, 0.15)`): weights of the
            attention to frame 0, to the previous frame and to the frame itself; non-negative, summing to 1.
            `(0, 0, 1)` is plain self-attention, `(1, 0, 0)` frame-0 cross-frame attention (Text2Video-Zero).
        cfg_chunks (`int`, *optional*): guidance chunks in the batch when `state.chunks` is unset (2 with
            classifier-free guidance, 1 without); unset, the batch size over the state's frame count.
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
        cfg_chunks: int | None = None,
        state: CrossFrameState | None = None,
        decoupling: Decoupling = "exclusive",
    ):
        self.lambdas = tuple(float(weight) for weight in lambdas)
        if len(self.lambdas) != 3 or min(self.lambdas) < 0 or not math.isclose(sum(self.lambdas), 1.0, abs_tol=1e-6):
            raise ValueError(f"lambdas must be three non-negative weights summing to 1, got {tuple(lambdas)}.")
        if cfg_chunks is not None and cfg_chunks < 1:
            raise ValueError(f"cfg_chunks must be at least 1, got {cfg_chunks}.")
        if decoupling not in DECOUPLINGS:
            raise ValueError(f"decoupling must be one of {DECOUPLINGS}, got {decoupling!r}.")
        self.cfg_chunks = cfg_chunks
        self.state = state if state is not None else CrossFrameState()
        self.decoupling = decoupling
        self._plans: dict[tuple, FramePlan] = {}  # (layout, lambdas, mode, device, dtype) -> plan
        self._regions: dict[int, tuple[FramePlan, GridMasks, str, _HardRegions | _TwoRegions]] = {}  # per grid

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
        query = projected.query
        plan = self._plan(self.state.layout(query.shape[0], self.cfg_chunks), query.device, query.dtype)
        keys, values = self._key_bank(attn, plan, projected.key, projected.value)
        regions = self._regions_of(plan, query)
        query_rows = plan.query_rows
        if regions is None:
            attended = F.scaled_dot_product_attention(
                query[query_rows], keys[plan.source_rows], values[plan.source_rows], scale=attn.scale
            )
            attended = attended * plan.weights[:, None, None, None]
        elif isinstance(regions, _HardRegions):
            attended = _exclusive_hard(attn, query, keys, values, plan, regions)
            attended = attended * plan.weights[:, None, None, None]
        else:
            attended = self._two_regions(attn, query, keys, values, regions)
            query_rows = regions.query_rows
        return finish(attn, torch.zeros_like(query).index_add_(0, query_rows, attended), projected)

    def _plan(self, layout: FrameLayout, device: torch.device, dtype: torch.dtype) -> FramePlan:
        """The call's plan, built at the first layer of the first call with this layout and reused after."""
        key = (layout, self.lambdas, self.state.mode, device, dtype)
        plan = self._plans.get(key)
        if plan is None:
            plan = build_plan(layout, self.lambdas, self.state.mode, device, dtype)
            if len(self._plans) >= _MAX_PLANS:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan
        return plan

    def _key_bank(
        self, attn: Attention, plan: FramePlan, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every source frame: the batch's rows, then (in `"windows"` mode) the recalled frames.

        In `"windows"` mode it also caches what later calls of the step read, and drops what no later call reads.
        """
        if self.state.mode != "windows":
            return key, value
        frames = len(plan.layout.frame_ids)
        for position, frame in plan.remembered:  # copies of the frame's rows, so the batch's keys are not kept
            self.state.remember(attn, frame, key[position::frames].clone(), value[position::frames].clone())
        if not plan.recalled:
            return key, value
        cached = [self.state.recall(attn, frame) for frame in plan.recalled]
        for frame in plan.released:
            self.state.forget(attn, frame)
        return torch.cat([key, *(entry[0] for entry in cached)]), torch.cat([value, *(entry[1] for entry in cached)])

    def _regions_of(self, plan: FramePlan, query: torch.Tensor) -> _HardRegions | _TwoRegions | None:
        """The call's per-pair masks on this layer's token grid (`None`: no masks), shared by the layers of a grid."""
        num_tokens = query.shape[2]
        grid_masks = self.state.masks_on_grid(num_tokens, query.device, query.dtype)
        if grid_masks is None:
            return None
        if plan.last_frame >= grid_masks.masks.shape[0]:
            raise ValueError(
                f"state.masks holds {grid_masks.masks.shape[0]} frames but frame {plan.last_frame} is attended: give "
                "one mask per frame of the whole sequence, indexed by global frame id."
            )
        cached = self._regions.get(num_tokens)
        if cached is not None and cached[0] is plan and cached[1] is grid_masks and cached[2] == self.decoupling:
            return cached[3]
        query_masks = grid_masks.masks[plan.query_frames]  # [pairs, tokens]
        source_masks = grid_masks.masks[plan.source_frames]
        if self.decoupling == "exclusive" and grid_masks.hard:
            regions = _hard_regions(query_masks, source_masks, plan.decoupled)
        else:
            regions = self._two_region_masks(query_masks, source_masks, plan)
        self._regions[num_tokens] = (plan, grid_masks, self.decoupling, regions)
        return regions

    def _two_region_masks(self, query_masks: torch.Tensor, source_masks: torch.Tensor, plan: FramePlan) -> _TwoRegions:
        ones = torch.ones_like(query_masks)
        decoupled = plan.decoupled[:, None]
        query_masks = torch.where(decoupled, query_masks, ones)
        source_masks = torch.where(decoupled, source_masks, ones)
        key_weights = torch.cat([source_masks, 1 - source_masks])
        blend = torch.cat([query_masks, 1 - query_masks]) * torch.cat([plan.weights, plan.weights])[:, None]
        bias = None
        if self.decoupling == "exclusive":
            empty = key_weights.sum(dim=-1, keepdim=True) == 0
            bias = torch.where(empty, torch.zeros_like(key_weights), key_weights.log())[:, None, None, :]
        return _TwoRegions(
            query_rows=torch.cat([plan.query_rows, plan.query_rows]),
            source_rows=torch.cat([plan.source_rows, plan.source_rows]),
            key_weights=key_weights,
            blend=blend,
            bias=bias,
        )

    def _two_regions(
        self, attn: Attention, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, regions: _TwoRegions
    ) -> torch.Tensor:
        """Character and background attentions for every pair, blended by the query frame's mask (six attentions)."""
        key, value = keys[regions.source_rows], values[regions.source_rows]
        if self.decoupling == "literal":
            key = key * regions.key_weights[:, None, :, None]
            value = value * regions.key_weights[:, None, :, None]
        attended = F.scaled_dot_product_attention(
            query[regions.query_rows], key, value, attn_mask=regions.bias, scale=attn.scale
        )
        return attended * regions.blend[:, None, :, None]


def _hard_regions(query_masks: torch.Tensor, source_masks: torch.Tensor, decoupled: torch.Tensor) -> _HardRegions:
    has_character = (source_masks.amax(dim=-1, keepdim=True) > 0).to(query_masks.dtype)
    has_background = (source_masks.amin(dim=-1, keepdim=True) < 1).to(query_masks.dtype)
    active = decoupled[:, None, None].to(query_masks.dtype)
    query_features = -active * torch.stack([query_masks * has_character, (1 - query_masks) * has_background], dim=-1)
    return _HardRegions(query_features, torch.stack([1 - source_masks, source_masks], dim=-1))


def _exclusive_hard(
    attn: Attention,
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: FramePlan,
    regions: _HardRegions,
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
    padding = (0, padded - head_dim)
    query_pairs = F.pad(query, padding)[plan.query_rows]
    key_pairs = F.pad(keys, padding)[plan.source_rows]
    query_pairs[..., head_dim : head_dim + 2] = strength * regions.query_features[:, None]
    key_pairs[..., head_dim : head_dim + 2] = strength * regions.key_features[:, None]
    value_pairs = F.pad(values, padding)[plan.source_rows]
    attended = F.scaled_dot_product_attention(query_pairs, key_pairs, value_pairs, scale=attn.scale)
    return attended[..., :head_dim]
