"""Loading and saving Qffusion checkpoints: a 12-channel UNet plus what it was trained on.

No public Qffusion checkpoint exists; `scripts/train_qga.py` makes one. Two forms load:

- a **diffusers-format model folder** (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) whose UNet takes
  12 input channels, such as the `final/` folder the training script exports;
- **one `.safetensors` file of UNet weights** (diffusers key names), such as the `unet.safetensors` of a training
  checkpoint; the other models and the UNet's configuration come from the base model (`--model`, Stable Diffusion 1.5
  by default), with `in_channels` taken from the file.

Either form may carry a [`QffusionConfig`]: `qffusion.json` in the folder (a copy of which the folder's UNet weights
carry too, so that a `qffusion.json` changed by hand or copied from another model is caught), or the `qffusion` entry
of the safetensors metadata. It says which conditions the checkpoint was trained on and how they were drawn, at what
resolution, on which crops and with which prompt, so that editing renders exactly what training rendered; a checkpoint
whose drawing is not the one this code makes is refused. [`read_qffusion_config`] reads it without loading any
weights, so that a script can check its inputs first. A separate VAE (the paper fine-tunes one) can replace the base
model's.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from ..atomic import staged_file, staged_folder
from ..components import ModelComponents
from ..errors import ZeroshotError
from ..loading import DEFAULT_MODEL, load_components, resolve_device, resolve_dtype
from .conditions import CONDITION_KINDS, rendering_version
from .crops import CROP_MODES

logger = logging.getLogger(__name__)

#: Input channels of a Qffusion UNet: reference, condition and noisy latent grids of 4 channels each.
QFFUSION_IN_CHANNELS = 12
#: File name of the [`QffusionConfig`] in a checkpoint folder, and its key in safetensors metadata.
CONFIG_NAME = "qffusion.json"
METADATA_KEY = "qffusion"
#: The UNet weights of a model folder (diffusers' name), whose metadata also carries the settings.
FOLDER_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class QffusionConfig:
    """What a Qffusion checkpoint was trained on.

    Args:
        condition (`str`, *optional*, defaults to `"face"`): `"face"` (face mesh and shoulders) or `"body"` (OpenPose).
        rendering (`str`, *optional*): version of the condition drawing; defaults to the version this code draws for
            `condition` (`"face-v1"`, `"openpose-v1"`).
        resolution (`int`, *optional*, defaults to 256): side in pixels of the square frames it was trained on.
        prompt (`str`, *optional*, defaults to `""`): the text fed to the UNet's cross-attention.
        frame_interval (`str`, *optional*, defaults to `"5"`): frames between the four frames of a training grid (a
            number, or a range `"LOW:HIGH"`), for the record.
        crop (`str`, *optional*, defaults to `"subject"`): what the frames were: `"subject"` (square crops tracked
            around the subject) or `"full"` (whole frames); see [`~zeroshot.qffusion.crops`]. Editing crops the same.
        crop_scale (`float`, *optional*, defaults to 2.5): subject crops' side over the subject's size.
        crop_smoothing (`float`, *optional*, defaults to 5.0): smoothing of the subject crops' centres over time
            (standard deviation in frames).
    """

    condition: str = "face"
    rendering: str | None = None
    resolution: int = 256
    prompt: str = ""
    frame_interval: str = "5"
    crop: str = "subject"
    crop_scale: float = 2.5
    crop_smoothing: float = 5.0

    def __post_init__(self) -> None:
        if self.condition not in CONDITION_KINDS:
            raise ValueError(f"condition must be one of {', '.join(CONDITION_KINDS)}, got {self.condition!r}.")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}, got {self.crop!r}.")
        if not self.crop_scale > 0 or not self.crop_smoothing >= 0:
            raise ValueError(f"crop_scale must be positive and crop_smoothing not negative, got {self}.")
        if self.rendering is None:
            object.__setattr__(self, "rendering", rendering_version(self.condition))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> QffusionConfig:
        """The settings in `text` (read from `source`, named in messages).

        Raises:
            [`~zeroshot.errors.ZeroshotError`]: not JSON, an unknown condition kind, or conditions drawn by another
            version of the rendering than this code's, which the checkpoint would not follow as it was trained to.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ZeroshotError(f"The Qffusion settings in {source} are not valid JSON: {error}") from error
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("Ignoring unknown Qffusion settings in %s: %s", source, ", ".join(unknown))
        condition = values.get("condition", cls.condition)
        if condition not in CONDITION_KINDS:
            raise ZeroshotError(f"{source} names condition {condition!r}; the toolkit knows 'face' and 'body'.")
        try:
            config = cls(**{key: value for key, value in values.items() if key in known})
        except (TypeError, ValueError) as error:
            raise ZeroshotError(f"The Qffusion settings in {source} are not valid: {error}") from error
        current = rendering_version(config.condition)
        if config.rendering != current:
            raise ZeroshotError(
                f"The checkpoint was trained on {config.condition} conditions drawn by rendering {config.rendering!r} "
                f"({source}), but this version of the toolkit draws {current!r}: the model would be driven by "
                f"images unlike those it learned. Edit with the toolkit version that drew {config.rendering!r}, or "
                f"fine-tune the checkpoint on {current!r} conditions (scripts/train_qga.py --model CHECKPOINT)."
            )
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


def _read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (none when `tensors` is False: only the header is read) and the metadata of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return ({key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}), metadata
    except (SafetensorError, OSError) as error:
        raise ZeroshotError(f"{str(path)!r} is not a readable safetensors file: {error}") from error


def _load_base_parts(model: str, dtype: torch.dtype, offline: bool) -> tuple[dict, dict[str, object]]:
    """The base model's UNet configuration (not its weights), VAE, text encoder, tokenizer and scheduler."""
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    options = {"local_files_only": offline}
    try:
        with warnings.catch_warnings():
            # diffusers passes huggingface_hub an argument it deprecated; the warning means nothing to our users.
            warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")
            unet_config = UNet2DConditionModel.load_config(source, subfolder="unet", **options)
            parts = {
                "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **options),
                "text_encoder": CLIPTextModel.from_pretrained(
                    source, subfolder="text_encoder", torch_dtype=dtype, **options
                ),
                "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **options),
                "scheduler": DDIMScheduler.from_config(
                    DDIMScheduler.load_config(source, subfolder="scheduler", **options)
                ),
            }
    except (OSError, ValueError, RuntimeError) as error:
        raise ZeroshotError(
            f"Could not load the base model {model!r}, whose VAE, text encoder and UNet configuration complete the "
            f"UNet weights: {error}. Pass the base model the checkpoint was trained from with --model (a "
            f"diffusers-format folder, or a hub id that is cached or, without --offline, reachable)."
        ) from error
    return unet_config, parts


def _load_unet_file(
    path: Path, model: str, device: torch.device, dtype: torch.dtype, offline: bool
) -> ModelComponents:
    from accelerate import init_empty_weights

    state, _ = _read_safetensors(path)
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
    unet_config, parts = _load_base_parts(model, dtype, offline)
    with init_empty_weights():  # no random initialisation: every weight comes from the file
        unet = UNet2DConditionModel.from_config({**unet_config, "in_channels": QFFUSION_IN_CHANNELS})
    missing, unexpected = unet.load_state_dict(state, strict=False, assign=True)
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
    components = ModelComponents(unet=_to(unet, device, dtype), **parts)
    components.to(device)
    for module in components.models():
        module.eval()
    return components


def _to(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Moves a model built from a file; casts only when needed (diffusers warns on every dtype cast)."""
    model.to(device)
    return model if model.dtype == dtype else model.to(dtype)


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
        [`~zeroshot.errors.ZeroshotError`]: the checkpoint is missing or unreadable, its conditions were drawn by
        another version of the rendering (see [`read_qffusion_config`]), or its UNet does not take 12 input channels
        (the message explains what it is instead).

    Example:

    ```py
    >>> components, config = load_qffusion_components("runs/qga/final")
    >>> components, config = load_qffusion_components("runs/qga/checkpoint-2000/unet.safetensors", model="sd15")
    ```
    """
    config = read_qffusion_config(checkpoint)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        components = _load_folder(path, resolved_device, resolved_dtype, offline)
    else:
        components = _load_unet_file(path, model, resolved_device, resolved_dtype, offline)
    if vae is not None:
        components.vae = _load_vae(vae, components.vae, resolved_device, resolved_dtype)
    return components, config


def read_qffusion_config(checkpoint: str) -> QffusionConfig:
    """The [`QffusionConfig`] a checkpoint carries, read without loading any weights (`qffusion.json` of a folder,
    or the metadata in a `.safetensors` file's header); the defaults, with a log message, when it carries none.

    Args:
        checkpoint (`str`): a Qffusion model folder or a `.safetensors` file of its UNet weights.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: the checkpoint is missing or is neither a folder nor a `.safetensors`
        file, its settings are unreadable, or its conditions were drawn by another version of the rendering.

    Example:

    ```py
    >>> read_qffusion_config("runs/qga/final").condition
    'face'
    ```
    """
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return _read_folder_config(path)
    if not path.is_file():
        raise ZeroshotError(
            f"The checkpoint {checkpoint!r} does not exist. Pass the final/ folder or a unet.safetensors that "
            f"scripts/train_qga.py wrote."
        )
    if path.suffix != ".safetensors":
        raise ZeroshotError(
            f"The checkpoint {checkpoint!r} must be a diffusers model folder or a .safetensors file of UNet weights."
        )
    text = _read_safetensors(path, tensors=False)[1].get(METADATA_KEY)
    return _config_or_defaults(text, f"the metadata of {str(path)!r}")


def _config_or_defaults(text: str | None, source: str) -> QffusionConfig:
    if text is None:
        config = QffusionConfig()
        logger.info("The checkpoint carries no Qffusion settings; assuming the defaults: %s", config)
        return config
    return QffusionConfig.from_json(text, source)


def _read_folder_config(folder: Path) -> QffusionConfig:
    """A folder's `qffusion.json`, checked against the copy in its UNet weights' metadata (when both exist)."""
    config_path, weights = folder / CONFIG_NAME, folder / FOLDER_WEIGHTS
    text = config_path.read_text() if config_path.is_file() else None
    stored = _read_safetensors(weights, tensors=False)[1].get(METADATA_KEY) if weights.is_file() else None
    if text is None and stored is not None:
        return QffusionConfig.from_json(stored, f"the metadata of {str(weights)!r}")
    config = _config_or_defaults(text, repr(str(config_path)))
    if stored is not None:
        trained = QffusionConfig.from_json(stored, f"the metadata of {str(weights)!r}")
        differences = [
            f"{field.name} {getattr(config, field.name)!r} (the weights: {getattr(trained, field.name)!r})"
            for field in fields(QffusionConfig)
            if getattr(config, field.name) != getattr(trained, field.name)
        ]
        if differences:
            raise ZeroshotError(
                f"{str(config_path)!r} disagrees with the settings its UNet weights were saved with: "
                f"{'; '.join(differences)}. It was changed or copied from another model; restore it from the "
                f"weights' settings, or use the checkpoint that file belongs to."
            )
    return config


def save_unet_weights(unet: torch.nn.Module, path: str | Path, config: QffusionConfig) -> Path:
    """Writes `unet`'s weights as one `.safetensors` file with `config` in its metadata; the file appears only once
    complete.

    Returns:
        `Path`: the written file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {key: value.detach().contiguous().cpu() for key, value in unet.state_dict().items()}
    with staged_file(path) as staging:
        save_file(state, str(staging), metadata={METADATA_KEY: config.to_json()})
    return path


def save_qffusion_model(components: ModelComponents, folder: str | Path, config: QffusionConfig) -> Path:
    """Writes a complete diffusers-format Qffusion model folder (all models and `qffusion.json`, whose settings the
    UNet weights' metadata also carry), which [`load_qffusion_components`] and diffusers'
    `DiffusionPipeline.from_pretrained` read. The folder (missing or empty before) appears only once complete.

    Returns:
        `Path`: the folder.
    """
    from safetensors.torch import load_file, save_file

    from .pipeline import QffusionPipeline

    folder = Path(folder)
    with staged_folder(folder) as staging:
        QffusionPipeline.from_components(components).save_pretrained(staging)
        weights = staging / FOLDER_WEIGHTS
        if weights.is_file():  # one file (diffusers shards only UNets above 10 GB)
            save_file(load_file(weights), weights, metadata={"format": "pt", METADATA_KEY: config.to_json()})
        (staging / CONFIG_NAME).write_text(config.to_json())
    return folder
