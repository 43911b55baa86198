"""The one weight loader of the toolkit: base model and ControlNet from a hub id or a local folder.

Every script loads its models through [`load_components`], so they share defaults, device and dtype rules, offline
behaviour and error messages. A model already in the local Hugging Face cache is used without touching the network;
one that is not is fetched only when offline mode is off and the hub answers, and every failure becomes one
[`~zeroshot.errors.ZeroshotError`] that names the model and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from .components import ModelComponents
from .defaults import DEFAULT_CONTROLNET, DEFAULT_MODEL
from .errors import ZeroshotError

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# What each part of a diffusers-format base model folder must hold, and what loads it.
_BASE_MODEL_PARTS = {
    "unet": ("config.json", UNet2DConditionModel),
    "vae": ("config.json", AutoencoderKL),
    "text_encoder": ("config.json", CLIPTextModel),
    "tokenizer": ("tokenizer_config.json", CLIPTokenizer),
    "scheduler": ("scheduler_config.json", DDIMScheduler),
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: `device` itself, or CUDA when available and the CPU otherwise.

    Args:
        device (`str` or `torch.device`, *optional*): `"cuda"`, `"cuda:1"`, `"cpu"`, `"mps"`, or `None`/`"auto"`.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ZeroshotError(f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ZeroshotError(f"Device {device!r} was asked for but this PyTorch sees no CUDA GPU; use --device cpu.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weight dtype: `dtype` itself, or float16 on CUDA and float32 elsewhere.

    Args:
        dtype (`str` or `torch.dtype`, *optional*):
            `"fp32"`, `"fp16"`, `"bf16"` (or their long names), a `torch.dtype`, or `None`/`"auto"`.
        device (`torch.device`): where the models will run.
    """
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype in _DTYPES:
        resolved = _DTYPES[dtype]
    else:
        raise ZeroshotError(f"Unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)} or 'auto'.")
    if resolved == torch.float16 and device.type == "cpu":
        raise ZeroshotError("float16 is not supported on the CPU; use --dtype fp32 (the default there) or bf16.")
    return resolved


def _looks_like_path(reference: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else, or anything that exists on disk, is a local path."""
    if Path(reference).expanduser().exists():
        return True
    return reference.startswith(("/", ".", "~")) or "\\" in reference or reference.count("/") > 1


@dataclass(frozen=True)
class _Role:
    """What a model is to the user: its name in messages, the CLI option that sets it, and what to download."""

    what: str
    option: str
    download_patterns: str

    def download_command(self, reference: str) -> str:
        return f"hf download {reference} --include {self.download_patterns}"


_BASE_ROLE = _Role(
    "base model",
    "--model",
    '"*.json" "*.txt" "*/diffusion_pytorch_model.safetensors" "text_encoder/model.safetensors"',
)
_CONTROLNET_ROLE = _Role("ControlNet", "--controlnet", '"config.json" "diffusion_pytorch_model.safetensors"')

# Failures of diffusers' and transformers' loaders that mean "these files are not (all) there or not valid".
_LOAD_ERRORS = (OSError, ValueError, RuntimeError)


def _check_local_folder(folder: Path, role: _Role, required: list[str]) -> None:
    if not folder.is_dir():
        raise ZeroshotError(
            f"The {role.what} folder {str(folder)!r} does not exist. Pass {role.option} with a diffusers-format "
            f"folder, or a hub id."
        )
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise ZeroshotError(
            f"{str(folder)!r} is not a diffusers-format {role.what} folder: {', '.join(missing)} missing. Pass the "
            f"folder that `save_pretrained` wrote or `hf download` fetched ({role.option} PATH)."
        )


def _probe_hub(reference: str, role: _Role) -> None:
    """Asks the hub about `reference` once, quickly, so an unreachable hub fails in seconds rather than retrying."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(reference, timeout=10)
    except GatedRepoError as error:
        raise ZeroshotError(
            f"The {role.what} {reference!r} is gated on the hub: accept its licence on its page, log in with "
            f"`hf auth login`, then run again (or pass a local folder with {role.option} PATH)."
        ) from error
    except RepositoryNotFoundError as error:
        raise ZeroshotError(
            f"The {role.what} {reference!r} was not found on the hub (nor is it a local folder). Check the id, or "
            f"pass a local diffusers-format folder with {role.option} PATH."
        ) from error
    except Exception as error:  # every transport failure means the same to the user
        raise ZeroshotError(
            f"The {role.what} {reference!r} is not in the local cache and the hub cannot be reached ({error}). On a "
            f"machine with internet run `{role.download_command(reference)}`, or pass a local folder with "
            f"{role.option} PATH."
        ) from error


def _load_part(loader_cls: type, source: str, subfolder: str | None, dtype: torch.dtype, local_only: bool) -> object:
    kwargs = {"subfolder": subfolder, "local_files_only": local_only}
    with warnings.catch_warnings():
        # diffusers passes huggingface_hub an argument it deprecated; the warning means nothing to our users.
        warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")
        if loader_cls is DDIMScheduler:
            return DDIMScheduler.from_config(DDIMScheduler.load_config(source, **kwargs))
        if issubclass(loader_cls, torch.nn.Module):
            kwargs["torch_dtype"] = dtype
        return loader_cls.from_pretrained(source, **kwargs)


def _load_model(
    reference: str, parts: dict[str, tuple[str, type]], role: _Role, dtype: torch.dtype, offline: bool
) -> dict[str, object]:
    """Loads each part of one model (hub id or folder): from the folder, else the cache, else the hub."""
    folder = Path(reference).expanduser() if _looks_like_path(reference) else None
    if folder is not None:
        _check_local_folder(folder, role, [f"{sub}/{marker}" if sub else marker for sub, (marker, _) in parts.items()])
    hub_checked = False
    loaded: dict[str, object] = {}
    for subfolder, (_, loader_cls) in parts.items():
        name = subfolder or "weights"
        try:
            loaded[subfolder] = _load_part(loader_cls, str(folder or reference), subfolder or None, dtype, True)
            continue
        except _LOAD_ERRORS as error:
            if folder is not None:
                raise ZeroshotError(f"Could not load the {role.what} {name} from {str(folder)!r}: {error}") from error
            if offline:
                raise ZeroshotError(
                    f"The {role.what} {reference!r} is not in the local Hugging Face cache and offline mode is on. "
                    f"Download it first with `{role.download_command(reference)}`, or pass a local folder with "
                    f"{role.option} PATH."
                ) from error
        if not hub_checked:
            _probe_hub(reference, role)
            hub_checked = True
        try:
            loaded[subfolder] = _load_part(loader_cls, reference, subfolder or None, dtype, False)
        except _LOAD_ERRORS as error:
            raise ZeroshotError(
                f"Could not fetch the {role.what} {reference!r} ({name}) from the hub: {error}. Try "
                f"`{role.download_command(reference)}`, or pass a local folder with {role.option} PATH."
            ) from error
    return loaded


def load_components(
    model: str = DEFAULT_MODEL,
    controlnet: str | None = DEFAULT_CONTROLNET,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offline: bool = False,
    unet_in_channels: int | None = 4,
) -> ModelComponents:
    """Loads a Stable Diffusion 1.5-style base model and, optionally, a ControlNet.

    Each model is looked up in this order: a local folder (when `model` is a path), the local Hugging Face cache, and
    then, unless `offline`, the hub. The scheduler is always a `DDIMScheduler` built from the model's scheduler config.

    Args:
        model (`str`, *optional*, defaults to `DEFAULT_MODEL`):
            hub id or local diffusers-format folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`).
        controlnet (`str`, *optional*, defaults to `DEFAULT_CONTROLNET`):
            hub id or local folder of a ControlNet, or `None` to load none.
        device (`str` or `torch.device`, *optional*):
            where to put the models; by default CUDA when available, else the CPU.
        dtype (`str` or `torch.dtype`, *optional*):
            weight dtype; by default float16 on CUDA and float32 elsewhere; `"bf16"` on request.
        offline (`bool`, *optional*, defaults to `False`):
            never touch the network: models must be local folders or already in the cache.
        unet_in_channels (`int`, *optional*, defaults to 4):
            input channels the job needs the UNet to take (4 for Stable Diffusion, 12 for a Qffusion checkpoint);
            `None` skips the check.

    Returns:
        [`~zeroshot.components.ModelComponents`]: the models, on `device`, in evaluation mode.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: a folder is missing or has the wrong layout, a model is not cached while
        offline, the hub cannot be reached, or the UNet's input width is not `unet_in_channels`.

    Example:

    ```py
    >>> from zeroshot.loading import load_components
    >>> components = load_components(offline=True)  # after `hf download` of both models
    ```
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    base = _load_model(model, _BASE_MODEL_PARTS, _BASE_ROLE, resolved_dtype, offline)
    unet = base["unet"]
    if unet_in_channels is not None and unet.config.in_channels != unet_in_channels:
        expected = "a Stable Diffusion 1.5 model" if unet_in_channels == 4 else "a Qffusion checkpoint"
        raise ZeroshotError(
            f"The UNet of {model!r} takes {unet.config.in_channels} input channels but this job needs "
            f"{unet_in_channels} ({expected})."
        )
    controlnet_model = None
    if controlnet is not None:
        parts = {"": ("config.json", ControlNetModel)}
        controlnet_model = _load_model(controlnet, parts, _CONTROLNET_ROLE, resolved_dtype, offline)[""]
    components = ModelComponents(
        vae=base["vae"],
        text_encoder=base["text_encoder"],
        tokenizer=base["tokenizer"],
        unet=unet,
        scheduler=base["scheduler"],
        controlnet=controlnet_model,
    )
    components.to(resolved_device)
    for module in components.models():
        module.eval()
    return components
