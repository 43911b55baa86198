"""Fine-tuning Stable Diffusion 1.5 into a Qffusion (QGA) model, on one or several GPUs with accelerate.

The recipe of the paper (Sec. 4.2, 5.1), with what it leaves open decided here:

- The UNet's `conv_in` is widened from 4 to 12 input channels: the reference and condition grids come first and get
  zero-initialised weights, the pretrained weights move to the noisy grid's channels (last, paper Eq. 6), so the
  widened UNet starts out computing exactly what Stable Diffusion computed. `conv_out` keeps 4 channels.
- Four frames a, b, c, d at a fixed interval (5 in the paper) from face-centred crops ([`~zeroshot.qffusion.data`]).
  The noisy grid is the grid of all four frames' latents diffused to a random timestep; the loss is the noise
  prediction error over the whole grid (paper's loss). Tiles a and d therefore see the references diffused, which is
  what [`hooks.QuadrantGridHook`] gives them at sampling time.
- Latents are the VAE posterior means (scaled), for the references, the conditions and the target alike, so a
  reference tile at training time is exactly what the pipeline feeds.
- Text: one fixed prompt (empty by default) for every sample; the paper's ArcFace identity features in the
  cross-attention are left out (no offline weights), the text encoder and VAE stay frozen (the paper also fine-tunes
  the VAE; pass such a VAE to editing with `--vae`).
- AdamW, linear warm-up to the learning rate (1e-4 over 10,000 steps in the paper) then constant, gradient
  accumulation (2 in the paper), gradient clipping at 1.0.

Checkpoints (`output_dir/checkpoint-STEP/`) hold the full training state (accelerate's optimizer, scheduler, RNG and
sampler states, and how many batches each process has taken from the data) and the UNet as `unet.safetensors` with
its [`~zeroshot.qffusion.checkpoint.QffusionConfig`]; each is written under a temporary name and renamed when
complete. An epoch whose batch count is not a multiple of the gradient accumulation ends with a shorter optimizer step
(accelerate steps at the end of the data), so the data position is counted in batches, not derived from the step.
Resuming restores all of it and continues with the same data order, so an interrupted run ends where an uninterrupted
one would; it refuses settings that would change what the run computes, the process count included. The end of
training exports `final/`, a complete diffusers-format model folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from hooks import pack_quadrant_grid, quadrant_grid_input, reference_grid

from ..atomic import staged_file, staged_folder, write_json
from ..components import ModelComponents
from ..errors import ZeroshotError
from ..imaging import encode_latents
from ..prompts import encode_texts
from .checkpoint import QFFUSION_IN_CHANNELS, save_qffusion_model, save_unet_weights
from .data import QuadrantGridDataset, find_videos, prepare_video
from .settings import TrainingSettings, parse_interval

logger = logging.getLogger(__name__)

#: Settings that must not change when resuming a run: they change the data, its order, the loss or what a step is.
_RESUME_INVARIANTS = (
    "model",
    "resolution",
    "interval",
    "condition",
    "prompt",
    "crop",
    "crop_scale",
    "crop_smoothing",
    "batch_size",
    "gradient_accumulation",
    "seed",
)


def widen_conv_in(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Replaces a 4-channel UNet's `conv_in` with a 12-channel one (in place) that computes the same on the noisy
    grid: the pretrained weights go to the last 4 input channels, the reference and condition channels start at zero.

    Returns:
        `UNet2DConditionModel`: the same UNet, `config.in_channels` 12.
    """
    old = unet.conv_in
    if old.in_channels * 3 != QFFUSION_IN_CHANNELS:
        raise ValueError(f"Expected a 4-channel UNet to widen, got {old.in_channels} input channels.")
    new = torch.nn.Conv2d(
        QFFUSION_IN_CHANNELS, old.out_channels, old.kernel_size, old.stride, old.padding, device=old.weight.device
    ).to(old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, -old.in_channels :] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=QFFUSION_IN_CHANNELS)
    return unet


def _checkpoint_step(folder: Path) -> int | None:
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match and folder.is_dir() else None


def find_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(step, path) for path in output_dir.iterdir() if (step := _checkpoint_step(path)) is not None]
    return [path for _, path in sorted(found)]


def _truncate_log(path: Path, step: int) -> None:
    """Drops the log lines of steps after `step` (written by an interrupted run after its last checkpoint), which
    the resumed run logs again, and a last line cut short by a killed process."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and 0 < _logged_step(line) <= step]
    if len(kept) != len(lines):
        with staged_file(path) as staging:
            staging.write_text("".join(kept))


def _logged_step(line: str) -> int:
    """The step of a log line, or 0 for a line that is not a complete record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 0


def _resolve_resume(settings: TrainingSettings) -> Path | None:
    existing = find_checkpoints(settings.output_dir)
    if settings.resume is None:
        if existing:
            raise ZeroshotError(
                f"{settings.output_dir!r} already holds checkpoints (newest {existing[-1].name}). Continue with "
                f"--resume latest, or choose another --out."
            )
        return None
    if settings.resume == "latest":
        if not existing:
            raise ZeroshotError(f"--resume latest: {settings.output_dir!r} holds no checkpoint yet.")
        return existing[-1]
    folder = Path(settings.resume)
    if _checkpoint_step(folder) is None or not (folder / "training_state.json").is_file():
        raise ZeroshotError(f"--resume {settings.resume!r} is not a checkpoint folder (checkpoint-STEP) of a run.")
    return folder


def _check_resumable(folder: Path, settings: TrainingSettings, num_processes: int) -> tuple[int, int]:
    """The optimizer step and the batches taken per process that the checkpoint `folder` ends at, after checking that
    this run continues it."""
    state = json.loads((folder / "training_state.json").read_text())
    if "batches" not in state:
        raise ZeroshotError(
            f"{str(folder)!r} was written by an older version of the training code that did not record the data "
            f"position; start a new run in another --out."
        )
    changed = [
        f"{name} ({state['settings'][name]!r} -> {getattr(settings, name)!r})"
        for name in _RESUME_INVARIANTS
        if state["settings"].get(name) != getattr(settings, name)
    ]
    if state["num_processes"] != num_processes:
        changed.append(f"processes ({state['num_processes']} -> {num_processes})")
    if changed:
        raise ZeroshotError(
            f"Cannot resume from {str(folder)!r} with different settings: {', '.join(changed)}. Resume with the "
            f"run's settings and number of processes, or start a new run in another --out."
        )
    return int(state["step"]), int(state["batches"])


def _load_base_unet_and_parts(settings: TrainingSettings) -> ModelComponents:
    from ..loading import load_components

    components = load_components(
        settings.model, None, device="cpu", dtype="fp32", offline=settings.offline, unet_in_channels=None
    )
    channels = components.unet.config.in_channels
    if channels == 4:
        widen_conv_in(components.unet)
    elif channels != QFFUSION_IN_CHANNELS:
        raise ZeroshotError(
            f"The UNet of {settings.model!r} takes {channels} input channels; fine-tuning starts from a Stable "
            f"Diffusion model (4) or continues a Qffusion model ({QFFUSION_IN_CHANNELS})."
        )
    return components


def train_qga(settings: TrainingSettings) -> Path:
    """Fine-tunes a QGA model; see the module documentation.

    Args:
        settings ([`TrainingSettings`]): the run.

    Returns:
        `Path`: the exported `final/` model folder.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: bad settings, no usable videos, a base model that cannot be loaded, or a
            resume that does not match the run.

    Example:

    ```py
    >>> from zeroshot.qffusion.training import TrainingSettings, train_qga
    >>> final = train_qga(TrainingSettings(model="sd15", data="videos/", output_dir="runs/qga", max_steps=20000))
    ```
    """
    output_dir = Path(settings.output_dir)
    created = not output_dir.exists()
    try:
        return _train(settings)
    except ZeroshotError:
        if int(os.environ.get("RANK", "0")) == 0:
            _remove_refused_run(output_dir, created)
        raise


def _remove_refused_run(output_dir: Path, created: bool) -> None:
    """After a run refused before its first checkpoint: its data cache, and the run folder if the run made it."""
    if find_checkpoints(output_dir) or (output_dir / "final").exists():
        return  # a run to resume: its cache saves the data preparation
    shutil.rmtree(output_dir / "data-cache", ignore_errors=True)
    if created and output_dir.is_dir() and not any(output_dir.iterdir()):
        output_dir.rmdir()


def _train(settings: TrainingSettings) -> Path:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from diffusers.optimization import get_constant_schedule_with_warmup
    from tqdm.auto import tqdm

    settings.check()
    if settings.cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # several CPU processes (torch.distributed.run): accelerate would otherwise not pick a CPU backend
        PartialState(cpu=True, backend="gloo")
    accelerator = Accelerator(
        gradient_accumulation_steps=settings.gradient_accumulation,
        mixed_precision=settings.mixed_precision,
        cpu=settings.cpu,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
    )
    output_dir = Path(settings.output_dir)
    resume_from = _resolve_resume(settings)
    start_step, start_batches = 0, 0
    if resume_from is not None:
        start_step, start_batches = _check_resumable(resume_from, settings, accelerator.num_processes)
    accelerator.wait_for_everyone()
    set_seed(settings.seed)
    qffusion_config = settings.qffusion_config()

    # 1. Data: each process prepares its share of the videos, then all read every cache.
    videos = find_videos(settings.data)
    cache_dir = output_dir / "data-cache"
    prepare = {
        "resolution": settings.resolution,
        "crop": settings.crop,
        "crop_scale": settings.crop_scale,
        "crop_smoothing": settings.crop_smoothing,
        "condition": settings.condition,
        "show_progress": settings.show_progress and accelerator.is_local_main_process,
    }
    for index, path in enumerate(videos):
        if index % accelerator.num_processes == accelerator.process_index:
            prepare_video(path, cache_dir, **prepare)
    accelerator.wait_for_everyone()
    dataset = QuadrantGridDataset(
        [prepare_video(path, cache_dir, **prepare) for path in videos],
        parse_interval(settings.interval),
        settings.condition,
    )
    sizes = sorted({video.frames.shape[2:0:-1] for video in dataset.videos})
    if len(sizes) > 1 and settings.batch_size > 1:
        raise ZeroshotError(
            f"Whole frames (--crop full) keep each video's aspect ratio, and these videos give {len(sizes)} frame "
            f"sizes ({', '.join(f'{w}x{h}' for w, h in sizes)}), which cannot share a batch. Use --batch-size 1 (with "
            f"--gradient-accumulation for larger steps), videos of one aspect ratio, or --crop subject."
        )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=settings.num_workers,
        persistent_workers=settings.num_workers > 0,
    )

    # 2. Models: the UNet trains in float32; the frozen VAE and text encoder run in the mixed-precision dtype.
    components = _load_base_unet_and_parts(settings)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(settings.mixed_precision, torch.float32)
    unet = components.unet.train()
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    vae = components.vae.to(accelerator.device).requires_grad_(False)
    if weight_dtype != torch.float32:
        vae.to(weight_dtype)
    text = encode_texts(components.tokenizer, components.text_encoder, [settings.prompt]).to(accelerator.device)
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # accelerate steps a prepared scheduler once per process per optimizer step
    lr_scheduler = get_constant_schedule_with_warmup(optimizer, settings.warmup_steps * accelerator.num_processes)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)

    def save_hook(models: list, weights: list, folder: str) -> None:
        if accelerator.is_main_process:
            save_unet_weights(accelerator.unwrap_model(models[0]), Path(folder) / "unet.safetensors", qffusion_config)
        weights.pop()

    def load_hook(models: list, folder: str) -> None:
        from safetensors.torch import load_file

        model = models.pop()
        accelerator.unwrap_model(model).load_state_dict(load_file(Path(folder) / "unet.safetensors"))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        logger.info("Resumed from %s at step %d", resume_from, start_step)

    # 3. The loop
    batches_per_epoch = len(loader)
    if batches_per_epoch == 0:
        raise ZeroshotError(
            f"{len(dataset)} training samples make no batch of {settings.batch_size} per process on "
            f"{accelerator.num_processes} processes; lower --batch-size or add videos."
        )
    step, batches = start_step, start_batches  # optimizer steps; batches this process took from the data
    log_path = output_dir / "log.jsonl"
    if accelerator.is_main_process:
        _truncate_log(log_path, step)
    show = settings.show_progress and accelerator.is_main_process
    progress = tqdm(total=settings.max_steps, initial=step, desc="train", disable=not show)
    started = time.perf_counter()
    micro_losses: list[torch.Tensor] = []
    while step < settings.max_steps:
        epoch, skip = divmod(batches, batches_per_epoch)
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            batches += 1
            # Noise and timesteps come from a generator seeded by (seed, step, micro-batch, process), so a resumed run
            # draws exactly what the uninterrupted run would have.
            micro = len(micro_losses)
            generator = torch.Generator(accelerator.device).manual_seed(
                hash((settings.seed, step, micro, accelerator.process_index)) % 2**63
            )
            with accelerator.accumulate(unet):
                loss = _grid_loss(batch, unet, vae, text, noise_scheduler, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), settings.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_losses.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            step += 1
            mean_loss = accelerator.gather(torch.stack(micro_losses).mean()[None]).mean().item()
            micro_losses.clear()
            progress.update()
            progress.set_postfix(loss=f"{mean_loss:.4f}")
            if accelerator.is_main_process:
                record = {"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}
                record["seconds"] = round(time.perf_counter() - started, 3)
                with log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
                if step % settings.log_every == 0:
                    logger.info("step %d  loss %.5f  lr %.3g", step, mean_loss, record["lr"])
            if step % settings.checkpoint_every == 0 or step == settings.max_steps:
                _save_checkpoint(accelerator, output_dir, step, batches, settings)
            if step >= settings.max_steps:
                break
    progress.close()

    # 4. Export
    final = output_dir / "final"
    if accelerator.is_main_process:
        components.unet = accelerator.unwrap_model(unet).eval()
        if weight_dtype != torch.float32:
            components.vae = components.vae.float()
        # A finished run that was continued replaces its model; the checkpoint saved at max_steps holds the new one.
        shutil.rmtree(final, ignore_errors=True)
        save_qffusion_model(components, final, qffusion_config)
        logger.info("Exported %s", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _grid_loss(
    batch: dict[str, torch.Tensor],
    unet: torch.nn.Module,
    vae: AutoencoderKL,
    text: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's loss on one batch: noise prediction error over the whole diffused grid of four frames. Latents
    are encoded exactly as the pipeline encodes them ([`~zeroshot.imaging.encode_latents`])."""
    frames, conditions = batch["frames"], batch["conditions"]
    size = frames.shape[0]
    images = torch.cat([frames, conditions]).flatten(0, 1)
    latents = encode_latents(vae, images, chunk_size=len(images)).unflatten(0, (2 * size, 4))
    tiles, condition_tiles = latents[:size], latents[size:]
    clean = pack_quadrant_grid([tiles[:, i] for i in range(4)])
    references = reference_grid(tiles[:, 0], tiles[:, 3])
    condition = pack_quadrant_grid([condition_tiles[:, i] for i in range(4)])
    noise = torch.randn(clean.shape, generator=generator, device=clean.device)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (size,), generator=generator, device=clean.device
    )
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    model_input = quadrant_grid_input(references, condition, noisy)
    prediction = unet(model_input, timesteps, encoder_hidden_states=text.expand(size, -1, -1)).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def _save_checkpoint(accelerator, output_dir: Path, step: int, batches: int, settings: TrainingSettings) -> None:
    """Saves the training state to `checkpoint-STEP` (staged under a temporary name that every process writes into,
    renamed when complete) and prunes old checkpoints."""
    from accelerate.utils import broadcast_object_list

    folder = output_dir / f"checkpoint-{step}"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(folder, ignore_errors=True)  # from a later part of the run abandoned by resuming before it
    with staged_folder(folder) if main else contextlib.nullcontext() as staging:
        name = broadcast_object_list([str(staging) if main else None])[0]
        accelerator.save_state(name)
        accelerator.wait_for_everyone()
        if main:
            state = {
                "step": step,
                "batches": batches,
                "num_processes": accelerator.num_processes,
                "settings": asdict(settings),
            }
            write_json(staging / "training_state.json", state)
    accelerator.wait_for_everyone()
    if main:
        if settings.keep_checkpoints:
            for old in find_checkpoints(output_dir)[: -settings.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("Saved %s", folder)
