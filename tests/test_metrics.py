"""Metrics against independent references: scikit-image's SSIM, float64 formulas, and known motions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from zeroshot.errors import ZeroshotError
from zeroshot.metrics import LPIPS, ClipImageEmbedder, clip_scores, pose_adherence, psnr, ssim, warping_error
from zeroshot.testing import astronaut


@pytest.fixture(scope="module")
def photo():
    return astronaut()[::4, ::4].copy()  # 128x128 real photo


def test_psnr_matches_its_definition(photo):
    noise = np.random.default_rng(0).integers(-9, 10, photo.shape)
    noisy = np.clip(photo.astype(int) + noise, 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(np.float64) - photo) ** 2)
    assert psnr(noisy, photo) == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-12)
    assert psnr(photo, photo) == float("inf")


def test_ssim_equals_scikit_image(photo):
    rng = np.random.default_rng(1)
    distorted = np.clip(photo * 0.8 + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    reference = structural_similarity(distorted, photo, channel_axis=-1, **options)
    assert ssim(distorted, photo) == pytest.approx(reference, abs=1e-6)
    assert ssim(photo, photo) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(photo, photo[:-1])


def test_warping_error_sees_through_motion_but_not_flicker(photo):
    still = np.stack([photo] * 3)
    moving = np.stack([np.roll(photo, shift, axis=1) for shift in (0, 2, 4)])
    flicker = still.copy()
    flicker[1] = np.clip(flicker[1].astype(int) + 60, 0, 255)  # a flash: no motion explains it
    assert warping_error(still) < 1e-6
    # a pure translation is explained by the flow: far below the plain frame difference
    plain_difference = np.mean((moving[1:].astype(float) - moving[:-1]) ** 2) / 255**2
    assert warping_error(moving) < 0.1 * plain_difference
    assert warping_error(flicker) > 50 * warping_error(moving)
    cut = still.copy()
    cut[1] = 255 - cut[1]  # unrelated content: no pixel passes the consistency check, all count
    assert warping_error(cut) > warping_error(flicker)


def test_pose_adherence_measures_offsets_in_pose_size():
    target = np.zeros((2, 18, 3))
    target[:, :, 0] = np.linspace(0.2, 0.6, 18)  # 0.4 wide
    target[:, :, 1] = np.linspace(0.1, 0.9, 18)  # 0.8 tall: size 0.8
    target[:, :, 2] = 1.0
    target[1, 5:, 2] = 0.0  # joints the target does not have are not counted
    exact = pose_adherence(target, target)
    assert exact == {"pck": 1.0, "keypoint_error": 0.0, "detected_fraction": 1.0, "joints": 18 + 5}
    shifted = target.copy()
    shifted[:, :, 0] += 0.04  # 0.05 of the size of frame 0; frame 1's counted joints span 0.8 * 4/17 tall
    result = pose_adherence(shifted, target, alpha=0.06)
    size_1 = 0.8 * 4 / 17
    expected_error = (18 * 0.05 + 5 * 0.04 / size_1) / 23
    assert result["keypoint_error"] == pytest.approx(expected_error)
    assert result["pck"] == pytest.approx(18 / 23)
    missed = target.copy()
    missed[0, :9, 2] = 0.0
    assert pose_adherence(missed, target)["detected_fraction"] == pytest.approx(14 / 23)
    with pytest.raises(ZeroshotError, match="no frame with two or more confident joints"):
        pose_adherence(target, np.zeros_like(target))


def _random_lpips_files(tmp_path):
    generator = torch.Generator().manual_seed(0)
    from zeroshot.metrics import _alexnet_features

    trunk = _alexnet_features()
    trunk_state = {
        f"features.{k}": torch.randn(v.shape, generator=generator) * 0.05 for k, v in trunk.state_dict().items()
    }
    trunk_state["classifier.1.weight"] = torch.zeros(2, 2)  # other AlexNet keys are ignored
    widths = (64, 192, 384, 256, 256)
    head_state = {f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1, generator=generator) for i, w in enumerate(widths)}
    torch.save(trunk_state, tmp_path / "alexnet.pth")
    torch.save(head_state, tmp_path / "alex.pth")
    return trunk_state, head_state


def _lpips_reference(image, reference, trunk_state, head_state):
    """LPIPS written out layer by layer in float64."""

    def prepare(array):
        x = torch.from_numpy(array).double().permute(2, 0, 1)[None] / 127.5 - 1
        shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
        return (x - shift) / scale

    def features(x):
        w = {k: v.double() for k, v in trunk_state.items()}
        out = []
        x = F.relu(F.conv2d(x, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        out.append(x)
        x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), w["features.3.weight"], w["features.3.bias"], padding=2))
        out.append(x)
        x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), w["features.6.weight"], w["features.6.bias"], padding=1))
        out.append(x)
        x = F.relu(F.conv2d(x, w["features.8.weight"], w["features.8.bias"], padding=1))
        out.append(x)
        x = F.relu(F.conv2d(x, w["features.10.weight"], w["features.10.bias"], padding=1))
        out.append(x)
        return out

    total = 0.0
    for i, (a, b) in enumerate(zip(features(prepare(image)), features(prepare(reference)), strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weight = head_state[f"lin{i}.model.1.weight"].double().view(1, -1, 1, 1)
        total += float(((a - b) ** 2 * weight).sum(1).mean())
    return total


def test_lpips_matches_a_float64_reference(tmp_path, photo):
    trunk_state, head_state = _random_lpips_files(tmp_path)
    lpips = LPIPS(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
    other = np.roll(photo, 7, axis=0)
    distances = lpips(np.stack([photo, other]), photo)
    assert distances[0] == pytest.approx(0.0, abs=1e-7)
    assert distances[1] == pytest.approx(_lpips_reference(other, photo, trunk_state, head_state), rel=1e-4)


def test_lpips_weight_errors(tmp_path):
    with pytest.raises(ZeroshotError, match=r"LPIPS AlexNet weights .*missing.pth.* do not exist"):
        LPIPS(tmp_path / "missing.pth", tmp_path / "alex.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    _random_lpips_files(tmp_path)
    with pytest.raises(ZeroshotError, match=r"is not a PyTorch state dict"):
        LPIPS(tmp_path / "junk.pth", tmp_path / "alex.pth")


def test_clip_scores_with_a_local_random_clip(tmp_path, photo):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=64,
        patch_size=16, projection_dim=16,
    )  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    embedder = ClipImageEmbedder(tmp_path / "clip")
    same = clip_scores(embedder, np.stack([photo, photo]), photo)
    assert same["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert same["frame_consistency"] == pytest.approx(1.0, abs=1e-5)
    changed = clip_scores(embedder, np.stack([photo, 255 - photo]), photo)
    assert changed["clip_i"] < 1 - 1e-3 and changed["frame_consistency"] < 1 - 1e-3
    with pytest.raises(ZeroshotError, match=r"has no config\.json"):
        ClipImageEmbedder(tmp_path)
