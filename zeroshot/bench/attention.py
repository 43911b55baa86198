"""Dual consistency attention (with and without mask-guided decoupling) against diffusers' AttnProcessor2_0.

One self-attention layer of each Stable Diffusion 1.5 resolution (4096 tokens x 320 channels, 1024 x 640,
256 x 1280; 8 heads) runs on a batch of frames with each processor in turn, in interleaved rounds; ratios are
times over `AttnProcessor2_0`'s, measured in the same run. Masks are hard character masks (an ellipse that moves
from frame to frame) at the latent size (64x64), as PoseAnimate gives them, so the smaller layers resize them.

"DCA+decoupling" reuses what the state worked out at the layer's first call (the masks on the layer's grid), as the
other layers of a grid do within a step; "DCA+decoupling, new masks" is given new masks at every call, as the first
layer of each grid is at every step.

  python scripts/benchmark.py attention                     # 8 frames, CPU or CUDA, whichever is there
  python scripts/benchmark.py attention --cfg-chunks 2      # the batch of a guided pipeline (16 rows)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from hooks import CrossFrameState, DualConsistencyAttnProcessor

from ..cli import whole_number
from ..errors import ZeroshotError
from ..loading import resolve_device, resolve_dtype
from . import compare, describe_device, format_table

#: (tokens, channels) of the self-attention layers of SD-1.5's up blocks, at 64x64 latents.
SD15_SELF_ATTENTION_SIZES: tuple[tuple[int, int], ...] = ((4096, 320), (1024, 640), (256, 1280))
HEADS = 8
TARGETS = {"DCA": 3.5, "DCA+decoupling": 4.0, "DCA+decoupling, new masks": 4.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=whole_number(1, 256), default=8, help="frames per guidance chunk (default 8)")
    parser.add_argument(
        "--cfg-chunks", type=whole_number(1, 8), default=1, help="guidance chunks in the batch (default 1)"
    )
    parser.add_argument(
        "--rounds", type=whole_number(1, 1000), default=5, help="timed calls per candidate (default 5)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", help="fp32, fp16, bf16 or auto: fp16 on CUDA, fp32 elsewhere")
    parser.add_argument(
        "--mask-size", type=whole_number(1, 512), default=64, help="side of the masks (default 64: SD-1.5's latents)"
    )
    parser.add_argument(
        "--sizes",
        default=",".join(f"{tokens}x{channels}" for tokens, channels in SD15_SELF_ATTENTION_SIZES),
        help="comma-separated TOKENSxCHANNELS layer sizes (default: SD-1.5's three self-attention sizes)",
    )


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        tokens, _, channels = item.partition("x")
        if not (tokens.isdigit() and channels.isdigit()) or math.isqrt(int(tokens)) ** 2 != int(tokens):
            raise ZeroshotError(f"--sizes: {item!r} is not TOKENSxCHANNELS with a square token count, e.g. 4096x320.")
        sizes.append((int(tokens), int(channels)))
    return sizes


def moving_ellipse_masks(frames: int, side: int, device: torch.device) -> torch.Tensor:
    """Hard masks `[frames, side, side]`: an upright ellipse covering about a third of the frame, drifting sideways."""
    coordinates = (torch.arange(side, device=device) + 0.5) / side
    y, x = coordinates[:, None], coordinates[None, :]
    centres = torch.linspace(0.4, 0.6, frames, device=device)
    inside = ((x - centres[:, None, None]) / 0.25) ** 2 + ((y - 0.55) / 0.4) ** 2 <= 1
    return inside.float()


def candidates_for(
    tokens: int,
    channels: int,
    frames: int,
    chunks: int,
    device: torch.device,
    dtype: torch.dtype,
    mask_size: int = 64,
) -> dict[str, Callable[[], object]]:
    """Zero-argument calls of one layer with each processor, on the same random inputs."""
    generator = torch.Generator(device=device).manual_seed(0)
    layer = Attention(query_dim=channels, heads=HEADS, dim_head=channels // HEADS).to(device, dtype).eval()
    hidden = torch.randn(chunks * frames, tokens, channels, generator=generator, device=device, dtype=dtype)
    side = math.isqrt(tokens)
    masks = moving_ellipse_masks(frames, mask_size, device)
    masked = CrossFrameState(masks=masks, latent_size=(side, side))
    renewed = CrossFrameState(masks=masks, latent_size=(side, side))

    def call(processor: object, state: CrossFrameState | None = None) -> Callable[[], object]:
        """One call of `processor`; with `state`, new masks (equal values) are assigned before it."""

        @torch.no_grad()
        def run() -> object:
            if state is not None:
                state.masks = masks.clone()
            return processor(layer, hidden)

        return run

    return {
        "AttnProcessor2_0": call(AttnProcessor2_0()),
        "DCA": call(DualConsistencyAttnProcessor(cfg_chunks=chunks)),
        "DCA+decoupling": call(DualConsistencyAttnProcessor(cfg_chunks=chunks, state=masked)),
        "DCA+decoupling, new masks": call(DualConsistencyAttnProcessor(cfg_chunks=chunks, state=renewed), renewed),
    }


def main(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    sizes = _parse_sizes(args.sizes)
    layout = f"{args.frames} frames x {args.cfg_chunks} guidance chunk(s), {HEADS} heads"
    print(f"{describe_device(device)}, {dtype}; {layout}")
    rows = []
    for tokens, channels in sizes:
        candidates = candidates_for(tokens, channels, args.frames, args.cfg_chunks, device, dtype, args.mask_size)
        measured = compare(candidates, device, rounds=args.rounds)
        baseline = measured["AttnProcessor2_0"].seconds
        for name, measurement in measured.items():
            ratio = measurement.seconds / baseline
            target = TARGETS.get(name)
            verdict = "" if target is None else ("ok" if ratio <= target else f"over {target}x")
            memory = measurement.peak_memory_bytes / 2**20
            rows.append([f"{tokens}x{channels}", name, measurement.seconds * 1e3, ratio, memory, verdict])
    print(format_table(["layer", "processor", "ms", "ratio", "peak MiB", "target"], rows))
