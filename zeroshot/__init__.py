"""zeroshot-animate: training-free character animation (PoseAnimate, Qffusion) on Stable Diffusion 1.5."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Pipelines are imported on first use, so that `import zeroshot` does not load diffusers.
_LAZY_EXPORTS = {
    "PoseAnimatePipeline": "zeroshot.poseanimate",
    "QffusionPipeline": "zeroshot.qffusion.pipeline",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    globals()[name] = value
    return value
