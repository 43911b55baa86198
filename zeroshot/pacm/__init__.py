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

from .arguments import add_pacm_arguments, default_cache_dir, pacm_cache_dir_from_args, pacm_settings_from_args
from .cache import CACHE_FORMAT, PACMCache, input_identity, model_fingerprint, weights_fingerprint
from .counters import EvaluationCounter, StageStats
from .ddim import DDIMSchedule, guided_noise
from .denoiser import ControlledDenoiser
from .progress import PACMProgress
from .reconstruction import reconstruct_source, relative_error
from .run import PACMResult, run_pacm
from .settings import PACM_MODES, STAGES, PACMSettings

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
