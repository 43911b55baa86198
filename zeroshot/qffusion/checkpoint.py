"""Loading and saving Qffusion checkpoints: a 12-channel UNet plus what it was trained on.

No public Qffusion checkpoint exists; `scripts/train_qga.py` makes one. Two forms load:

- a **diffusers-format model folder** (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) whose UNet takes
  12 input channels, such as the `final/` folder the training script exports;
- **one `.safetensors` file of UNet weights** (diffusers key names), such as the `unet.safetensors` of a training
  checkpoint; the other models and the UNet's configuration come from the base model (`--model`, Stable Diffusion 1.5
  by default), with `in_channels` taken from the file.

Either form may carry a [`QffusionConfig`]: `qffusion.json` in the folder, or the `qffusion` entry of the safetensors
metadata. It says which conditions the checkpoint was trained on and how they were drawn, at what resolution and with
which prompt, so that editing renders exactly what training rendered. A separate VAE (the paper fine-tunes one) can
replace the base model's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..components import ModelComponents
from ..errors import ZeroshotError
from ..loading import DEFAULT_MODEL, load_components, resolve_device, resolve_dtype
from .conditions import FACE_RENDERING

logger = logging.getLogger(__name__)

#: Input channels of a Qffusion UNet: reference, condition and noisy latent grids of 4 channels each.
QFFUSION_IN_CHANNELS = 12
#: File name of the [`QffusionConfig`] in a checkpoint folder, and its key in safetensors metadata.
CONFIG_NAME = "qffusion.json"
METADATA_KEY = "qffusion"


@dataclass(frozen=True)
class QffusionConfig:
    """What a Qffusion checkpoint was trained on.

    Args:
        condition (`str`, *optional*, defaults to `"face"`): `"face"` (face mesh and shoulders) or `"body"` (OpenPose).
        rendering (`str`, *optional*, defaults to `"face-v1"`): version of the condition drawing.
        resolution (`int`, *optional*, defaults to 256): side in pixels of the square frames it was trained on.
        prompt (`str`, *optional*, defaults to `""`): the text fed to the UNet's cross-attention.
        frame_interval (`str`, *optional*, defaults to `"5"`): frames between the four frames of a training grid (a
            number, or a range `"LOW:HIGH"`), for the record.
    """

    condition: str = "face"
    rendering: str = FACE_RENDERING
    resolution: int = 256
    prompt: str = ""
    frame_interval: str = "5"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> QffusionConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ZeroshotError(f"The Qffusion settings in {source} are not valid JSON: {error}") from error
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("Ignoring unknown Qffusion settings in %s: %s", source, ", ".join(unknown))
        config = cls(**{key: value for key, value in values.items() if key in known})
        if config.condition not in ("face", "body"):
            raise ZeroshotError(f"{source} names condition {config.condition!r}; the toolkit knows 'face' and 'body'.")
        return config


def _not_qffusion(source: str, channels: int) -> ZeroshotError:
    kind = "a plain Stable Diffusion UNet" if channels == 4 else "not a Qffusion UNet"
    return ZeroshotError(
        f"The UNet in {source} takes {channels} input channels: it is {kind}. A Qffusion checkpoint's UNet takes "
        f"{QFFUSION_IN_CHANNELS} (the reference, condition and noisy latent grids, 4 channels each). Fine-tune one "
        f"with scripts/train_qga.py and pass its final/ folder or a checkpoint's unet.safetensors."
    )


def _load_folder(folder: Path, device: torch.device, dtype: torch.dtype, offline: bool) -> ModelComponents:
    config_path = folder / "unet" / "config.json"
    if config_path.is_file():
        try:
            channels = json.loads(config_path.read_text()).get("in_channels")
        except json.JSONDecodeError as error:
            raise ZeroshotError(f"{str(config_path)!r} is not valid JSON: {error}") from error
        if channels != QFFUSION_IN_CHANNELS:
            raise _not_qffusion(repr(str(folder)), channels)
    return load_components(
        str(folder), None, device=device, dtype=dtype, offline=offline, unet_in_channels=QFFUSION_IN_CHANNELS
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return {key: handle.get_tensor(key) for key in handle.keys()}, metadata
    except (SafetensorError, OSError) as error:
        raise ZeroshotError(f"{str(path)!r} is not a readable safetensors file: {error}") from error


def _load_unet_file(
    path: Path, model: str, device: torch.device, dtype: torch.dtype, offline: bool
) -> tuple[ModelComponents, dict[str, str]]:
    state, metadata = _read_safetensors(path)
    conv_in = state.get("conv_in.weight")
    if conv_in is None:
        hint = ""
        if any(key.startswith("model.diffusion_model.") for key in state):
            hint = " Its keys are those of an original (LDM) checkpoint; convert it to diffusers format first."
        raise ZeroshotError(
            f"{str(path)!r} holds no `conv_in.weight`: it is not a diffusers-format UNet state dict.{hint}"
        )
    if conv_in.shape[1] != QFFUSION_IN_CHANNELS:
        raise _not_qffusion(repr(str(path)), conv_in.shape[1])
    components = load_components(model, None, device=device, dtype=dtype, offline=offline, unet_in_channels=None)
    config = {**components.unet.config, "in_channels": QFFUSION_IN_CHANNELS}
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        details = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise ZeroshotError(
            f"The UNet weights in {str(path)!r} do not fit the UNet of the base model {model!r} ({details}). Pass the "
            f"base model the checkpoint was trained from with --model."
        )
    components.unet = _to(unet, device, dtype).eval()
    return components, metadata


def _to(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Moves a freshly built (float32) model; casts only when needed (diffusers warns on every dtype cast)."""
    model.to(device)
    return model if dtype == torch.float32 else model.to(dtype)


def _load_vae(reference: str, base_vae: AutoencoderKL, device: torch.device, dtype: torch.dtype) -> AutoencoderKL:
    path = Path(reference).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ZeroshotError(f"The VAE {reference!r} must be a diffusers folder or a .safetensors file.")
        state, _ = _read_safetensors(path)
        vae = AutoencoderKL.from_config(base_vae.config)
        missing, unexpected = vae.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ZeroshotError(
                f"The VAE weights in {reference!r} do not fit the base model's VAE ({len(missing)} missing, "
                f"{len(unexpected)} unexpected keys)."
            )
        return _to(vae, device, dtype).eval()
    if path.is_dir():
        subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
        if subfolder is None and not (path / "config.json").is_file():
            raise ZeroshotError(f"{reference!r} is not a diffusers VAE folder (no config.json, no vae/config.json).")
        try:
            vae = AutoencoderKL.from_pretrained(str(path), subfolder=subfolder, torch_dtype=dtype)
        except (OSError, ValueError, RuntimeError) as error:
            raise ZeroshotError(f"Could not load the VAE from {reference!r}: {error}") from error
        return vae.to(device).eval()
    raise ZeroshotError(f"The VAE {reference!r} does not exist; pass a diffusers VAE folder or a .safetensors file.")


def load_qffusion_components(
    checkpoint: str,
    *,
    model: str = DEFAULT_MODEL,
    vae: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offline: bool = False,
) -> tuple[ModelComponents, QffusionConfig]:
    """Loads a Qffusion checkpoint and what it was trained on.

    Args:
        checkpoint (`str`): a diffusers-format model folder with a 12-channel UNet, or a `.safetensors` file of
            12-channel UNet weights.
        model (`str`, *optional*, defaults to `DEFAULT_MODEL`): the base model (hub id or folder) that a
            `.safetensors` checkpoint takes its VAE, text encoder, tokenizer, scheduler and UNet configuration from.
            Not used for a folder checkpoint.
        vae (`str`, *optional*): a VAE to use instead of the checkpoint's or base model's: a diffusers VAE folder (or
            a model folder with `vae/`), or a `.safetensors` file of VAE weights.
        device (`str` or `torch.device`, *optional*): by default CUDA when available, else the CPU.
        dtype (`str` or `torch.dtype`, *optional*): by default float16 on CUDA, float32 elsewhere.
        offline (`bool`, *optional*, defaults to `False`): never touch the network.

    Returns:
        `tuple[ModelComponents, QffusionConfig]`: the models (no ControlNet) and the checkpoint's settings (defaults,
        with a log message, when it carries none).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the checkpoint is missing or unreadable, or its UNet does not take 12
        input channels (the message explains what it is instead).

    Example:

    ```py
    >>> components, config = load_qffusion_components("runs/qga/final")
    >>> components, config = load_qffusion_components("runs/qga/checkpoint-2000/unet.safetensors", model="sd15")
    ```
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        components = _load_folder(path, resolved_device, resolved_dtype, offline)
        config_path = path / CONFIG_NAME
        text = config_path.read_text() if config_path.is_file() else None
        source = repr(str(config_path))
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise ZeroshotError(
                f"The checkpoint {checkpoint!r} must be a diffusers model folder or a .safetensors file of UNet "
                f"weights."
            )
        components, metadata = _load_unet_file(path, model, resolved_device, resolved_dtype, offline)
        text = metadata.get(METADATA_KEY)
        source = f"the metadata of {str(path)!r}"
    else:
        raise ZeroshotError(
            f"The checkpoint {checkpoint!r} does not exist. Pass the final/ folder or a unet.safetensors that "
            f"scripts/train_qga.py wrote."
        )
    if text is None:
        config = QffusionConfig()
        logger.info("The checkpoint carries no Qffusion settings; assuming the defaults: %s", config)
    else:
        config = QffusionConfig.from_json(text, source)
    if vae is not None:
        components.vae = _load_vae(vae, components.vae, resolved_device, resolved_dtype)
    return components, config


def save_unet_weights(unet: torch.nn.Module, path: str | Path, config: QffusionConfig) -> Path:
    """Writes `unet`'s weights as one `.safetensors` file with `config` in its metadata (atomically).

    Returns:
        `Path`: the written file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {key: value.detach().contiguous().cpu() for key, value in unet.state_dict().items()}
    staging = path.with_name(f".{path.name}.partial")
    save_file(state, str(staging), metadata={METADATA_KEY: config.to_json()})
    staging.replace(path)
    return path


def save_qffusion_model(components: ModelComponents, folder: str | Path, config: QffusionConfig) -> Path:
    """Writes a complete diffusers-format Qffusion model folder (all models and `qffusion.json`), which
    [`load_qffusion_components`] and diffusers' `DiffusionPipeline.from_pretrained` read.

    Returns:
        `Path`: the folder.
    """
    from .pipeline import QffusionPipeline

    folder = Path(folder)
    QffusionPipeline.from_components(components).save_pretrained(folder)
    (folder / CONFIG_NAME).write_text(config.to_json())
    return folder
