"""Quality metrics of a generated animation, as PoseAnimate reports them, plus pose adherence.

Offline metrics (always available): PSNR and SSIM of frame 0 against the source, warping error with OpenCV's DIS
optical flow, and pose adherence (PCK and normalised keypoint error of poses re-detected in the frames). Metrics that
need pretrained weights take local paths: LPIPS (an AlexNet checkpoint in torchvision's layout plus the LPIPS linear
heads) and CLIP-I / frame consistency (a CLIP model folder in transformers' format).

Images are `uint8` RGB arrays `[height, width, 3]` (frames: `[frames, height, width, 3]`).
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import ZeroshotError

# ---- pixel metrics -------------------------------------------------------------------------------------------------


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two `uint8` images of the same size (`inf` when identical)."""
    _check_same_shape(image, reference)
    mse = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two `uint8` RGB images: Gaussian window of 11 pixels and sigma
    1.5, K1 = 0.01, K2 = 0.03, computed per channel over the valid region and averaged."""
    _check_same_shape(image, reference)
    x, y = (torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None] for a in (image, reference))
    coords = torch.arange(11, dtype=torch.float64) - 5
    gauss = torch.exp(-(coords**2) / (2 * 1.5**2))
    gauss /= gauss.sum()
    window = (gauss[:, None] * gauss[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def _check_same_shape(image: np.ndarray, reference: np.ndarray) -> None:
    if image.shape != reference.shape:
        raise ValueError(f"Images differ in shape: {image.shape} vs {reference.shape}.")


# ---- temporal consistency ------------------------------------------------------------------------------------------


def _dis_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow from `source` to `target` (both RGB uint8): `source(p) ~ target(p + flow(p))`."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in (source, target)]
    return dis.calc(gray[0], gray[1], None)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Samples `image` at `p + flow(p)` (bilinear)."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)


def warping_error(frames: np.ndarray, occlusion_threshold: float = 1.0) -> float:
    """Mean squared difference between each frame and its predecessor warped onto it by optical flow (RGB in [0, 1]),
    over pixels that pass a forward-backward flow consistency check (Lai et al. 2018); averaged over frame pairs.
    A pair with no consistent pixel (no motion explains it: a cut, a flash) counts all its pixels.

    Args:
        frames (`np.ndarray`): `uint8` RGB frames `[frames, height, width, 3]`, at least two.
        occlusion_threshold (`float`, *optional*, defaults to 1.0): pixels whose forward-backward flow disagrees by
            more than this many pixels count as occluded and are left out.
    """
    if len(frames) < 2:
        raise ValueError("The warping error needs at least two frames.")
    errors = []
    for previous, current in itertools.pairwise(frames):
        backward = _dis_flow(current, previous)  # current(p) ~ previous(p + backward(p))
        forward = _dis_flow(previous, current)
        round_trip = backward + _warp(forward, backward)
        visible = np.linalg.norm(round_trip, axis=-1) <= occlusion_threshold
        warped = _warp(previous, backward).astype(np.float64) / 255
        squared = ((warped - current.astype(np.float64) / 255) ** 2).mean(axis=-1)
        # No consistent pixel at all: the frames are not related by motion, so every pixel counts.
        errors.append(float(squared[visible].mean() if visible.any() else squared.mean()))
    return float(np.mean(errors))


# ---- pose adherence ------------------------------------------------------------------------------------------------


def pose_adherence(
    detected: np.ndarray, target: np.ndarray, *, alpha: float = 0.1, min_confidence: float = 0.3
) -> dict[str, float]:
    """How well re-detected poses follow the target poses.

    Both arrays are `[frames, joints, 3]` of (x, y, confidence) in one coordinate frame. A target joint counts when its
    confidence is at least `min_confidence`; its error is the distance to the detected joint divided by the size of
    the target pose (the longer side of the box around its counted joints). A joint the detector missed has error
    infinity (a miss for PCK).

    Returns:
        `dict`: `pck` (fraction of counted joints within `alpha` of the target size), `keypoint_error` (mean
        normalised error over counted joints that were detected), `detected_fraction` (fraction of counted joints
        detected), `joints` (number of counted joints).
    """
    if detected.shape != target.shape:
        raise ValueError(f"Pose arrays differ in shape: {detected.shape} vs {target.shape}.")
    hits, errors, found, counted = 0, [], 0, 0
    for detected_frame, target_frame in zip(detected, target, strict=True):
        visible = target_frame[:, 2] >= min_confidence
        if visible.sum() < 2:
            continue
        points = target_frame[visible, :2]
        size = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1])))
        if size <= 0:
            continue
        present = detected_frame[visible, 2] >= min_confidence
        distance = np.linalg.norm(detected_frame[visible, :2] - points, axis=-1) / size
        counted += int(visible.sum())
        found += int(present.sum())
        hits += int((present & (distance <= alpha)).sum())
        errors.extend(distance[present].tolist())
    if counted == 0:
        raise ZeroshotError("The target poses have no frame with two or more confident joints to compare against.")
    return {
        "pck": hits / counted,
        "keypoint_error": float(np.mean(errors)) if errors else float("inf"),
        "detected_fraction": found / counted,
        "joints": counted,
    }


# ---- metrics with pretrained weights -------------------------------------------------------------------------------

# LPIPS input scaling for inputs in [-1, 1] (Zhang et al. 2018).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# Layers of torchvision's AlexNet `features` after which LPIPS reads activations (the five ReLUs).
_ALEXNET_TAPS = (1, 4, 7, 9, 11)


def _alexnet_features() -> torch.nn.Sequential:
    """AlexNet's convolutional trunk with torchvision's layer indices, so its checkpoints load by key."""
    relu = torch.nn.ReLU
    pool = torch.nn.MaxPool2d
    conv = torch.nn.Conv2d
    return torch.nn.Sequential(
        conv(3, 64, 11, stride=4, padding=2), relu(), pool(3, 2),
        conv(64, 192, 5, padding=2), relu(), pool(3, 2),
        conv(192, 384, 3, padding=1), relu(),
        conv(384, 256, 3, padding=1), relu(),
        conv(256, 256, 3, padding=1), relu(),
    )  # fmt: skip


def default_lpips_linear_weights() -> Path | None:
    """The LPIPS v0.1 AlexNet linear heads shipped inside the `lpips` package, if it is installed (not imported)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


class LPIPS:
    """Learned perceptual image patch similarity with the AlexNet backbone (lower is more similar).

    Args:
        alexnet_weights (`str` or `Path`): torchvision's AlexNet checkpoint (`alexnet-owt-7be5be79.pth`), read with
            `torch.load(weights_only=True)`; keys `features.N.weight` / `features.N.bias`.
        linear_weights (`str` or `Path`, *optional*): the LPIPS linear heads (`lin0.model.1.weight` ...
            `lin4.model.1.weight`); by default those inside the `lpips` package when it is installed.
        device (`torch.device` or `str`, *optional*, defaults to `"cpu"`).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: a weight file is missing or does not hold what LPIPS needs.
    """

    def __init__(
        self,
        alexnet_weights: str | Path,
        linear_weights: str | Path | None = None,
        device: torch.device | str = "cpu",
    ):
        trunk_state = _load_state(alexnet_weights, "LPIPS AlexNet")  # first: a bad file is the user's to fix
        linear_weights = linear_weights or default_lpips_linear_weights()
        if linear_weights is None:
            raise ZeroshotError(
                "LPIPS needs its linear heads: pip install --no-deps lpips (the weights ship inside it), or pass "
                "--lpips-linear PATH to a v0.1 alex.pth."
            )
        head_state = _load_state(linear_weights, "LPIPS linear heads")
        self.trunk = _alexnet_features()
        try:
            trunk_keys = {k.removeprefix("features."): v for k, v in trunk_state.items() if k.startswith("features.")}
            self.trunk.load_state_dict(trunk_keys)
            self.heads = [head_state[f"lin{index}.model.1.weight"].float() for index in range(len(_ALEXNET_TAPS))]
        except (RuntimeError, KeyError) as error:
            raise ZeroshotError(f"The LPIPS weights do not fit AlexNet-LPIPS: {error}") from error
        self.device = torch.device(device)
        self.trunk.to(self.device).eval()
        self.heads = [head.to(self.device) for head in self.heads]
        self.shift = torch.tensor(_LPIPS_SHIFT, device=self.device).view(1, 3, 1, 1)
        self.scale = torch.tensor(_LPIPS_SCALE, device=self.device).view(1, 3, 1, 1)

    def _activations(self, images: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        x = (x - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.trunk):
            x = layer(x)
            if index in _ALEXNET_TAPS:
                taps.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return taps

    @torch.no_grad()
    def __call__(self, images: np.ndarray, references: np.ndarray) -> np.ndarray:
        """LPIPS distance of each image `[frames, height, width, 3]` to its reference (same shape, or one image)."""
        references = references if references.ndim == 4 else references[None]  # one reference: computed once
        distance = torch.zeros(len(images), device=self.device)
        for a, b, head in zip(self._activations(images), self._activations(references), self.heads, strict=True):
            distance += F.conv2d((a - b) ** 2, head).mean(dim=(1, 2, 3))  # b broadcasts over the frames
        return distance.cpu().numpy()


def _load_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ZeroshotError(f"{what} weights {str(path)!r} do not exist; pass the path of the downloaded file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure means the file is not a plain state dict
        raise ZeroshotError(f"{str(path)!r} is not a PyTorch state dict ({what}): {error}") from error


# CLIP's image normalisation (Radford et al. 2021).
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageEmbedder:
    """CLIP image embeddings from a local transformers model folder (e.g. a downloaded `openai/clip-vit-base-patch32`).

    Images are resized (bicubic) so the short side equals the model's input size, centre-cropped, and normalised
    with CLIP's mean and standard deviation.

    Args:
        model_path (`str` or `Path`): folder with a CLIP model (`CLIPModel` or `CLIPVisionModelWithProjection`).
        device (`torch.device` or `str`, *optional*, defaults to `"cpu"`).
    """

    def __init__(self, model_path: str | Path, device: torch.device | str = "cpu"):
        from transformers import CLIPVisionModelWithProjection

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise ZeroshotError(
                f"CLIP model folder {str(path)!r} has no config.json; download one with "
                f"`hf download openai/clip-vit-base-patch32` and pass its folder with --clip PATH."
            )
        self.device = torch.device(device)
        self.model = CLIPVisionModelWithProjection.from_pretrained(path).to(self.device).eval()
        self.size = self.model.config.image_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """Unit-norm embeddings `[frames, dim]` of `uint8` RGB images `[frames, height, width, 3]`."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        height, width = x.shape[-2:]
        scale = self.size / min(height, width)
        x = F.interpolate(x, size=(round(height * scale), round(width * scale)), mode="bicubic", align_corners=False)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        mean = torch.tensor(_CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(_CLIP_STD, device=self.device).view(1, 3, 1, 1)
        embeds = self.model(pixel_values=(x - mean) / std).image_embeds
        return F.normalize(embeds.float(), dim=-1)


def clip_scores(embedder: ClipImageEmbedder, frames: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """CLIP-I (mean cosine similarity of each frame to the source) and frame consistency (mean cosine similarity of
    consecutive frames)."""
    frame_embeds = embedder(frames)
    source_embed = embedder(source[None])
    result = {"clip_i": float((frame_embeds @ source_embed.T).mean())}
    if len(frames) > 1:
        result["frame_consistency"] = float((frame_embeds[1:] * frame_embeds[:-1]).sum(-1).mean())
    return result
