"""The settings of a QGA fine-tuning run, importable without torch (so that `scripts/train_qga.py --help` and its
input errors cost nothing); [`~zeroshot.qffusion.training.train_qga`] runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import MAX_OUTPUT_SIDE
from ..errors import ZeroshotError

if TYPE_CHECKING:
    from .checkpoint import QffusionConfig


def parse_interval(text: str) -> tuple[int, int]:
    """`"5"` -> `(5, 5)`; `"2:8"` -> `(2, 8)` (a range, both ends included).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: not a positive number or range.
    """
    try:
        low, _, high = str(text).partition(":")
        interval = (int(low), int(high or low))
    except ValueError as error:
        raise ZeroshotError(f"--interval must be a number or a range LOW:HIGH, got {text!r}.") from error
    if interval[0] < 1 or interval[1] < interval[0]:
        raise ZeroshotError(f"--interval must be at least 1 (and LOW <= HIGH), got {text!r}.")
    return interval


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of a QGA fine-tuning run (the options of `scripts/train_qga.py`).

    Args:
        model (`str`): the base model: a Stable Diffusion 1.5 folder or hub id (4-channel UNet, widened), or a
            Qffusion model folder (12 channels, training continues).
        data (`str`): folder of training videos.
        output_dir (`str`): where checkpoints, logs, the data cache and `final/` go.
        resolution (`int`, *optional*, defaults to 256): side of the square training frames (the paper's 256).
        interval (`str`, *optional*, defaults to `"5"`): frames between the four frames, or a range `"LOW:HIGH"`.
        crop (`str`, *optional*, defaults to `"subject"`): `"subject"` (square crops tracked around the subject, the
            paper's) or `"full"` (whole frames); recorded in the checkpoint, and editing follows it.
        crop_scale (`float`, *optional*, defaults to 2.5): crop side over the subject's size.
        crop_smoothing (`float`, *optional*, defaults to 5.0): smoothing of the crops' centres over time (standard
            deviation in frames; 0: none).
        condition (`str`, *optional*, defaults to `"face"`): `"face"` or `"body"`.
        prompt (`str`, *optional*, defaults to `""`): the fixed text for the cross-attention.
        learning_rate (`float`, *optional*, defaults to 1e-4): peak learning rate.
        warmup_steps (`int`, *optional*, defaults to 10000): linear warm-up, in optimizer steps.
        max_steps (`int`, *optional*, defaults to 100000): optimizer steps to train for.
        batch_size (`int`, *optional*, defaults to 1): samples per process and micro-batch.
        gradient_accumulation (`int`, *optional*, defaults to 2): micro-batches per optimizer step.
        weight_decay (`float`, *optional*, defaults to 1e-2): AdamW weight decay.
        max_grad_norm (`float`, *optional*, defaults to 1.0): gradient clipping.
        mixed_precision (`str`, *optional*, defaults to `"no"`): `"no"`, `"fp16"` or `"bf16"`.
        gradient_checkpointing (`bool`, *optional*, defaults to `False`): trade compute for UNet memory.
        checkpoint_every (`int`, *optional*, defaults to 1000): optimizer steps between checkpoints.
        keep_checkpoints (`int`, *optional*, defaults to 3): newest checkpoints kept; 0 keeps all.
        log_every (`int`, *optional*, defaults to 10): optimizer steps between log lines.
        resume (`str`, *optional*): `"latest"` or a checkpoint folder to continue from.
        seed (`int`, *optional*, defaults to 0): seed of the data order, noise and timesteps.
        num_workers (`int`, *optional*, defaults to 2): data-loading processes per training process.
        cpu (`bool`, *optional*, defaults to `False`): train on CPUs (several processes talk over gloo).
        offline (`bool`, *optional*, defaults to `False`): never touch the network for the base model.
        show_progress (`bool`, *optional*, defaults to `True`): progress bars.
    """

    model: str
    data: str
    output_dir: str
    resolution: int = 256
    interval: str = "5"
    crop: str = "subject"
    crop_scale: float = 2.5
    crop_smoothing: float = 5.0
    condition: str = "face"
    prompt: str = ""
    learning_rate: float = 1e-4
    warmup_steps: int = 10000
    max_steps: int = 100000
    batch_size: int = 1
    gradient_accumulation: int = 2
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    resume: str | None = None
    seed: int = 0
    num_workers: int = 2
    cpu: bool = False
    offline: bool = False
    show_progress: bool = True

    def qffusion_config(self) -> QffusionConfig:
        """The [`~zeroshot.qffusion.checkpoint.QffusionConfig`] that checkpoints of this run carry (the condition
        drawing is this code's)."""
        from .checkpoint import QffusionConfig

        return QffusionConfig(
            condition=self.condition,
            resolution=self.resolution,
            prompt=self.prompt,
            frame_interval=self.interval,
            crop=self.crop,
            crop_scale=self.crop_scale,
            crop_smoothing=self.crop_smoothing,
        )

    def check(self) -> None:
        """Raises [`~zeroshot.errors.ZeroshotError`] for settings that cannot work."""
        parse_interval(self.interval)
        positive = ("resolution", "max_steps", "batch_size", "gradient_accumulation", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ZeroshotError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        for name in ("warmup_steps", "keep_checkpoints", "num_workers"):
            if getattr(self, name) < 0:
                raise ZeroshotError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}.")
        limits = {"resolution": MAX_OUTPUT_SIDE, "batch_size": 1024, "num_workers": 64, "seed": 2**32 - 1}
        for name, limit in limits.items():
            if not 0 <= getattr(self, name) <= limit:
                raise ZeroshotError(f"--{name.replace('_', '-')} must lie in [0, {limit}], got {getattr(self, name)}.")
        if self.resolution % 32:
            raise ZeroshotError(f"--resolution must be a multiple of 32, got {self.resolution}.")
        for name in ("learning_rate", "crop_scale", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name in ("learning_rate", "crop_scale")):
                raise ZeroshotError(f"--{name.replace('_', '-')} must be a finite positive number, got {value}.")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ZeroshotError(f"--out {self.output_dir!r} is a file; give the run's folder.")
        if not Path(self.data).is_dir():
            raise ZeroshotError(f"--data {self.data!r} is not a folder (of training videos).")
        if not math.isfinite(self.crop_smoothing) or self.crop_smoothing < 0:
            raise ZeroshotError(f"--crop-smoothing must be a finite number, 0 or more, got {self.crop_smoothing}.")
        if self.crop not in ("subject", "full"):
            raise ZeroshotError(f"--crop must be 'subject' or 'full', got {self.crop!r}.")
        if self.condition not in ("face", "body"):
            raise ZeroshotError(f"--condition must be 'face' or 'body', got {self.condition!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ZeroshotError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")
