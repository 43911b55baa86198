"""Shared fixtures: tiny random models built once per session, and a Hugging Face cache of the test's own.

The cache is pointed at an empty folder before anything imports huggingface_hub, so a model a developer happens to
have downloaded can never make a test pass that would fail on a fresh machine.
"""

import os
import tempfile

os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="zeroshot-test-hf-")

import pytest

from zeroshot.testing import build_random_components, save_components


@pytest.fixture(scope="session")
def tiny_components():
    """Tiny random SD-1.5-shaped models (seed 0); tests must not modify them."""
    return build_random_components("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model_paths(tiny_components, tmp_path_factory):
    """The tiny models saved as a diffusers-format base model folder and a ControlNet folder."""
    return save_components(tiny_components, tmp_path_factory.mktemp("tiny-models"))
