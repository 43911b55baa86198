"""The models the app keeps between runs: PoseAnimate's, loaded once at start, and the last Qffusion checkpoint."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..poseanimate import PoseAnimatePipeline
    from ..qffusion import QffusionPipeline

logger = logging.getLogger(__name__)


class AppModels:
    """Loaded models, reused by every run of the app.

    Args:
        pose_animate ([`~zeroshot.PoseAnimatePipeline`]): Stable Diffusion 1.5 with the OpenPose ControlNet.
        model (`str`): the base model it was loaded from (also the base of `.safetensors` Qffusion checkpoints).
        controlnet (`str`): the ControlNet it was loaded from.
        device (`str`), dtype (`str`), offline (`bool`): the loader's options, for Qffusion checkpoints too.
        cache_dir (`str` or `os.PathLike`, *optional*): where PACM caches inversions; `None` caches nothing.

    Example:

    ```py
    >>> models = AppModels.load("stable-diffusion-v1-5/stable-diffusion-v1-5", "lllyasviel/control_v11p_sd15_openpose")
    >>> models.pose_animate  # the same pipeline for every animation
    ```
    """

    def __init__(
        self,
        pose_animate: PoseAnimatePipeline,
        *,
        model: str,
        controlnet: str,
        device: str = "auto",
        dtype: str = "auto",
        offline: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.pose_animate = pose_animate
        self.model, self.controlnet = model, controlnet
        self.device, self.dtype, self.offline = device, dtype, offline
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._qffusion: tuple[str, QffusionPipeline] | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str,
        controlnet: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        offline: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> AppModels:
        """Loads PoseAnimate's models with [`~zeroshot.loading.load_components`], as the scripts do.

        Raises:
            [`~zeroshot.errors.ZeroshotError`]: a model cannot be had (the message says how to get it).
        """
        from ..loading import load_components
        from ..poseanimate import PoseAnimatePipeline

        logger.info("loading models: %s + %s", model, controlnet)
        components = load_components(model, controlnet, device=device, dtype=dtype, offline=offline)
        options = {"device": device, "dtype": dtype, "offline": offline, "cache_dir": cache_dir}
        return cls(PoseAnimatePipeline.from_components(components), model=model, controlnet=controlnet, **options)

    def qffusion(self, checkpoint: str) -> QffusionPipeline:
        """The Qffusion pipeline of `checkpoint`, loaded on first use and kept until another checkpoint is asked for
        (one at a time, to bound memory).

        Raises:
            [`~zeroshot.errors.ZeroshotError`]: the checkpoint cannot be loaded.
        """
        from ..qffusion import QffusionPipeline, load_qffusion_components

        key = str(Path(checkpoint).expanduser().resolve())
        with self._lock:
            if self._qffusion is None or self._qffusion[0] != key:
                self._qffusion = None  # drop the previous checkpoint before loading the next
                logger.info("loading the Qffusion checkpoint %s", checkpoint)
                components, _ = load_qffusion_components(
                    checkpoint, model=self.model, device=self.device, dtype=self.dtype, offline=self.offline
                )
                self._qffusion = (key, QffusionPipeline.from_components(components))
            return self._qffusion[1]

    def describe(self) -> dict:
        """The models and dtype, for reports."""
        return {
            "model": self.model,
            "controlnet": self.controlnet,
            "dtype": str(self.pose_animate.unet.dtype).removeprefix("torch."),
        }
