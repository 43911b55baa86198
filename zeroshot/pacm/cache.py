"""The PACM disk cache: one safetensors file per stage result and per target frame, keyed by what produced it.

Layout of a cache directory (keys are 32 hex digits of a SHA-256):

```
<cache_dir>/
    ddim_inversion-<key>.safetensors   latents [T+1, 4, h, w] (Z_0..Z_T), timesteps [T]
    source-<key>.safetensors           embeddings [T, L, D], fixed_embedding [L, D], offsets [T, 4, h, w] (direct)
    frames-<key>.safetensors           one per target frame: embeddings [T, L, D] (paper) or offsets
                                       [T, 4, h, w] (direct), attention_maps [T, h, w] (when a subject is given)
```

Keys chain: the inversion key hashes the source latent and the prompt embedding (or, better, the caller's
`cache_identity` of the image and prompts they came from, see [`input_identity`]), the source pose, the model
fingerprint and the inversion settings; the source key adds the negative-prompt embedding (covered by the identity
when given) and the stage-2 settings; each frame's key adds that frame's pose image, the subject's token positions
and the frame settings. So a second animation of the same image skips stages 1 and 2, a longer pose sequence reuses
the frames it shares, and a changed setting recomputes only the stages it affects. Files are written under a
temporary name and renamed into place once complete, and every file carries its own key in its metadata: a
half-written, truncated or foreign file is never read as valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open

from ..atomic import staged_file
from ..components import ModelComponents
from ..errors import ZeroshotError

logger = logging.getLogger(__name__)

#: Changes whenever what a cache file holds or how it is computed changes, so old files are ignored.
CACHE_FORMAT = "zeroshot-pacm-2"


class _Hasher:
    """SHA-256 over tagged values: strings, JSON-able settings and tensors (dtype, shape and bytes)."""

    def __init__(self, tag: str):
        self._sha = hashlib.sha256(CACHE_FORMAT.encode())
        self.add(tag)

    def add(self, value: str | dict | list | tuple | int | float | torch.Tensor) -> _Hasher:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            self._sha.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
            self._sha.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            self._sha.update(f"{type(value).__name__}:{json.dumps(value, sort_keys=True)};".encode())
        return self

    def hexdigest(self) -> str:
        return self._sha.hexdigest()[:32]


def _config(config: dict) -> str:
    """A config as JSON, without diffusers' bookkeeping keys (`_name_or_path`, `_diffusers_version`, ...)."""
    return json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True, default=str)


#: Weight values read per parameter tensor by [`model_fingerprint`] (evenly spaced through the tensor).
FINGERPRINT_SAMPLES = 4096


def model_fingerprint(components: ModelComponents) -> str:
    """A fingerprint of the UNet, ControlNet and scheduler: configs, weight dtype, and the exact bytes of up to
    `FINGERPRINT_SAMPLES` evenly spaced values of every weight tensor.

    It identifies the model by content: the same weights loaded from another folder share the cache, while two models
    with different weights (two random test models, a fine-tuned copy) never do in practice. It involves no
    arithmetic, so it is the same on every device and thread count (sums of weights would not be: the order of a
    parallel sum changes its last bits).
    """
    hasher = _Hasher("model")
    hasher.add(_config(components.scheduler.config))
    hasher.add(weights_fingerprint(components.unet, components.controlnet))
    return hasher.hexdigest()


def weights_fingerprint(*models: torch.nn.Module) -> str:
    """A fingerprint of models by content: each one's config (when it has one), weight dtype, and the exact bytes of
    up to `FINGERPRINT_SAMPLES` evenly spaced values of every weight tensor (see [`model_fingerprint`])."""
    hasher = _Hasher("weights")
    for model in models:
        config = getattr(model, "config", None)
        hasher.add(_config(config.to_dict() if hasattr(config, "to_dict") else dict(config or {})))
        with torch.no_grad():
            for parameter in model.parameters():
                flat = parameter.detach().reshape(-1)
                count = min(flat.numel(), FINGERPRINT_SAMPLES)
                # Integer positions: float32 ones (linspace) round past the end of tensors over 2**24 values, such
                # as Stable Diffusion's token embedding (49408 x 768).
                picks = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
                hasher.add(flat[picks])
    return hasher.hexdigest()


def input_identity(image: torch.Tensor, prompt: str, negative_prompt: str, encoders: str) -> str:
    """A digest of the raw inputs that produce PACM's source latent and prompt embeddings, for `run_pacm`'s
    `cache_identity`.

    Keys made from the encoders' float outputs would change with the device and thread count (the last bits of a
    convolution vary with them); keys made from the image's pixels and the prompt's text do not.

    Args:
        image (`torch.Tensor`): the source image as it was encoded (`uint8`, or exactly what was given to the VAE).
        prompt (`str`): the prompt.
        negative_prompt (`str`): the negative (unconditional) prompt.
        encoders (`str`): what identifies the VAE and text encoder, e.g. their [`weights_fingerprint`].
    """
    return cache_key("inputs", [image, prompt, negative_prompt, encoders])


def cache_key(tag: str, parts: Iterable[str | dict | list | tuple | int | float | torch.Tensor]) -> str:
    """The key of a cache entry: a hash of `tag` and every part in order."""
    hasher = _Hasher(tag)
    for part in parts:
        hasher.add(part)
    return hasher.hexdigest()


class PACMCache:
    """Reads and atomically writes PACM results in `directory`; with `directory=None`, caches nothing.

    Args:
        directory (`str` or `Path`, *optional*): where the files go (created on first write).
    """

    def __init__(self, directory: str | os.PathLike | None):
        self.directory = Path(directory) if directory is not None else None

    @property
    def enabled(self) -> bool:
        """Whether results are stored."""
        return self.directory is not None

    def path(self, kind: str, key: str) -> Path | None:
        """The file of entry `kind`-`key`, or `None` when caching is off."""
        return None if self.directory is None else self.directory / f"{kind}-{key}.safetensors"

    def load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors of entry `kind`-`key` on the CPU, or `None` when absent or not valid (logged)."""
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                if metadata.get("format") != CACHE_FORMAT or metadata.get("key") != key:
                    raise ValueError(f"its metadata names {metadata.get('format')}/{metadata.get('key')}")
                return {name: file.get_tensor(name) for name in file.keys()}
        except Exception as error:
            logger.warning("Ignoring the unreadable PACM cache file %s (%s); it will be recomputed.", path, error)
            return None

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], description: dict) -> None:
        """Writes entry `kind`-`key` atomically: to a temporary file beside it, renamed into place once complete.

        Args:
            kind (`str`): the stage, e.g. `"source"`.
            key (`str`): the entry's key.
            tensors (`dict[str, torch.Tensor]`): what to store (moved to the CPU).
            description (`dict`): JSON-able facts kept in the metadata for people reading the cache (settings).
        """
        path = self.path(kind, key)
        if path is None:
            return
        metadata = {"format": CACHE_FORMAT, "key": key, "kind": kind, "description": json.dumps(description)}
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(path) as staging:
                safetensors.torch.save_file(tensors, str(staging), metadata)
        except OSError as error:
            raise ZeroshotError(
                f"Cannot write the PACM cache in {path.parent} ({error}); free some space or pass another --cache-dir."
            ) from error
