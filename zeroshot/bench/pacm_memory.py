"""Host memory of PACM's paper mode for long sequences: the frames' embeddings kept in memory against left in the cache
files (`run_pacm(..., frames_in_memory=False)`, what the pipeline does whenever it caches), side by side in one run.

Each run is the paper mode with a fresh cache folder, followed by what generation reads: every step's embeddings of
every window of `--window` frames. The peak is the growth of the process's resident memory over the run (sampled
every 2 ms); both ways run `--rounds` times, interleaved, after one unmeasured warm-up run, and the last round is
reported, so that neither pays alone for growing the allocator's pools. It counts the embeddings, the autograd buffers
of a chunk of frames and the allocator's slack alike.
The table adds the size of the embeddings at each length, and what they are at Stable Diffusion 1.5's shapes (77
tokens of 768 floats per step) for `--sd15-steps` steps.
"""

from __future__ import annotations

import argparse
import gc
import tempfile

import torch

from ..cli import whole_number
from ..loading import resolve_device
from ..memory import PeakMemory
from ..pacm import PACMSettings, run_pacm
from ..prompts import encode_prompt
from ..testing import build_random_components
from . import describe_device, format_table

#: Floats per step of one frame's embedding on Stable Diffusion 1.5 (77 tokens of 768).
SD15_STEP_FLOATS = 77 * 768


def add_arguments(parser: argparse.ArgumentParser) -> None:
    frames, steps = whole_number(1, 4096), whole_number(1, 1000)
    parser.add_argument("--frames", type=frames, nargs="+", default=[16, 128], help="target frames (default: 16 128)")
    parser.add_argument("--steps", type=steps, default=20, help="DDIM steps on the tiny models (default: %(default)s)")
    parser.add_argument("--window", type=frames, default=16, help="frames generation reads at once (default: 16)")
    parser.add_argument("--sd15-steps", type=steps, default=50, help="steps of the SD-1.5 arithmetic (default: 50)")
    parser.add_argument(
        "--rounds",
        type=whole_number(1, 100),
        default=2,
        help="interleaved runs of each; the last is reported (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> None:
    device = resolve_device("cpu")
    torch.set_num_threads(1)
    components = build_random_components("tiny", seed=0)
    size = components.unet.config.sample_size
    scale = 2 ** (len(components.vae.config.block_out_channels) - 1)
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, size, size, generator=generator)
    source_pose = torch.rand(1, 3, size * scale, size * scale, generator=generator)
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    settings = PACMSettings(num_inference_steps=args.steps, source_inner_steps=1)
    print(
        f"{describe_device(device)}; tiny models, paper mode, {args.steps} steps, windows of {args.window}; peak "
        "growth of resident memory"
    )
    # One short run first, unmeasured: the allocator's pools and the kernels warm up outside the peaks.
    with tempfile.TemporaryDirectory() as cache:
        run_pacm(components, latent, prompt, source_pose, source_pose, settings, cache_dir=cache, show_progress=False)
    rows = []
    for num_frames in args.frames:
        targets = (torch.rand(num_frames, 3, size * scale, size * scale, generator=generator) * 255).to(torch.uint8)
        targets = targets.permute(0, 2, 3, 1).contiguous()  # uint8 [F, H, W, 3], as a long sequence is kept
        peaks = {}
        for in_memory in (True, False) * args.rounds:
            gc.collect()
            with tempfile.TemporaryDirectory() as cache, PeakMemory(device) as memory:
                result = run_pacm(components, latent, prompt, source_pose, targets, settings, cache_dir=cache,
                                  show_progress=False, frames_in_memory=in_memory)  # fmt: skip
                for step in range(args.steps):
                    for start in range(0, num_frames + 1, args.window):
                        result.step_embeddings(step, range(start, min(start + args.window, num_frames + 1)))
                embedding_bytes = result.frame_embeddings.shape.numel() * 4
                del result
            peaks[in_memory] = memory.peak_bytes
        sd15 = num_frames * args.sd15_steps * SD15_STEP_FLOATS * 4
        sd15_window = args.window * SD15_STEP_FLOATS * 4
        rows.append(
            (num_frames, f"{embedding_bytes / 2**20:.1f}", f"{peaks[True] / 2**20:.1f}", f"{peaks[False] / 2**20:.1f}")
            + (f"{sd15 / 2**20:.0f}", f"{sd15_window / 2**20:.1f}")
        )
    header = ["frames", "embeddings MiB", "peak MiB: in memory", "peak MiB: in the cache"]
    header += [f"SD-1.5 embeddings MiB ({args.sd15_steps} steps)", "SD-1.5 window-step read MiB"]
    print(format_table(header, rows))
