"""PoseAnimate's Pose-Aware Control Module (PACM): per-step, per-frame conditioning that lets every generated frame
follow its target pose while frame 0 reconstructs the source image.

Stages (all with the OpenPose ControlNet in every UNet pass):

1. DDIM inversion of the source latent on the source pose, guidance 1: `Z_0..Z_T`.
2. Pose-aware inversion of the source: per-step text embeddings `∅_s,t` under which guided sampling (7.5) retraces
   `Z_0..Z_T` (null-text-inversion loop; fast modes: negative-prompt inversion, direct-inversion offsets).
3. Per-frame pose-aware embeddings `∅~_i,t` (Alg. 1) for every target pose, frames batched, with the subject
   token's cross-attention maps recorded as character masks.

Entry point: [`run_pacm`]; results are cached on disk, resumable, and can be sharded over processes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public names -> the submodule defining them. They are imported on first use, so that scripts can build their
# command line (`arguments`, `settings`: no torch) without paying for torch, diffusers and accelerate.
_EXPORTS = {
    "add_pacm_arguments": "arguments",
    "default_cache_dir": "arguments",
    "pacm_cache_dir_from_args": "arguments",
    "pacm_settings_from_args": "arguments",
    "CACHE_FORMAT": "cache",
    "PACMCache": "cache",
    "input_identity": "cache",
    "model_fingerprint": "cache",
    "weights_fingerprint": "cache",
    "EvaluationCounter": "counters",
    "StageStats": "counters",
    "DDIMSchedule": "ddim",
    "guided_noise": "ddim",
    "ControlledDenoiser": "denoiser",
    "PACMProgress": "progress",
    "reconstruct_source": "reconstruction",
    "relative_error": "reconstruction",
    "PACMResult": "run",
    "run_pacm": "run",
    "PACM_MODES": "settings",
    "STAGES": "settings",
    "PACMSettings": "settings",
    "StoredFrameEmbeddings": "stored",
}

__all__ = [
    "CACHE_FORMAT",
    "PACM_MODES",
    "STAGES",
    "ControlledDenoiser",
    "DDIMSchedule",
    "EvaluationCounter",
    "PACMCache",
    "PACMProgress",
    "PACMResult",
    "PACMSettings",
    "StageStats",
    "StoredFrameEmbeddings",
    "add_pacm_arguments",
    "default_cache_dir",
    "guided_noise",
    "input_identity",
    "model_fingerprint",
    "pacm_cache_dir_from_args",
    "pacm_settings_from_args",
    "reconstruct_source",
    "relative_error",
    "run_pacm",
    "weights_fingerprint",
]

if TYPE_CHECKING:
    from .arguments import add_pacm_arguments, default_cache_dir, pacm_cache_dir_from_args, pacm_settings_from_args
    from .cache import CACHE_FORMAT, PACMCache, input_identity, model_fingerprint, weights_fingerprint
    from .counters import EvaluationCounter, StageStats
    from .ddim import DDIMSchedule, guided_noise
    from .denoiser import ControlledDenoiser
    from .progress import PACMProgress
    from .reconstruction import reconstruct_source, relative_error
    from .run import PACMResult, run_pacm
    from .settings import PACM_MODES, STAGES, PACMSettings
    from .stored import StoredFrameEmbeddings


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
