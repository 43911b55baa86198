"""Qffusion: the work each frame order costs (grids and UNet evaluations of QGP, of QGP before issue 14, and of the
naive order, for several video lengths); a whole video through QffusionPipeline, QGP with grids batched per wave vs one
grid at a time vs the naive order; and the quadrant-grid hook's cost on one UNet call against packing the grid by hand.

Random models (no weights needed): `--arch tiny` for a CPU, `--arch sd15` (Stable Diffusion 1.5's shapes) on a GPU.
`--schedules-only` prints the first table alone (no models).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ..cli import whole_number
from ..defaults import MAX_OUTPUT_SIDE
from . import compare, describe_device, format_table

#: Video lengths of the schedule table.
SCHEDULE_LENGTHS = (10, 22, 50, 100, 200)
#: QGP as it was before issue 14 (commit 8e002e9: trisection at `s + floor(g / 3)`, lone frames without a partner
#: regenerating a known frame): grids per wave, and grids that discarded a tile, for `SCHEDULE_LENGTHS`.
QGP_BEFORE = {
    10: ((1, 3), 0),
    22: ((1, 3, 3, 3), 0),
    50: ((1, 3, 9, 10, 2), 2),
    100: ((1, 3, 9, 27, 18), 18),
    200: ((1, 3, 9, 27, 37, 17, 10), 10),
}
#: Denoising steps of an edit (scripts/edit.py's default) and grids per UNet batch, for the schedule table.
EDIT_STEPS, EDIT_BATCH = 25, 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny", help="random model shapes")
    parser.add_argument(
        "--frames", type=whole_number(3, 1000), default=16, help="frames of the video (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=whole_number(1, 1000), default=5, help="denoising steps per grid (default: %(default)s)"
    )
    parser.add_argument(
        "--resolution", type=whole_number(8, MAX_OUTPUT_SIDE), help="frame side in pixels (default: 64 tiny, 256 sd15)"
    )
    parser.add_argument(
        "--batch-size", type=whole_number(1, 1024), default=8, help="grids per batch (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=whole_number(1, 1000), default=3, help="timed rounds (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    parser.add_argument("--schedules-only", action="store_true", help="only the table of schedules (no models)")


def _schedule_row(frames: int, name: str, wave_sizes: tuple[int, ...], wasted: int) -> tuple:
    calls = sum(-(-size // EDIT_BATCH) for size in wave_sizes) * EDIT_STEPS
    return frames, name, sum(wave_sizes), len(wave_sizes), wasted, sum(wave_sizes) * EDIT_STEPS, calls


def print_schedules() -> None:
    """Grids, waves, grids that discard a tile, and UNet evaluations (one grid, one step) and batched UNet calls of
    an edit, for each frame order and length."""
    from ..qffusion import build_schedule

    rows = []
    for frames in SCHEDULE_LENGTHS:
        for kind, name in (("naive", "naive"), (None, "qgp-before"), ("qgp", "qgp")):
            if kind is None:
                rows.append(_schedule_row(frames, name, *QGP_BEFORE[frames]))
                continue
            schedule = build_schedule(frames, kind)
            wasted = sum(grid.keep != (True, True) for grid in schedule.grids)
            rows.append(_schedule_row(frames, name, tuple(len(wave) for wave in schedule.waves), wasted))
    header = [
        "frames", "schedule", "grids", "waves", "grids wasting a tile", f"UNet evaluations ({EDIT_STEPS} steps)",
        f"UNet calls (batches of {EDIT_BATCH})",
    ]  # fmt: skip
    print(format_table(header, rows))


def main(args: argparse.Namespace) -> None:
    print_schedules()
    if args.schedules_only:
        return
    from hooks import QuadrantGridHook, install_quadrant_grid_hook, pack_pair

    from ..loading import resolve_device
    from ..qffusion import QffusionPipeline, build_schedule
    from ..testing import build_random_components

    device = resolve_device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    resolution = args.resolution or (64 if args.arch == "tiny" else 256)
    components = build_random_components(args.arch, unet_in_channels=12, with_controlnet=False)
    components.to(device, dtype if dtype != torch.float32 else None)  # diffusers warns on every dtype cast
    pipe = QffusionPipeline.from_components(components)
    rng = np.random.default_rng(0)
    conditions = rng.integers(0, 256, (args.frames, resolution, resolution, 3), dtype=np.uint8)
    start, end = rng.integers(0, 256, (2, resolution, resolution, 3), dtype=np.uint8)

    def video(schedule: str, batch_size: int):
        return lambda: pipe(
            start, end, conditions, schedule=schedule, num_inference_steps=args.steps, batch_size=batch_size,
            generator=torch.Generator(device).manual_seed(0), output_type="latent", show_progress=False,
        )  # fmt: skip

    print(f"{describe_device(device)}, {args.arch} models, {args.frames} frames of {resolution}px, {args.steps} steps")
    for kind in ("qgp", "naive"):
        schedule = build_schedule(args.frames, kind)
        print(f"{kind}: {len(schedule)} grids in {len(schedule.waves)} waves")
    candidates = {
        "qgp, one grid at a time": video("qgp", 1),
        f"qgp, {args.batch_size} grids per batch": video("qgp", args.batch_size),
        f"naive, {args.batch_size} grids per batch": video("naive", args.batch_size),
    }
    results = compare(candidates, device, rounds=args.rounds)
    baseline = results["qgp, one grid at a time"].seconds
    rows = [(name, m.seconds, baseline / m.seconds, m.peak_memory_bytes / 2**20) for name, m in results.items()]
    print(format_table(["whole video", "seconds", "speed-up", "peak MiB"], rows))

    # One UNet call: through the hook vs the same 12-channel grid packed by hand.
    latent = resolution // pipe.vae_scale_factor
    generator = torch.Generator(device).manual_seed(1)

    def tile() -> torch.Tensor:
        return torch.randn(args.batch_size, 4, latent, latent, generator=generator, device=device, dtype=dtype)

    r_a, r_d, pair_b, pair_c = tile(), tile(), tile(), tile()
    conditions_latent = [tile() for _ in range(4)]
    text = torch.randn(args.batch_size, 77, components.unet.config.cross_attention_dim, device=device, dtype=dtype)
    hook = QuadrantGridHook(components.scheduler.alphas_cumprod)
    hook.set_grid(r_a, r_d, conditions_latent, generator=generator)
    pair = pack_pair(pair_b, pair_c)
    packed = hook.unet_input(pair, 500)

    def by_hand():
        with torch.no_grad():
            return components.unet(packed, 500, text).sample

    def hooked():
        with torch.no_grad(), install_quadrant_grid_hook(components.unet, hook):
            return components.unet(pair, 500, text).sample

    def packing_alone():
        return hook.unet_output(hook.unet_input(pair, 500))

    candidates = {
        "UNet, grid packed by hand": by_hand,
        "UNet through the hook": hooked,
        "the hook's work": packing_alone,
    }
    results = compare(candidates, device, rounds=max(10, args.rounds))
    baseline = results["UNet, grid packed by hand"].seconds
    rows = [(name, m.seconds * 1000, m.seconds / baseline) for name, m in results.items()]
    print(format_table([f"one UNet call, {args.batch_size} grids", "ms", "time ratio"], rows))
