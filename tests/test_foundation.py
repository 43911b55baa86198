"""The foundation: tiny models round-trip through the real loader, the loader's errors, and imports stay light."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from zeroshot.errors import ZeroshotError
from zeroshot.loading import load_components, resolve_dtype
from zeroshot.testing import TINY_VOCABULARY_WORDS, build_random_components, build_tokenizer


def _inputs(components, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    ids = components.tokenizer(["a photo of an astronaut", ""], padding="max_length", return_tensors="pt").input_ids
    pose = torch.rand(2, 3, 64, 64, generator=generator)
    return latents, ids, pose


@torch.no_grad()
def _outputs(components):
    latents, ids, pose = _inputs(components)
    text = components.text_encoder(ids)[0]
    down, mid = components.controlnet(latents, 500, text, controlnet_cond=pose, return_dict=False)
    residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    noise = components.unet(latents, 500, text, **residuals)
    image = components.vae.decode(latents).sample
    return {"text": text, "unet": noise.sample, "mid": mid, "vae": image}


def test_saved_tiny_models_load_through_the_loader_with_identical_outputs(tiny_components, tiny_model_paths):
    loaded = load_components(str(tiny_model_paths.model), str(tiny_model_paths.controlnet), device="cpu", offline=True)
    expected, actual = _outputs(tiny_components), _outputs(loaded)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert loaded.scheduler.config.num_train_timesteps == 1000
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert loaded.vae.config.block_out_channels and 2 ** (len(loaded.vae.config.block_out_channels) - 1) == 8


def test_tiny_pipeline_folder_loads_in_diffusers_own_pipeline(tiny_model_paths):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    controlnet = ControlNetModel.from_pretrained(tiny_model_paths.controlnet)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(tiny_model_paths.model, controlnet=controlnet)
    image = pipe(
        "a photo",
        image=torch.rand(1, 3, 64, 64),
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_random_weights_are_a_function_of_the_seed():
    first, again, other = (build_random_components("tiny", seed=s) for s in (3, 3, 4))
    torch.testing.assert_close(_outputs(first)["unet"], _outputs(again)["unet"], rtol=0, atol=0)
    assert not torch.allclose(_outputs(first)["unet"], _outputs(other)["unet"])


def test_twelve_channel_unet_and_zero_controlnet():
    components = build_random_components("tiny", unet_in_channels=12, controlnet_std=0.0)
    assert components.unet.config.in_channels == 12 and components.unet.conv_in.in_channels == 12
    assert components.controlnet.config.in_channels == 4
    latents, ids, pose = _inputs(components)
    with torch.no_grad():
        text = components.text_encoder(ids)[0]
        down, mid = components.controlnet(latents, 10, text, controlnet_cond=pose, return_dict=False)
    assert all(residual.abs().max() == 0 for residual in [*down, mid])


@pytest.mark.parametrize(
    "text", ["a photo of an astronaut", "a dancer, best quality", "unknown words: zebra 42!", "héllo wörld"]
)
def test_tokenizer_round_trip(text, tiny_model_paths):
    tokenizer = build_tokenizer()
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer(decoded).input_ids == ids  # CLIP's decoding spaces out punctuation; the ids survive exactly
    if text.replace(" ", "").isalpha():
        assert decoded == text.lower()
    from transformers import CLIPTokenizer

    reloaded = CLIPTokenizer.from_pretrained(tiny_model_paths.model / "tokenizer")
    assert reloaded(text).input_ids == ids
    assert reloaded.model_max_length == 77


def test_vocabulary_words_are_single_tokens():
    tokenizer = build_tokenizer()
    for word in TINY_VOCABULARY_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def _ddim_round_trip_error(components, steps=50):
    """Relative latent error of DDIM inversion (guidance 1) then DDIM sampling, written here from the DDIM formulas."""
    scheduler = components.scheduler
    scheduler.set_timesteps(steps)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = components.tokenizer(["a photo"], padding="max_length", return_tensors="pt").input_ids
    alphas = scheduler.alphas_cumprod.double()
    timesteps = scheduler.timesteps.flip(0).tolist()
    with torch.no_grad():
        text = components.text_encoder(ids)[0]
        z = latents.double()
        for index, t in enumerate(timesteps):
            alpha_prev = alphas[timesteps[index - 1]] if index else scheduler.final_alpha_cumprod.double()
            noise = components.unet(z.float(), t, text).sample.double()
            clean = (z - (1 - alpha_prev).sqrt() * noise) / alpha_prev.sqrt()
            z = alphas[t].sqrt() * clean + (1 - alphas[t]).sqrt() * noise
        z = z.float()
        for t in scheduler.timesteps:
            z = scheduler.step(components.unet(z, t, text).sample, t, z).prev_sample
    return ((z - latents).norm() / latents.norm()).item()


def test_random_unet_is_well_conditioned_for_inversion():
    scaled = _ddim_round_trip_error(build_random_components("tiny"))
    raw = _ddim_round_trip_error(build_random_components("tiny", conv_out_scale=1.0))
    assert scaled < 0.05
    assert raw > 10 * scaled


def test_sd15_architecture_has_stable_diffusion_shapes():
    """Parameter counts of Stable Diffusion 1.5's UNet (859.5M) and VAE (83.7M), built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from zeroshot.testing import ARCHITECTURES

    with init_empty_weights():
        unet = UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"])
        vae = AutoencoderKL(**ARCHITECTURES["sd15"]["vae"])
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


# ---- loader errors ------------------------------------------------------------------------------------------------


def test_missing_local_folder_names_the_folder_and_the_option(tmp_path):
    with pytest.raises(ZeroshotError, match=r"base model folder .*nowhere.* does not exist.*--model"):
        load_components(str(tmp_path / "nowhere"), None, device="cpu")


def test_wrong_layout_names_what_is_missing(tiny_model_paths, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_paths.model, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ZeroshotError, match=r"not a diffusers-format base model folder: unet/config.json missing"):
        load_components(str(broken), None, device="cpu")
    with pytest.raises(ZeroshotError, match=r"not a diffusers-format ControlNet folder: config.json missing"):
        load_components(str(tiny_model_paths.model), str(tiny_model_paths.model), device="cpu")


def test_corrupt_weights_in_a_local_folder_are_reported(tiny_model_paths, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_model_paths.model, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ZeroshotError, match=r"Could not load the base model unet from"):
        load_components(str(broken), None, device="cpu")


def test_unet_width_mismatch_is_explained(tiny_model_paths):
    with pytest.raises(ZeroshotError, match=r"takes 4 input channels but this job needs 12 \(a Qffusion checkpoint\)"):
        load_components(str(tiny_model_paths.model), None, device="cpu", unet_in_channels=12)


def test_offline_hub_id_not_in_cache_fails_fast_with_download_command():
    start = time.monotonic()
    with pytest.raises(ZeroshotError) as raised:
        load_components("someone/some-model", None, device="cpu", offline=True)
    assert time.monotonic() - start < 5
    message = str(raised.value)
    assert "'someone/some-model' is not in the local Hugging Face cache and offline mode is on" in message
    assert "hf download someone/some-model" in message and "--model PATH" in message


def test_unreachable_hub_fails_fast_with_download_command(tmp_path):
    script = textwrap.dedent(
        """
        from zeroshot.errors import ZeroshotError
        from zeroshot.loading import load_components
        try:
            load_components(controlnet="someone/pose-net", model=MODEL, device="cpu")
        except ZeroshotError as error:
            print(error)
        """
    ).replace("MODEL", "'someone/some-model'")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    env.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert "'someone/some-model' is not in the local cache and the hub cannot be reached" in result.stdout
    assert "hf download someone/some-model" in result.stdout


def test_dtype_rules():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ZeroshotError, match="float16 is not supported on the CPU"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ZeroshotError, match="Unknown dtype 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_loading_in_bfloat16(tiny_model_paths):
    loaded = load_components(str(tiny_model_paths.model), str(tiny_model_paths.controlnet), device="cpu", dtype="bf16")
    assert {p.dtype for model in loaded.models() for p in model.parameters()} == {torch.bfloat16}


# ---- imports --------------------------------------------------------------------------------------------------------


def test_importing_every_module_never_imports_torchvision():
    """A meta-path finder sees every import of torchvision, whether or not it is installed; presence probes made with
    `importlib.util.find_spec` (diffusers and transformers make them) are not imports and are not counted."""
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys, traceback

        imports = []

        class Recorder:
            def find_spec(self, name, path=None, target=None):
                probing = any(frame.name == "find_spec" and "importlib" in frame.filename
                              for frame in traceback.extract_stack()[:-1])
                if name.split(".")[0] == "torchvision" and not probing:
                    imports.append(name)
                return None

        sys.meta_path.insert(0, Recorder())
        import hooks, zeroshot
        for package in (hooks, zeroshot):
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                importlib.import_module(module.name)
        print("imports:", imports, "loaded:", "torchvision" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "imports: [] loaded: False" in result.stdout


@pytest.mark.parametrize("script", ["animate.py", "evaluate.py", "extract_poses.py", "benchmark.py", "app.py"])
def test_script_help_teaches_without_loading_torch(script):
    """`--help` (and every input error found before the models load) must not pay for torch and diffusers."""
    path = Path(__file__).parents[1] / "scripts" / script
    code = (
        "import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "print('heavy:', sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "heavy: []" in result.stdout
