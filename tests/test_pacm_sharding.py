"""Per-frame optimisation sharded over two processes (torch.distributed, gloo, as `accelerate launch` sets up on
GPUs) gives what one process gives. Run as a script, this file is the worker that `torch.distributed.run` starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zeroshot.pacm import PACMSettings, input_identity, run_pacm
from zeroshot.prompts import encode_prompt
from zeroshot.testing import build_random_components

FRAMES = 3
SETTINGS = PACMSettings(num_inference_steps=6, learning_rate=5e-2, source_inner_steps=2, frame_chunk_size=4)
FIELDS = ("latents", "source_embeddings", "frame_embeddings", "attention_maps")


def _inputs(components):
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose = torch.rand(1, 3, 64, 64, generator=generator)
    targets = torch.rand(FRAMES, 3, 64, 64, generator=generator)
    prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    return latent, prompt, pose, targets


# The processes run with another thread count than the test: the encoders' outputs differ in their last bits, so the
# cache is keyed by the raw inputs, as the pipeline keys it.
IDENTITY = input_identity(torch.arange(12, dtype=torch.uint8), "a photo of an astronaut", "", "tiny seed 0")


def _worker(output: Path) -> None:
    from accelerate import PartialState

    state = PartialState(cpu=True, backend="gloo")
    try:
        components = build_random_components("tiny", seed=0)
        result = run_pacm(
            components,
            *_inputs(components),
            SETTINGS,
            cache_dir=output / "cache",
            cache_identity=IDENTITY,
            show_progress=False,
            state=state,
        )
        rank = state.process_index
        tensors = {field: getattr(result, field).contiguous() for field in FIELDS}
        save_file(tensors, output / f"rank{rank}.safetensors")
        (output / f"rank{rank}.json").write_text(json.dumps({"world": state.num_processes, **result.stats_dict()}))
        state.wait_for_everyone()
    finally:
        # Gloo's worker threads must stop while the interpreter is alive: a process group left to interpreter
        # shutdown can abort the process (SIGABRT, "terminate called without an active exception").
        state.destroy_process_group()


def test_two_processes_give_the_embeddings_of_one(tiny_components, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        [*command, __file__, str(tmp_path)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    single = run_pacm(tiny_components, *_inputs(tiny_components), SETTINGS, show_progress=False)
    moved = (single.frame_embeddings - single.source_embeddings[None]).norm()
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert stats["world"] == 2
        # Evaluations summed over both processes equal one process's: the source stages ran once (on the main
        # process), and each frame was optimised by one process only.
        for stage, expected in single.stats.items():
            assert (stats[stage]["forward"], stats[stage]["backward"]) == (expected.forward, expected.backward)
        sharded = load_file(tmp_path / f"rank{rank}.safetensors")
        torch.testing.assert_close(sharded["latents"], single.latents, rtol=0, atol=0)
        torch.testing.assert_close(sharded["source_embeddings"], single.source_embeddings, rtol=0, atol=0)
        # Frames ran in batches of 2 and 1 instead of 3: batched results equal to float tolerance (see test 2).
        assert (sharded["frame_embeddings"] - single.frame_embeddings).norm() < 1e-3 * moved
        torch.testing.assert_close(sharded["attention_maps"], single.attention_maps, rtol=1e-4, atol=1e-6)

    # Both processes wrote their frames to the shared cache under the keys a single process computes.
    cached = run_pacm(
        tiny_components,
        *_inputs(tiny_components),
        SETTINGS,
        cache_dir=tmp_path / "cache",
        cache_identity=IDENTITY,
        show_progress=False,
    )
    assert cached.stats["frames"].frames_from_cache == FRAMES and cached.stats["frames"].forward == 0
    assert (cached.frame_embeddings - single.frame_embeddings).norm() < 1e-3 * moved


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]))
