"""Dual consistency attention (with and without mask-guided decoupling) against diffusers' AttnProcessor2_0.

One self-attention layer of each Stable Diffusion 1.5 resolution (4096 tokens x 320 channels, 1024 x 640,
256 x 1280; 8 heads) runs on a batch of frames with each processor in turn, in interleaved rounds; ratios are
times over `AttnProcessor2_0`'s, measured in the same run. Masks are hard character masks (an ellipse that moves
from frame to frame), as PoseAnimate uses them.

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

from ..errors import ZeroshotError
from ..loading import resolve_device, resolve_dtype
from . import compare, describe_device, format_table

#: (tokens, channels) of the self-attention layers of SD-1.5's up blocks, at 64x64 latents.
SD15_SELF_ATTENTION_SIZES: tuple[tuple[int, int], ...] = ((4096, 320), (1024, 640), (256, 1280))
HEADS = 8
TARGETS = {"DCA": 3.5, "DCA+decoupling": 4.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=8, help="frames per guidance chunk (default 8)")
    parser.add_argument("--cfg-chunks", type=int, default=1, help="guidance chunks in the batch (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per candidate (default 5)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", help="fp32, fp16, bf16 or auto: fp16 on CUDA, fp32 elsewhere")
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
    tokens: int, channels: int, frames: int, chunks: int, device: torch.device, dtype: torch.dtype
) -> dict[str, Callable[[], object]]:
    """Zero-argument calls of one layer with each processor, on the same random inputs."""
    generator = torch.Generator(device=device).manual_seed(0)
    layer = Attention(query_dim=channels, heads=HEADS, dim_head=channels // HEADS).to(device, dtype).eval()
    hidden = torch.randn(chunks * frames, tokens, channels, generator=generator, device=device, dtype=dtype)
    side = math.isqrt(tokens)
    masked = CrossFrameState(masks=moving_ellipse_masks(frames, side, device), latent_size=(side, side))
    processors = {
        "AttnProcessor2_0": AttnProcessor2_0(),
        "DCA": DualConsistencyAttnProcessor(cfg_chunks=chunks),
        "DCA+decoupling": DualConsistencyAttnProcessor(cfg_chunks=chunks, state=masked),
    }

    def call(processor: object) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> object:
            return processor(layer, hidden)

        return run

    return {name: call(processor) for name, processor in processors.items()}


def main(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    sizes = _parse_sizes(args.sizes)
    layout = f"{args.frames} frames x {args.cfg_chunks} guidance chunk(s), {HEADS} heads"
    print(f"{describe_device(device)}, {dtype}; {layout}")
    rows = []
    for tokens, channels in sizes:
        candidates = candidates_for(tokens, channels, args.frames, args.cfg_chunks, device, dtype)
        measured = compare(candidates, device, rounds=args.rounds)
        baseline = measured["AttnProcessor2_0"].seconds
        for name, measurement in measured.items():
            ratio = measurement.seconds / baseline
            target = TARGETS.get(name)
            verdict = "" if target is None else ("ok" if ratio <= target else f"over {target}x")
            memory = measurement.peak_memory_bytes / 2**20
            rows.append([f"{tokens}x{channels}", name, measurement.seconds * 1e3, ratio, memory, verdict])
    print(format_table(["layer", "processor", "ms", "ratio", "peak MiB", "target"], rows))
