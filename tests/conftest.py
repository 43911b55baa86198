"""Shared fixtures: tiny random models built once per session, and a Hugging Face cache of the test's own.

The cache is pointed at an empty folder before anything imports huggingface_hub, so a model a developer happens to
have downloaded can never make a test pass that would fail on a fresh machine.
"""

import os
import tempfile

os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="zeroshot-test-hf-")

import pytest
import torch
from diffusers import UNet2DConditionModel

from zeroshot.testing import build_random_components, save_components


@pytest.fixture(scope="session")
def tiny_components():
    """Tiny random SD-1.5-shaped models (seed 0); tests must not modify them."""
    return build_random_components("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model_paths(tiny_components, tmp_path_factory):
    """The tiny models saved as a diffusers-format base model folder and a ControlNet folder."""
    return save_components(tiny_components, tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def ladder_unet():
    """A small UNet with up-block attention at three resolutions (run at odd, non-square latent sizes such as 5x7,
    its layers see grids 5x7, 3x4 and 2x2); random weights, seed 0."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="session")
def sports2d_demo_video():
    """Path of the real full-body demo video inside the `sports2d` wheel (1768x994, 30 fps, 230 frames: a person
    jumping on a box, facing the camera, then turning; a second person walking past), found without importing the
    package (requirements-lock.txt pins it for this video)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("Sports2D")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps sports2d==0.8.34"
    return Path(next(iter(spec.submodule_search_locations))) / "Demo" / "demo.mp4"


@pytest.fixture(scope="session")
def sports2d_box_extraction(sports2d_demo_video):
    """mediapipe's extraction ([`zeroshot.poses.extract_poses`], no repair) of the demo's first 90 frames at half
    size (884x497): the person on the box, facing the camera, whom mediapipe mirrors in frames 68-72."""
    import cv2
    import imageio_ffmpeg
    import numpy as np

    from zeroshot.poses import extract_poses

    reader = imageio_ffmpeg.read_frames(str(sports2d_demo_video))
    width, height = next(reader)["size"]
    frames = []
    for data in reader:
        frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        frames.append(cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA))
        if len(frames) == 90:
            break
    reader.close()
    return extract_poses(np.stack(frames), fps=30.0, show_progress=False)
