"""Settings of the face refinement pass (torch-free, so scripts can check them before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass

#: PACM modes the face pass can prepare the source's face crop with (the pipeline's own, see `zeroshot.pacm`).
FACE_INVERSION_MODES: tuple[str, ...] = ("paper", "negative-prompt", "direct")
#: The strength `--refine-face` takes when given without a value.
DEFAULT_STRENGTH = 0.3


@dataclass(frozen=True)
class FaceRefinement:
    """How the face refinement pass runs: a second PoseAnimate pass on face crops, pasted back (see
    [`~zeroshot.face.refinement.refine_faces`]).

    Args:
        strength (`float`, *optional*, defaults to `DEFAULT_STRENGTH`): how far the generated face crops are re-noised
            before they are denoised again, in [0, 1] (SDEdit): the pass runs the last `int(strength * steps)` of the
            DDIM steps. 0 gives the frames back unchanged; 1 redraws the faces from the source crop's noise.
        face_size (`int`, *optional*, defaults to 512): the side in pixels the face crops are resized to, a
            multiple of 8 (512 is the resolution Stable Diffusion 1.5 was trained at).
        inversion (`str`, *optional*, defaults to `"direct"`): the PACM mode that prepares the source's face crop
            (frame 0 of the pass); `"direct"` retraces it exactly with no optimisation.
        min_face_size (`int`, *optional*, defaults to 16): faces smaller than this many pixels across on the output
            canvas are not refined (the source's must be at least this large).
        smoothing (`float`, *optional*, defaults to 1.5): standard deviation in frames of the Gaussian that smooths
            the face boxes over time, so crops do not jitter; 0 turns it off.

    Example:

    ```py
    >>> from zeroshot.face import FaceRefinement
    >>> result = pipe(image, poses, prompt, face_refinement=FaceRefinement(strength=0.3, face_size=512))
    >>> result.report["face_refinement"]["skipped_frames"]
    ```
    """

    strength: float = DEFAULT_STRENGTH
    face_size: int = 512
    inversion: str = "direct"
    min_face_size: int = 16
    smoothing: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {self.strength}.")
        if self.face_size < 8 or self.face_size % 8:
            raise ValueError(
                f"face_size must be a positive multiple of 8 (the VAE downscales by 8), got {self.face_size}."
            )
        if self.inversion not in FACE_INVERSION_MODES:
            raise ValueError(f"inversion must be one of {FACE_INVERSION_MODES}, got {self.inversion!r}.")
        if self.min_face_size < 1:
            raise ValueError(f"min_face_size must be at least 1 pixel, got {self.min_face_size}.")
        if not self.smoothing >= 0:
            raise ValueError(f"smoothing must be 0 or more frames, got {self.smoothing}.")

    def num_steps(self, num_inference_steps: int) -> int:
        """How many of `num_inference_steps` DDIM steps the pass runs: `int(strength * num_inference_steps)`, as
        diffusers' image-to-image pipelines count them."""
        return int(self.strength * num_inference_steps)
