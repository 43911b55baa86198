"""Settings of the Pose-Aware Control Module: the paper's defaults, the fast modes, and what each setting changes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

#: The ways PACM can make frame 0 reconstruct the source and give each target frame its conditioning.
#:
#: - `"paper"`: PoseAnimate's pose-aware inversion (null-text-inversion-style optimisation of one text embedding per
#:   step) followed by Algorithm 1 (per-frame, per-step embeddings optimised against the source trajectory).
#: - `"negative-prompt"`: negative-prompt inversion (Miyake et al., 2023): the prompt embedding fills both guidance
#:   slots, so guided sampling equals the unguided DDIM inversion it mirrors; no optimisation, no gradients.
#: - `"direct"`: direct inversion (Ju et al., 2023): no optimisation; per step, the latent offset that puts the guided
#:   sample of the source back on the inversion trajectory is recorded, and every frame adds it after that step
#:   (frame 0 then reconstructs exactly, whatever the model; the other frames keep the source's correction of the
#:   guidance drift, as paper-mode frames start from the source's embeddings).
PACMMode = Literal["paper", "negative-prompt", "direct"]
PACM_MODES: tuple[str, ...] = ("paper", "negative-prompt", "direct")

#: Which classifier-free guidance slot the optimisation changes (paper mode).
EmbeddingSlot = Literal["conditional", "unconditional"]
EMBEDDING_SLOTS: tuple[str, ...] = ("conditional", "unconditional")

#: How each frame's embedding moves at each step (paper mode): `"gradient"`, Alg. 1 line 7's plain gradient step
#: `∅ ← ∅ - η∇MSE`; or `"adam"`, one step of a fresh Adam (about `lr·sign(∇)` per coordinate, whatever the pose).
FrameOptimizer = Literal["gradient", "adam"]
FRAME_OPTIMIZERS: tuple[str, ...] = ("gradient", "adam")

#: The three stages of PACM, in order: DDIM inversion of the source (Z_0..Z_T), the source's per-step embeddings (or
#: offsets), and the target frames' per-step embeddings (or offsets) with their character masks.
STAGES: tuple[str, ...] = ("ddim_inversion", "source", "frames")

# The settings each stage's results depend on (a stage also depends on everything its predecessors depend on).
# `frame_chunk_size` and `mask_threshold` change no stored result, so they key nothing.
_STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "ddim_inversion": ("num_inference_steps", "controlnet_conditioning_scale"),
    "source": (
        "mode",
        "guidance_scale",
        "optimized_slot",
        "source_inner_steps",
        "learning_rate",
        "learning_rate_decay",
        "early_stop_epsilon",
        "early_stop_slope",
    ),
    "frames": ("frame_inner_steps", "frame_optimizer", "frame_step_size"),
}


@dataclass(frozen=True)
class PACMSettings:
    """How PACM runs. The defaults are PoseAnimate's (Sec. 3.2, Alg. 1) with null-text inversion's optimiser, without
    its early stop.

    Step indices `i` below count sampling steps from the noisiest (`i = 0` at `t = T`) to the last (`i = steps - 1`).

    Args:
        mode (`str`, *optional*, defaults to `"paper"`):
            one of `PACM_MODES`: `"paper"`, or the fast modes `"negative-prompt"` and `"direct"`.
        num_inference_steps (`int`, *optional*, defaults to 50):
            DDIM steps of the inversion and of every later stage (fewer is the third fast mode).
        guidance_scale (`float`, *optional*, defaults to 7.5):
            classifier-free guidance of the pose-aware stages (the DDIM inversion itself always runs at 1.0).
        controlnet_conditioning_scale (`float`, *optional*, defaults to 1.0):
            scale of the ControlNet residuals, in every pass.
        optimized_slot (`str`, *optional*, defaults to `"conditional"`):
            the embedding that is optimised: `"conditional"` (Sec. 3.2 text) or `"unconditional"` (the Fig. 2 caption
            and null-text inversion). The other slot keeps its text embedding.
        source_inner_steps (`int`, *optional*, defaults to 10):
            Adam steps per timestep of the pose-aware inversion of the source.
        frame_inner_steps (`int`, *optional*, defaults to 1):
            gradient steps per timestep of each frame's pose-aware embedding (Alg. 1 takes one; 0 samples the frames
            with the source's embeddings, for their masks only).
        frame_optimizer (`str`, *optional*, defaults to `"gradient"`):
            one of `FRAME_OPTIMIZERS`: `"gradient"`, Alg. 1's plain step `∅ ← ∅ - η∇MSE` of size
            `frame_step_size`, which moves a frame's embedding in proportion to how far its pose pulls it off the
            source trajectory (a frame posed as the source keeps the source's embedding); or `"adam"`, a fresh Adam
            per step at the source stage's `learning_rate_at(step)`, which moves every coordinate by about the
            learning rate whatever the pose.
        frame_step_size (`float`, *optional*, defaults to 1e5):
            `η` of the `"gradient"` frame step. Each frame's loss is a mean over the latent's elements, so its
            gradient is small: see the README's PACM section for how the default compares with the source stage's
            Adam steps.
        learning_rate (`float`, *optional*, defaults to 1e-2):
            Adam learning rate at step 0 (the source stage, and the frames with `frame_optimizer="adam"`).
        learning_rate_decay (`float`, *optional*, defaults to 1e-2):
            the learning rate at step `i` is `learning_rate * (1 - learning_rate_decay * i)`; it must stay positive.
        early_stop_epsilon (`float`, *optional*, defaults to 0.0):
        early_stop_slope (`float`, *optional*, defaults to 0.0):
            the optimisation at step `i` stops once the loss is below `early_stop_epsilon + early_stop_slope * i`;
            both 0 (the default) always takes every inner step. Null-text inversion's `1e-5` and `2e-5` let the
            late steps stop at a loss of up to 1e-3 (3% of a unit-variance latent per step), which adds up: they
            save 2% of the evaluations and make frame 0 18% worse (README, PACM section).
        frame_chunk_size (`int`, *optional*, defaults to 4):
            target frames optimised together in one batch; lower it to fit GPU memory. It changes speed and memory
            only: batched results equal frame-by-frame ones to float tolerance.
        mask_threshold (`float`, *optional*, defaults to 0.3):
            character masks are the subject-token attention maps, normalised by their maximum, above this value.
    """

    mode: PACMMode = "paper"
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    controlnet_conditioning_scale: float = 1.0
    optimized_slot: EmbeddingSlot = "conditional"
    source_inner_steps: int = 10
    frame_inner_steps: int = 1
    frame_optimizer: FrameOptimizer = "gradient"
    frame_step_size: float = 1e5
    learning_rate: float = 1e-2
    learning_rate_decay: float = 1e-2
    early_stop_epsilon: float = 0.0
    early_stop_slope: float = 0.0
    frame_chunk_size: int = 4
    mask_threshold: float = 0.3

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}={value} must be a finite number.")
        if self.mode not in PACM_MODES:
            raise ValueError(f"mode={self.mode!r} is not a PACM mode; choose one of {PACM_MODES}.")
        if self.optimized_slot not in EMBEDDING_SLOTS:
            raise ValueError(f"optimized_slot={self.optimized_slot!r}; choose one of {EMBEDDING_SLOTS}.")
        for name in ("num_inference_steps", "frame_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        for name in ("source_inner_steps", "frame_inner_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 or more.")
        if self.frame_optimizer not in FRAME_OPTIMIZERS:
            raise ValueError(f"frame_optimizer={self.frame_optimizer!r}; choose one of {FRAME_OPTIMIZERS}.")
        for name in ("learning_rate", "guidance_scale", "frame_step_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive.")
        decays_to_zero = self.mode == "paper" and self.learning_rate_at(self.num_inference_steps - 1) <= 0
        if self.learning_rate_decay < 0 or decays_to_zero:
            raise ValueError(
                f"learning_rate_decay={self.learning_rate_decay} must be >= 0 and keep the learning rate positive "
                f"over {self.num_inference_steps} steps (below {1 / max(self.num_inference_steps - 1, 1):.3g})."
            )
        if self.early_stop_epsilon < 0 or self.early_stop_slope < 0:
            raise ValueError("early_stop_epsilon and early_stop_slope must be >= 0 (both 0 disables early stopping).")
        if not 0.0 <= self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold={self.mask_threshold} must lie in [0, 1).")

    def learning_rate_at(self, step: int) -> float:
        """Adam's learning rate at sampling step `step` (0 is the noisiest)."""
        return self.learning_rate * (1.0 - self.learning_rate_decay * step)

    def frame_learning_rate(self, step: int) -> float:
        """The step size of the frames' update at sampling step `step`: `frame_step_size` for the plain gradient
        step, Adam's `learning_rate_at(step)` otherwise."""
        return self.frame_step_size if self.frame_optimizer == "gradient" else self.learning_rate_at(step)

    def early_stop_threshold(self, step: int) -> float:
        """The loss below which the optimisation at sampling step `step` stops."""
        return self.early_stop_epsilon + self.early_stop_slope * step

    def stage_fields(self, stage: str) -> dict[str, object]:
        """The settings that `stage` (one of `STAGES`) adds to what its predecessors' results depend on."""
        values = asdict(self)
        return {name: values[name] for name in _STAGE_FIELDS[stage]}
