"""The app's page (Gradio Blocks): the Animate, Edit and Extract tabs over [`~zeroshot.app.jobs`].

One job that uses the models runs at a time (a queue: a waiting user sees their position); pose previews have their
own queue, so they answer within seconds even while a job runs. A problem the user can fix shows its message in
the page; the server keeps running.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import ZeroshotError
from ..pacm.settings import PACM_MODES, PACMSettings
from ..poses import RepairSettings
from . import jobs
from .models import AppModels

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: The bundled example: a real photo, a short pose sequence, and a prompt that names the character.
EXAMPLE = (str(ASSETS / "astronaut.jpg"), str(ASSETS / "wave.json"), "a photo of an astronaut")
#: The concurrency group of every event that runs the models: one job at a time.
MODEL_QUEUE = "models"
#: The concurrency group of pose previews, which load no model.
PREVIEW_QUEUE = "preview"
#: The progress of a job: Gradio follows the pipeline's own tqdm bars, whose names are the stages (inversion, source,
#: frames, generation, decoding). Gradio makes a tracker per call from this default.
STAGE_PROGRESS = gr.Progress(track_tqdm=True)


def _shown_to_user(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a [`~zeroshot.errors.ZeroshotError`] into a message in the page (no traceback; the server goes on)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ZeroshotError as error:
            raise gr.Error(str(error)) from error

    return wrapper


def _int(value: float | str | None, name: str) -> int | None:
    """A whole number from a number or text field, `None` when the field is empty."""
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ZeroshotError(f"{name} must be a whole number, got {value!r}.") from None
    if number != int(number):
        raise ZeroshotError(f"{name} must be a whole number, got {value}.")
    return int(number)


def _animate_options(values: dict[str, Any]) -> jobs.AnimateOptions:
    """The [`~zeroshot.app.jobs.AnimateOptions`] of the Animate tab's fields, by name."""
    missing = [name for name, value in values.items() if value is None and name != "transition_frames"]
    if missing:
        raise ZeroshotError(f"Fill in every setting: {', '.join(missing)} missing.")
    return jobs.AnimateOptions(
        prompt=values["prompt"],
        subject=values["subject"].strip() or None,
        negative_prompt=values["negative_prompt"],
        inversion=values["inversion"],
        steps=_int(values["steps"], "Steps"),
        guidance=float(values["guidance"]),
        lambdas=(float(values["lambda_first"]), float(values["lambda_previous"]), float(values["lambda_self"])),
        decoupling=values["decoupling"],
        transition_frames=_int(values["transition_frames"], "Transition frames"),
        width=_int(values["width"], "Width"),
        height=_int(values["height"], "Height"),
        seed=_int(values["seed"], "Seed"),
        face_strength=float(values["face_strength"]),
        face_size=_int(values["face_size"], "Face size"),
    )


def build_app(models: AppModels, work_dir: str | Path) -> gr.Blocks:
    """The app's page over loaded models.

    Args:
        models ([`~zeroshot.app.models.AppModels`]): the models every run uses.
        work_dir (`str` or `Path`): where each run writes its files (a new folder per run).

    Returns:
        `gr.Blocks`: launch it with `.queue().launch(allowed_paths=[work_dir])` (see `scripts/app.py`).
    """
    work_dir = Path(work_dir)

    def run_folder() -> Path:
        return Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))

    with gr.Blocks(title="zeroshot-animate", analytics_enabled=False) as app:
        gr.Markdown(
            "# zeroshot-animate\nAnimate a character from one image and a pose sequence (PoseAnimate), edit a video "
            "from its edited first and last frames (Qffusion), or extract the poses of a video."
        )
        _animate_tab(models, run_folder)
        _edit_tab(models, run_folder)
        _extract_tab(run_folder)
    return app


def _animate_tab(models: AppModels, run_folder: Callable[[], Path]) -> None:
    """The Animate tab: inputs, settings, pose preview, run, and the run's video, files and figures."""
    defaults = PACMSettings()
    with gr.Tab("Animate", id="animate"):
        with gr.Row():
            with gr.Column():
                image = gr.File(label="Image of the character", file_types=["image"], elem_id="image")
                poses = gr.File(label="Poses: a video, or a JSON file", elem_id="poses")
                prompt = gr.Textbox(
                    label="Prompt (describes the image)", value="a photo of a person", elem_id="prompt"
                )
                subject = gr.Textbox(
                    label="Subject: the prompt's word for the character (empty: found in the prompt)",
                    elem_id="subject",
                )
                negative_prompt = gr.Textbox(label="Negative prompt", elem_id="negative-prompt")
                gr.Examples(
                    [list(EXAMPLE)],
                    inputs=[image, poses, prompt],
                    label="Bundled astronaut and wave",
                    elem_id="example",
                )
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    inversion = gr.Radio(
                        list(PACM_MODES), value=defaults.mode, label="Inversion mode", elem_id="inversion"
                    )
                    with gr.Row():
                        steps = gr.Number(
                            value=defaults.num_inference_steps,
                            precision=0,
                            label="Steps",
                            minimum=1,
                            elem_id="steps",
                        )
                        guidance = gr.Number(value=defaults.guidance_scale, label="Guidance", elem_id="guidance")
                    with gr.Row():
                        lambda_first = gr.Number(value=0.7, label="λ frame 0", elem_id="lambda-first")
                        lambda_previous = gr.Number(value=0.15, label="λ previous", elem_id="lambda-previous")
                        lambda_self = gr.Number(value=0.15, label="λ itself", elem_id="lambda-self")
                    decoupling = gr.Radio(
                        list(jobs.DECOUPLING_CHOICES),
                        value="exclusive",
                        label="Mask-guided decoupling",
                        elem_id="decoupling",
                    )
                    transition_frames = gr.Textbox(
                        label="Transition frames (empty: automatic)", elem_id="transition-frames"
                    )
                    with gr.Row():
                        width = gr.Number(value=512, precision=0, label="Width", elem_id="width")
                        height = gr.Number(value=512, precision=0, label="Height", elem_id="height")
                        seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    with gr.Row():
                        face_strength = gr.Slider(
                            0.0,
                            1.0,
                            value=0.0,
                            step=0.05,
                            label="Face refinement strength (0: off)",
                            elem_id="face-strength",
                        )
                        face_size = gr.Number(value=512, precision=0, label="Face crop size", elem_id="face-size")
                with gr.Row():
                    preview_button = gr.Button("Preview poses", elem_id="preview-button")
                    run_button = gr.Button("Run", variant="primary", elem_id="run-button")
            with gr.Column():
                preview = gr.Gallery(label="Poses over the image", columns=4, height="auto", elem_id="preview")
                video = gr.Video(label="Animation", elem_id="animation", interactive=False)
                downloads = gr.File(label="Downloads", file_count="multiple", elem_id="downloads", interactive=False)
                figures = gr.Markdown(elem_id="figures")
    # Gradio hands a set of inputs to the function as one {component: value} dict.
    fields = {
        "prompt": prompt,
        "subject": subject,
        "negative_prompt": negative_prompt,
        "inversion": inversion,
        "steps": steps,
        "guidance": guidance,
        "lambda_first": lambda_first,
        "lambda_previous": lambda_previous,
        "lambda_self": lambda_self,
        "decoupling": decoupling,
        "transition_frames": transition_frames,
        "width": width,
        "height": height,
        "seed": seed,
        "face_strength": face_strength,
        "face_size": face_size,
    }
    animate_inputs = {image, poses, *fields.values()}

    def options_of(data: dict) -> jobs.AnimateOptions:
        return _animate_options({name: data[component] for name, component in fields.items()})

    @_shown_to_user
    def on_preview(data: dict) -> list:
        return list(jobs.preview_poses(data[image], data[poses], options_of(data)))

    @_shown_to_user
    def on_run(data: dict, progress: gr.Progress = STAGE_PROGRESS) -> tuple:
        progress(0, desc="checking the inputs; source pose and mask")
        files = jobs.animate(models, data[image], data[poses], options_of(data), run_folder())
        written = [str(path) for path in (files.video, files.poses, files.report) if path is not None]
        return str(files.video), written, jobs.figures_markdown(files.summary)

    preview_button.click(on_preview, animate_inputs, preview, concurrency_id=PREVIEW_QUEUE, concurrency_limit=1)
    run_button.click(
        on_run, animate_inputs, [video, downloads, figures], concurrency_id=MODEL_QUEUE, concurrency_limit=1
    )


def _edit_tab(models: AppModels, run_folder: Callable[[], Path]) -> None:
    """The Edit tab: a Qffusion edit of a video from its edited first and last frames, or a jump-cut transition."""
    with gr.Tab("Edit (Qffusion)", id="edit"):
        with gr.Row():
            with gr.Column():
                edit_video = gr.File(label="Video to edit (not in jump-cut mode)", elem_id="edit-video")
                start = gr.File(label="Edited start frame", file_types=["image"], elem_id="edit-start")
                end = gr.File(label="Edited end frame", file_types=["image"], elem_id="edit-end")
                checkpoint = gr.Textbox(
                    label="Qffusion checkpoint: model folder or .safetensors path", elem_id="edit-checkpoint"
                )
                jump_cut = gr.Checkbox(
                    label="Jump-cut mode: a transition from the start to the end frame", elem_id="edit-jump-cut"
                )
                with gr.Row():
                    jump_frames = gr.Number(
                        value=12, precision=0, minimum=3, label="Jump-cut frames", elem_id="edit-jump-frames"
                    )
                    jump_fps = gr.Number(value=25.0, label="Jump-cut frame rate", elem_id="edit-fps")
                    edit_steps = gr.Number(value=25, precision=0, minimum=1, label="Steps", elem_id="edit-steps")
                    edit_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="edit-seed")
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            with gr.Column():
                edited = gr.Video(label="Edited video", elem_id="edited", interactive=False)
                edit_files = gr.File(
                    label="Downloads", file_count="multiple", elem_id="edit-downloads", interactive=False
                )

    @_shown_to_user
    def on_edit(
        video_path: str | None,
        start_path: str | None,
        end_path: str | None,
        checkpoint_path: str,
        jump: bool,
        frames: float | None,
        fps: float | None,
        steps_value: float | None,
        seed_value: float | None,
        progress: gr.Progress = STAGE_PROGRESS,
    ) -> tuple:
        progress(0, desc="checking the inputs")
        if None in (fps, steps_value, seed_value) or (jump and frames is None):
            raise ZeroshotError("Fill in every setting.")
        options = jobs.EditOptions(
            jump_cut=_int(frames, "Jump-cut frames") if jump else None,
            fps=float(fps),
            steps=_int(steps_value, "Steps"),
            seed=_int(seed_value, "Seed"),
        )
        out, report = jobs.edit(
            models, video_path, start_path, end_path, checkpoint_path.strip(), options, run_folder()
        )
        return str(out), [str(out), str(report)]

    edit_button.click(
        on_edit,
        [edit_video, start, end, checkpoint, jump_cut, jump_frames, jump_fps, edit_steps, edit_seed],
        [edited, edit_files],
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=1,
    )


def _extract_tab(run_folder: Callable[[], Path]) -> None:
    """The Extract tab: a video's poses (mediapipe) as OpenPose JSON, with a preview over the video."""
    with gr.Tab("Extract poses", id="extract"):
        with gr.Row():
            with gr.Column():
                extract_video = gr.File(label="Video of a person", elem_id="extract-video")
                max_gap = gr.Number(
                    value=RepairSettings.max_gap_seconds,
                    minimum=0,
                    label="Longest gap of a joint to fill (seconds; 0: none)",
                    elem_id="extract-max-gap",
                )
                smooth = gr.Checkbox(value=True, label="One-Euro smoothing after repair", elem_id="extract-smooth")
                extract_button = gr.Button("Extract", variant="primary", elem_id="extract-button")
            with gr.Column():
                extracted = gr.Video(label="Extracted poses over the video", elem_id="extracted", interactive=False)
                extract_files = gr.File(label="Poses (OpenPose JSON)", elem_id="extract-downloads", interactive=False)
                extract_summary = gr.Markdown(elem_id="extract-summary")

    @_shown_to_user
    def on_extract(
        video_path: str | None, gap: float | None, smoothing: bool, progress: gr.Progress = STAGE_PROGRESS
    ) -> tuple:
        progress(0, desc="reading the video")
        files = jobs.extract(video_path, 0.0 if gap is None else float(gap), smoothing, run_folder())
        return str(files.preview), str(files.poses), files.summary

    extract_button.click(
        on_extract,
        [extract_video, max_gap, smooth],
        [extracted, extract_files, extract_summary],
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=1,
    )
