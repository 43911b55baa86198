"""Qffusion (dual-frame portrait video editing): quadrant-grid propagation, conditions, the pipeline, checkpoints and
fine-tuning.

Names are imported on first use, so `import zeroshot.qffusion` (and the pure-Python schedules) stays light.

Example:

```py
>>> from zeroshot.qffusion import QffusionPipeline, load_qffusion_components, qgp_schedule
>>> [grid.frames for grid in qgp_schedule(10).grids]
[(0, 3, 6, 9), (0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]
```
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PropagationSchedule": "schedule",
    "QuadrantGridFrames": "schedule",
    "build_schedule": "schedule",
    "naive_schedule": "schedule",
    "qgp_schedule": "schedule",
    "Landmarks": "conditions",
    "PortraitLandmarks": "conditions",
    "detect_landmarks": "conditions",
    "detect_portrait_landmarks": "conditions",
    "interpolate_landmarks": "conditions",
    "render_conditions": "conditions",
    "render_portrait_conditions": "conditions",
    "detect_body_landmarks": "body",
    "interpolate_poses": "body",
    "render_body_conditions": "body",
    "QffusionPipeline": "pipeline",
    "QffusionPipelineOutput": "pipeline",
    "QffusionConfig": "checkpoint",
    "load_qffusion_components": "checkpoint",
    "read_qffusion_config": "checkpoint",
    "save_qffusion_model": "checkpoint",
    "save_unet_weights": "checkpoint",
    "crop_boxes": "crops",
    "crop_frames": "crops",
    "crop_landmarks": "crops",
    "paste_back": "crops",
    "EditResult": "editing",
    "edit_video": "editing",
    "jump_cut_landmarks": "editing",
    "reference_arrays": "editing",
    "smooth_jump_cut": "editing",
    "TrainingSettings": "settings",
    "train_qga": "training",
    "widen_conv_in": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
