"""Loading Qffusion checkpoints: a model folder or one safetensors file of UNet weights, their settings (the
condition drawing's version checked), a separate VAE, and clear messages for everything else."""

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from zeroshot.errors import ZeroshotError
from zeroshot.qffusion import (
    QffusionConfig,
    QffusionPipeline,
    load_qffusion_components,
    read_qffusion_config,
    save_qffusion_model,
    save_unet_weights,
)
from zeroshot.testing import ARCHITECTURES, build_random_components


@pytest.fixture(scope="module")
def unet12():
    return build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=5).unet


def _assert_same_weights(left, right):
    right_state = right.state_dict()
    for name, value in left.state_dict().items():
        assert torch.equal(value, right_state[name]), name


def test_model_folder_round_trip(tmp_path):
    components = build_random_components("tiny", unet_in_channels=12, with_controlnet=False, seed=6)
    config = QffusionConfig(resolution=64, prompt="a person", frame_interval="2:8")
    save_qffusion_model(components, tmp_path / "model", config)
    loaded, loaded_config = load_qffusion_components(str(tmp_path / "model"), device="cpu", offline=True)
    assert loaded_config == config and loaded.controlnet is None
    assert loaded.unet.config.in_channels == 12
    _assert_same_weights(components.unet, loaded.unet)
    _assert_same_weights(components.vae, loaded.vae)
    pipe = QffusionPipeline.from_pretrained(tmp_path / "model")  # diffusers' own loader reads the folder too
    _assert_same_weights(components.unet, pipe.unet)

    # qffusion.json changed by hand, or copied from another model, is caught against the copy in the weights
    settings = tmp_path / "model" / "qffusion.json"
    changed = QffusionConfig(condition="body", resolution=64, prompt="a person", frame_interval="2:8", crop="full")
    settings.write_text(changed.to_json())
    expected = (
        r"qffusion.json' disagrees with the settings its UNet weights were saved with: condition 'body' \(the "
        r"weights: 'face'\); rendering 'openpose-v1' \(the weights: 'face-v1'\); crop 'full' \(the weights: "
        r"'subject'\)\. It was changed or copied from another model"
    )
    with pytest.raises(ZeroshotError, match=expected):
        load_qffusion_components(str(tmp_path / "model"), device="cpu", offline=True)
    settings.unlink()  # without it, the weights' copy is the checkpoint's settings
    assert read_qffusion_config(str(tmp_path / "model")) == config


def test_unet_safetensors_with_base_model(unet12, tiny_components, tiny_model_paths, tmp_path):
    """The base model gives the UNet's configuration and the other models; its own UNet weights are never read (here
    they are not even there)."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_paths.model, base)
    for weights in (base / "unet").glob("diffusion_pytorch_model*"):
        weights.unlink()
    config = QffusionConfig(condition="face", resolution=32)
    path = save_unet_weights(unet12, tmp_path / "unet.safetensors", config)
    loaded, loaded_config = load_qffusion_components(str(path), model=str(base), device="cpu")
    assert loaded_config == config and loaded.controlnet is None
    assert loaded.unet.config.in_channels == 12 and list(loaded.unet.config.block_out_channels) == [32, 64]
    _assert_same_weights(unet12, loaded.unet)
    _assert_same_weights(tiny_components.vae, loaded.vae)  # the rest comes from the base model
    _assert_same_weights(tiny_components.text_encoder, loaded.text_encoder)
    assert loaded.scheduler.config.num_train_timesteps == tiny_components.scheduler.config.num_train_timesteps


def test_saving_leaves_nothing_behind_when_it_fails(unet12, tmp_path):
    (tmp_path / "unet.safetensors").mkdir()  # the finished file cannot take the place of a folder
    (tmp_path / "unet.safetensors" / "keep").touch()
    with pytest.raises(OSError):
        save_unet_weights(unet12, tmp_path / "unet.safetensors", QffusionConfig())
    assert [path.name for path in tmp_path.iterdir()] == ["unet.safetensors"]  # no half-written file beside it


def test_checkpoint_drawn_by_another_rendering_is_refused(unet12, tiny_model_paths, tmp_path):
    assert QffusionConfig(condition="body").rendering == "openpose-v1"  # the default follows the condition kind
    old = save_unet_weights(unet12, tmp_path / "old.safetensors", QffusionConfig(rendering="face-v0"))
    expected = r"drawn by rendering 'face-v0' .* draws 'face-v1'.* fine-tune the checkpoint on 'face-v1'"
    with pytest.raises(ZeroshotError, match=expected):
        read_qffusion_config(str(old))
    with pytest.raises(ZeroshotError, match=expected):
        load_qffusion_components(str(old), model=str(tiny_model_paths.model))
    folder = tmp_path / "body"
    folder.mkdir()
    (folder / "qffusion.json").write_text(json.dumps({"condition": "body", "rendering": "face-v1"}))
    with pytest.raises(ZeroshotError, match=r"body conditions drawn by rendering 'face-v1'.* draws 'openpose-v1'"):
        read_qffusion_config(str(folder))
    (folder / "qffusion.json").write_text(json.dumps({"condition": "body", "resolution": 64}))
    assert read_qffusion_config(str(folder)) == QffusionConfig(
        condition="body", rendering="openpose-v1", resolution=64
    )


def test_checkpoint_without_settings_gets_the_defaults(unet12, tiny_model_paths, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in unet12.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    _, config = load_qffusion_components(str(tmp_path / "bare.safetensors"), model=str(tiny_model_paths.model))
    assert config == QffusionConfig()


def test_separate_vae_folder_or_file(unet12, tiny_model_paths, tmp_path):
    path = save_unet_weights(unet12, tmp_path / "unet.safetensors", QffusionConfig())
    torch.manual_seed(11)
    other = AutoencoderKL(**ARCHITECTURES["tiny"]["vae"])
    other.save_pretrained(tmp_path / "vae")
    for reference in (tmp_path / "vae", tmp_path / "vae" / "diffusion_pytorch_model.safetensors"):
        loaded, _ = load_qffusion_components(str(path), model=str(tiny_model_paths.model), vae=str(reference))
        _assert_same_weights(other, loaded.vae)
    with pytest.raises(ZeroshotError, match=r"VAE .* does not exist"):
        load_qffusion_components(str(path), model=str(tiny_model_paths.model), vae=str(tmp_path / "none"))


def test_wrong_checkpoints_are_explained(tiny_components, tiny_model_paths, unet12, tmp_path):
    base = str(tiny_model_paths.model)
    with pytest.raises(ZeroshotError, match=r"takes 4 input channels: it is a plain Stable Diffusion UNet.*takes 12"):
        load_qffusion_components(base, device="cpu")
    four = save_unet_weights(tiny_components.unet, tmp_path / "sd.safetensors", QffusionConfig())
    with pytest.raises(ZeroshotError, match=r"takes 4 input channels: it is a plain Stable Diffusion UNet"):
        load_qffusion_components(str(four), model=base)
    with pytest.raises(ZeroshotError, match="does not exist"):
        load_qffusion_components(str(tmp_path / "missing"), model=base)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ZeroshotError, match=r"must be a diffusers model folder or a \.safetensors file"):
        load_qffusion_components(str(tmp_path / "weights.bin"), model=base)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ZeroshotError, match="not a readable safetensors file"):
        load_qffusion_components(str(tmp_path / "broken.safetensors"), model=base)
    vae_only = save_unet_weights(tiny_components.vae, tmp_path / "vae.safetensors", QffusionConfig())
    with pytest.raises(ZeroshotError, match=r"holds no `conv_in\.weight`: it is not a diffusers-format UNet"):
        load_qffusion_components(str(vae_only), model=base)
    truncated = {k: v for k, v in unet12.state_dict().items() if not k.startswith("up_blocks.1")}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in truncated.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ZeroshotError, match=r"do not fit the UNet of the base model .*missing: up_blocks\.1"):
        load_qffusion_components(str(tmp_path / "partial.safetensors"), model=base)
    folder = save_qffusion_model(
        build_random_components("tiny", unet_in_channels=12, with_controlnet=False), tmp_path / "m", QffusionConfig()
    )
    (folder / "qffusion.json").write_text(json.dumps({"condition": "hands"}))
    with pytest.raises(ZeroshotError, match="names condition 'hands'"):
        load_qffusion_components(str(folder))
