"""The hf-swin-ddpm Space: Swin + FPN semantic segmentation and a DDPM (Ho et al. 2020), side by side.

Five tabs and six API routes:

- Segment: ``/segment`` (an uploaded image) and ``/segment_drawing`` (the sketchpad's drawing, white on black or black
  on white): overlay of the predicted classes, the class-id mask as a lossless PNG, a legend;
- ``/generate`` (seed, number of images, inference steps, variance): samples, and the denoising trajectory; its
  "Segment these" button puts the samples on one canvas and shows them segmented in the Segment tab;
- ``/forward_diffusion`` (image, t, noise seed): a draw of q(x_t | x_0), the alpha-bar / SNR curve, the numbers;
- ``/interpolate`` (two images, t, number of points, seed, inference steps, shared noise): the two images mixed in
  the latent space at step t and decoded (the paper's Fig. 8);
- ``/edit`` (an image editor's value, mode, strength, inference steps, seed): inpainting of the painted region
  (RePaint) or image-to-image (SDEdit) with the DDPM; the input as the model sees it, the result, the trajectory.

Models come from ``SWIN_FPN_MODEL`` and ``DDPM_MODEL`` (a local folder or a Hub repo id), by default
``demo_models/swin-fpn-digit-scenes`` and ``demo_models/ddpm-mnist`` at the repository root (``make demo-models``).
Run ``python spaces_app/app.py``; ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` set the address
(default http://127.0.0.1:7860).
"""

from __future__ import annotations

import ctypes
import importlib.resources
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import PIL.Image
from gradio import processing_utils
from huggingface_hub import hf_hub_download
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

import hf_swin_ddpm  # noqa: F401  (registers SwinFPN with the transformers Auto classes)
from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.hub import is_repo_id
from hf_swin_ddpm.imaging import class_colours
from hf_swin_ddpm.safe_loading import check_model_folder, named_loading_errors, safetensors_only

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tabs' modules beside this file, as on a Space
from image_inputs import MAX_SEED, check_whole_number_range, read_upload  # noqa: E402
from tab_edit import (  # noqa: E402
    DEFAULT_EDIT_STEPS,
    DEFAULT_STRENGTH,
    INPAINT,
    MAX_EDIT_STEPS,
    MODES,
    edit,
    edit_how_it_works,
    require_strength,
)
from tab_forward_process import forward_diffusion, forward_how_it_works  # noqa: E402
from tab_generate import (  # noqa: E402
    CANVAS_MIN_SIDE,
    DEFAULT_INFERENCE_STEPS,
    DEFAULT_NUM_IMAGES,
    MAX_INFERENCE_STEPS,
    MAX_NUM_IMAGES,
    VARIANCE_CHOICES,
    generate,
    generate_how_it_works,
    sample_resolution,
    samples_canvas,
    sampling_estimate,
    time_unet_call,
    variance_choice,
)
from tab_interpolate import DEFAULT_POINTS, MAX_POINTS, interpolate, interpolate_how_it_works  # noqa: E402
from tab_segment import (  # noqa: E402
    DRAWING_BRUSH_SIZE,
    DRAWING_SIDE,
    INKS,
    LEGEND_HEADERS,
    WHITE_ON_BLACK,
    Segmenter,
    blank_drawing,
    segment,
    segment_drawing,
    segment_how_it_works,
)

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
EXAMPLES_DIR = APP_DIR / "examples"
PHOTOGRAPH_EXAMPLES = ("china.jpg", "flower.jpg")
DEFAULT_SWIN_FPN_MODEL = REPO_ROOT / "demo_models" / "swin-fpn-digit-scenes"
DEFAULT_DDPM_MODEL = REPO_ROOT / "demo_models" / "ddpm-mnist"
SWIN_FPN_MODEL_ENV = "SWIN_FPN_MODEL"
DDPM_MODEL_ENV = "DDPM_MODEL"

QUEUE_MAX_SIZE = 32
INFERENCE_CONCURRENCY = 2  # jobs running at once over all tabs
MAX_UPLOAD_SIZE = "20mb"


class ModelLoadError(RuntimeError):
    """A demo model could not be loaded; the message says what to do."""


# ------------------------------------------------------------------------------------------------ models


def model_location(explicit: str | os.PathLike | None, env_var: str, default: Path) -> str:
    """The model to load: the explicit argument, else the environment variable, else the default folder."""
    if explicit is not None:
        return str(explicit)
    return os.environ.get(env_var) or str(default)


def looks_like_hub_repo_id(location: str) -> bool:
    """True for `name` or `org/name` that is not an existing path (the Hub's repo id syntax)."""
    return not Path(location).exists() and is_repo_id(location)


def model_name(location: str) -> str:
    """How the page names a model: a local folder by its name (never the serving machine's path), else the repo id."""
    return Path(location).resolve().name if Path(location).exists() else location


def missing_model_message(what: str, location: str, env_var: str, reason: str) -> str:
    return (
        f"Could not load the {what} from {location!r}: {reason}. Run `make demo-models` to build the demo "
        f"models in demo_models/ (it retrains any that are missing with their recorded recipes), or set {env_var} "
        "to a saved model folder or a Hub repo id."
    )


def check_model_location(what: str, location: str, env_var: str) -> None:
    """Raises `ModelLoadError` when `location` is neither an existing folder nor a Hub repo id."""
    if Path(location).is_dir() or looks_like_hub_repo_id(location):
        return
    reason = "it is a file, not a model folder" if Path(location).exists() else "no such folder"
    raise ModelLoadError(missing_model_message(what, location, env_var, reason))


def load_segmenter(location: str) -> Segmenter:
    """Loads a semantic segmentation model and its image processor (SwinFPN or any transformers model).

    A transformers `UperNetForSemanticSegmentation` with a Swin backbone (the Swin paper's ADE20K models,
    `openmmlab/upernet-swin-tiny` and its siblings) is converted to `SwinFPNForSegmentation` with its UperNet head
    (`from_pretrained_upernet`) and served with our inference, slide windows included, and its image processor's
    settings in a `SwinFPNImageProcessor`. Safetensors weights only and no remote code: a folder or repository that
    needs either is refused (on the Hub, transformers takes the safetensors of the conversion bot's pull request of
    a repository that has only `pytorch_model.bin`).
    """
    check_model_location("segmentation model", location, SWIN_FPN_MODEL_ENV)
    try:
        if Path(location).is_dir():
            check_model_folder(location)
        with named_loading_errors(location, "segmentation model"):
            if is_swin_upernet(AutoConfig.from_pretrained(location, trust_remote_code=False)):
                model = SwinFPNForSegmentation.from_pretrained_upernet(location).eval()
                processor = SwinFPNImageProcessor.from_pretrained(location)
            else:
                model = AutoModelForSemanticSegmentation.from_pretrained(
                    location, trust_remote_code=False, **safetensors_only()
                ).eval()
                processor = AutoImageProcessor.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            missing_model_message("segmentation model", location, SWIN_FPN_MODEL_ENV, str(error))
        ) from error
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return Segmenter(model, processor, id2label, class_colours(id2label), location)


def is_swin_upernet(config: Any) -> bool:
    """Whether a transformers config is an `UperNetForSemanticSegmentation` with a Swin backbone."""
    backbone = getattr(config, "backbone_config", None)
    return config.model_type == "upernet" and getattr(backbone, "model_type", None) == "swin"


def repository_scheduler_class(location: str) -> str | None:
    """The scheduler class `model_index.json` names (a folder's, or a Hub repository's through the cache)."""
    if Path(location).is_dir():
        path = Path(location) / "model_index.json"
    else:
        path = Path(hf_hub_download(location, "model_index.json"))
    entry = json.loads(path.read_text(encoding="utf-8")).get("scheduler")
    return str(entry[1]) if isinstance(entry, (list, tuple)) and len(entry) == 2 else None


def load_ddpm(location: str) -> DDPMPaperPipeline:
    """Loads a saved `DDPMPaperPipeline` or any diffusers `DDPMPipeline` (local folder or Hub repo id).

    A repository whose scheduler is not a `DDPMPaperScheduler` (the paper's released models converted by diffusers,
    `google/ddpm-cifar10-32`, `google/ddpm-ema-church-256`, ...) is loaded with `paper_sampler=True`: Algorithm 2
    without clipping x_0, with the variance the official code used for that model.
    """
    check_model_location("DDPM pipeline", location, DDPM_MODEL_ENV)
    if Path(location).is_dir() and not (Path(location) / "model_index.json").is_file():
        raise ModelLoadError(
            missing_model_message("DDPM pipeline", location, DDPM_MODEL_ENV, "the folder has no model_index.json")
        )
    try:
        if Path(location).is_dir():
            check_model_folder(location)
        with named_loading_errors(location, "DDPM pipeline"):
            paper_sampler = repository_scheduler_class(location) != DDPMPaperScheduler.__name__
            pipeline = DDPMPaperPipeline.from_pretrained(location, paper_sampler=paper_sampler, **safetensors_only())
    except (OSError, ValueError) as error:
        raise ModelLoadError(missing_model_message("DDPM pipeline", location, DDPM_MODEL_ENV, str(error))) from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------------ UI

INTRO = """
# Swin + FPN segmentation · DDPM generation
Two models built as native Hugging Face transformers / diffusers components, small enough to run on a CPU:
a **Swin Transformer with a Semantic FPN head** finds each handwritten digit on a canvas and names it (draw some, or
upload an image), and a **denoising diffusion probabilistic model** draws new MNIST digits, which the segmenter can
then read ("Segment these"). Every tab is also an API route (see "Use via API" below).
"""

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.fill-box img { width: 100% !important; height: 100% !important; object-fit: contain; }
.swatch { display: inline-block; width: 0.95em; height: 0.95em; border-radius: 3px; vertical-align: -0.12em;
          border: 1px solid rgba(0, 0, 0, 0.25); }
.how-it-works { font-size: 0.95em; }
footer { opacity: 0.8; }
"""


def launch_options() -> dict[str, Any]:
    """Keyword arguments of `demo.launch` shared by `main` and the tests (theme, CSS, upload limit)."""
    return {
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="rose"),
        "css": CSS,
        "max_file_size": MAX_UPLOAD_SIZE,
    }


def example_images() -> list[str]:
    """The Segment tab's examples: canvases of the digit_scenes test split (spaces_app/make_examples.py)."""
    return sorted(str(path) for path in EXAMPLES_DIR.glob("digit_scenes_test_*.png"))


def digit_examples() -> list[str]:
    """The DDPM tabs' examples: real MNIST test digits, 28x28 (spaces_app/make_examples.py)."""
    return sorted(str(path) for path in EXAMPLES_DIR.glob("mnist_test_*.png"))


def photograph_examples() -> list[str]:
    """The two photographs that ship inside scikit-learn's wheel (`sklearn.datasets.load_sample_images`: china.jpg, a
    temple and trees, and flower.jpg; CC BY 2.0, see spaces_app/README.md)."""
    images = importlib.resources.files("sklearn.datasets.images")
    return [str(images / name) for name in PHOTOGRAPH_EXAMPLES]


def image_input(label: str, elem_id: str) -> gr.Image:
    """An image upload passed on as PIL in its original mode (`to_rgb` converts it), with readable errors."""
    component = gr.Image(
        label=label,
        type="pil",
        image_mode=None,
        sources=["upload", "clipboard"],
        height=300,
        elem_classes=["pixelated", "fill-box"],
        elem_id=elem_id,
    )
    gradio_preprocess = component.preprocess
    component.preprocess = lambda payload: read_upload(gradio_preprocess, payload)
    return component


def image_output(label: str, **kwargs: Any) -> gr.Image:
    """A lossless (PNG) output image, scaled up crisply to fill its box."""
    return gr.Image(label=label, format="png", interactive=False, elem_classes=["pixelated", "fill-box"], **kwargs)


def sample_gallery(label: str, **kwargs: Any) -> gr.Gallery:
    """Generated images, losslessly, scaled up crisply, four a row."""
    return gr.Gallery(
        label=label, columns=4, format="png", object_fit="contain", height=340, elem_classes=["pixelated"], **kwargs
    )


def strip_image(**kwargs: Any) -> gr.Image:
    """A row of images without a label (trajectories, interpolations)."""
    return gr.Image(format="png", interactive=False, show_label=False, elem_classes=["pixelated"], **kwargs)


def whole_number_slider(label: str, minimum: int, maximum: int, value: int, **kwargs: Any) -> gr.Slider:
    """An integer slider whose value is checked server-side with a message naming it."""
    return check_whole_number_range(
        gr.Slider(label=label, minimum=minimum, maximum=maximum, value=value, step=1, **kwargs)
    )


def timestep_slider(num_train_timesteps: int, value: int, **kwargs: Any) -> gr.Slider:
    """t in [0, T - 1] (0-based, the paper's t - 1)."""
    return whole_number_slider("t", 0, num_train_timesteps - 1, value, **kwargs)


def seed_input(label: str, **kwargs: Any) -> gr.Number:
    """A seed in [0, MAX_SEED], checked server-side."""
    return check_whole_number_range(
        gr.Number(label=label, value=0, precision=0, minimum=0, maximum=MAX_SEED, **kwargs)
    )


def on_click(button: gr.Button, run: Any, api_name: str, **settings: Any) -> None:
    """`run` behind `button` and the API route `/api_name`, sharing the inference concurrency of all tabs."""
    button.click(
        run, **settings, api_name=api_name, concurrency_id="inference", concurrency_limit=INFERENCE_CONCURRENCY
    )


@dataclass
class SegmentTab:
    """The Segment tab's components that other tabs write to ("Segment these")."""

    sources: gr.Tabs
    image: gr.Image
    overlay: gr.Image
    mask: gr.Image
    legend: gr.Dataframe


def build_segment_tab(segmenter: Segmenter) -> SegmentTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Tabs(selected="segment-draw") as sources:
                with gr.Tab("Draw", id="segment-draw"):
                    ink = gr.Radio(
                        list(INKS),
                        value=WHITE_ON_BLACK,
                        label="Ink",
                        info="Changing it starts a new canvas",
                        elem_id="segment-ink",
                    )
                    sketchpad = gr.Sketchpad(
                        value=blank_drawing(WHITE_ON_BLACK),
                        label="Draw digits, each about a third of the canvas high",
                        type="pil",
                        image_mode="RGBA",
                        canvas_size=(DRAWING_SIDE, DRAWING_SIDE),
                        brush=gr.Brush(colors=[rgb_hex(INKS[WHITE_ON_BLACK][0])], default_size=DRAWING_BRUSH_SIZE),
                        layers=False,
                        height=380,
                        elem_id="segment-sketchpad",
                    )
                    draw_button = gr.Button("Segment the drawing", variant="primary", elem_id="segment-draw-button")
                with gr.Tab("Upload", id="segment-upload"):
                    image = image_input("Image", elem_id="segment-image")
                    button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                    gr.Examples(
                        examples=example_images(),
                        inputs=image,
                        label="Examples: canvases of held-out MNIST digits (the digit_scenes test split)",
                        elem_id="segment-examples",
                    )
                    gr.Examples(
                        examples=photograph_examples(),
                        inputs=image,
                        label="Photographs from scikit-learn (CC BY 2.0), for a photograph model such as "
                        "SWIN_FPN_MODEL=openmmlab/upernet-swin-tiny",
                        elem_id="segment-photographs",
                    )
        with gr.Column(scale=2):
            with gr.Row():
                overlay = image_output("Predicted classes over the image", height=300, elem_id="segment-overlay")
                mask = image_output("Mask (PNG, pixel value = class id)", height=300, elem_id="segment-mask")
            legend = gr.Dataframe(
                headers=LEGEND_HEADERS,
                datatype=["number", "str", "html", "number"],
                label="Legend",
                interactive=False,
                elem_id="segment-legend",
                wrap=True,
            )
    gr.Markdown(segment_how_it_works(segmenter), elem_classes=["how-it-works"])

    def run(image: PIL.Image.Image | None):
        return segment(segmenter, image)

    def run_drawing(drawing: Any):
        return segment_drawing(segmenter, drawing)

    def new_canvas(chosen: str):
        if chosen not in INKS:
            raise gr.Error(f"Ink must be one of {list(INKS)}; got {chosen!r}.")
        brush = gr.Brush(colors=[rgb_hex(INKS[chosen][0])], default_size=DRAWING_BRUSH_SIZE)
        return gr.Sketchpad(value=blank_drawing(chosen), brush=brush)

    on_click(button, run, "segment", inputs=image, outputs=[overlay, mask, legend])
    on_click(draw_button, run_drawing, "segment_drawing", inputs=sketchpad, outputs=[overlay, mask, legend])
    ink.change(new_canvas, inputs=ink, outputs=sketchpad, api_visibility="private", queue=False)
    return SegmentTab(sources, image, overlay, mask, legend)


def rgb_hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def build_generate_tab(pipeline: DDPMPaperPipeline) -> tuple[gr.Gallery, gr.Button]:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    max_steps = min(MAX_INFERENCE_STEPS, num_train_timesteps)
    seconds_per_call = time_unet_call(pipeline.unet)
    height, width = sample_resolution(pipeline.unet)
    resolution = f"{height}×{width}, batch 1"

    def estimate_line(inference_steps: Any, images: Any) -> str:
        return sampling_estimate(seconds_per_call, resolution, inference_steps, images)

    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            seed = seed_input("Seed", elem_id="generate-seed")
            num_images = whole_number_slider(
                "Number of images",
                1,
                MAX_NUM_IMAGES,
                DEFAULT_NUM_IMAGES,
                elem_id="generate-num-images",
            )
            steps = whole_number_slider(
                "Inference steps",
                1,
                max_steps,
                min(DEFAULT_INFERENCE_STEPS, max_steps),
                info=f"{num_train_timesteps} is the paper's full chain; fewer steps respace it",
                elem_id="generate-steps",
            )
            variance = gr.Radio(
                choices=VARIANCE_CHOICES,
                value=variance_choice(pipeline.scheduler),
                label="Reverse-process variance σₜ²",
            )
            bf16 = gr.Checkbox(
                value=False,
                label="bf16 autocast",
                info="The UNet in bfloat16: about 1.5x faster on CPUs with bf16 instructions (slower without "
                "them), samples close to fp32",
                elem_id="generate-bf16",
            )
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            estimate = gr.Markdown(estimate_line(steps.value, num_images.value), elem_id="generate-estimate")
        with gr.Column(scale=2):
            gallery = sample_gallery("Samples", elem_id="generate-gallery")
            segment_these = gr.Button(
                "Segment these: all samples on one canvas, in the Segment tab", elem_id="generate-segment-these"
            )
            gr.Markdown("**Denoising trajectory of sample #1** (Ho et al. 2020, Fig. 6): noise → sample")
            strip = strip_image(elem_id="generate-trajectory")
    gr.Markdown(generate_how_it_works(pipeline.scheduler), elem_classes=["how-it-works"])

    def run(
        seed: int,
        num_images: int,
        inference_steps: int,
        variance: str,
        use_bf16: bool = False,
        progress=gr.Progress(),  # noqa: B008
    ):
        return generate(pipeline, seed, num_images, inference_steps, variance, progress, bf16=bool(use_bf16))

    inputs = [seed, num_images, steps, variance, bf16]
    on_click(button, run, "generate", inputs=inputs, outputs=[gallery, strip])
    for control in (steps, num_images):
        control.change(
            estimate_line,
            inputs=[steps, num_images],
            outputs=estimate,
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )
    return gallery, segment_these


def connect_segment_these(
    button: gr.Button, gallery: gr.Gallery, tabs: gr.Tabs, target: SegmentTab, segmenter: Segmenter
) -> None:
    """ "Segment these": the Generate tab's samples on one canvas (`samples_canvas`), segmented, shown in the Segment
    tab's Upload view, and that tab selected. A page event, not an API route: API clients call `/generate` and then
    `/segment` on their own canvas."""

    def segment_these(samples: Any):
        images = [PIL.Image.open(item[0] if isinstance(item, (list, tuple)) else item) for item in samples or []]
        canvas = samples_canvas(images, min_side=CANVAS_MIN_SIDE)
        overlay, mask, legend = segment(segmenter, canvas)
        return gr.Tabs(selected="segment"), gr.Tabs(selected="segment-upload"), canvas, overlay, mask, legend

    button.click(
        segment_these,
        inputs=gallery,
        outputs=[tabs, target.sources, target.image, target.overlay, target.mask, target.legend],
        api_visibility="private",
        concurrency_id="inference",
        concurrency_limit=INFERENCE_CONCURRENCY,
    )


def build_forward_tab(scheduler: DDPMPaperScheduler) -> None:
    num_train_timesteps = scheduler.config.num_train_timesteps
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = image_input("Image x₀", elem_id="forward-image")
            timestep = timestep_slider(num_train_timesteps, num_train_timesteps // 4, elem_id="forward-t")
            noise_seed = seed_input("Noise seed")
            button = gr.Button("Add noise", variant="primary", elem_id="forward-button")
            gr.Examples(
                examples=digit_examples(),
                inputs=image,
                label="Examples: MNIST test digits",
                elem_id="forward-examples",
            )
        with gr.Column(scale=2):
            with gr.Row():
                noisy = image_output("xₜ ~ q(xₜ | x₀)", height=300, elem_id="forward-noisy", scale=2)
                curve = gr.Image(
                    label="ᾱₜ and SNR over t",
                    show_label=False,
                    format="png",
                    interactive=False,
                    height=300,
                    elem_id="forward-curve",
                    scale=3,
                )
            summary = gr.Markdown(elem_id="forward-summary")
    gr.Markdown(forward_how_it_works(scheduler), elem_classes=["how-it-works"])

    def run(image: PIL.Image.Image | None, t: int, noise_seed: int):
        return forward_diffusion(scheduler, image, t, noise_seed)

    settings = {"inputs": [image, timestep, noise_seed], "outputs": [noisy, curve, summary]}
    on_click(button, run, "forward_diffusion", **settings)
    timestep.release(
        run, **settings, api_visibility="private", concurrency_id="inference", concurrency_limit=INFERENCE_CONCURRENCY
    )


def build_interpolate_tab(pipeline: DDPMPaperPipeline) -> None:
    num_train_timesteps = pipeline.scheduler.config.num_train_timesteps
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Row():
                image_a = image_input("Image A", elem_id="interpolate-image-a")
                image_b = image_input("Image B", elem_id="interpolate-image-b")
            timestep = timestep_slider(num_train_timesteps, num_train_timesteps // 2, elem_id="interpolate-t")
            num_points = whole_number_slider(
                "Number of points",
                2,
                MAX_POINTS,
                DEFAULT_POINTS,
                elem_id="interpolate-points",
            )
            seed = seed_input("Seed", elem_id="interpolate-seed")
            steps = whole_number_slider(
                "Inference steps",
                1,
                min(MAX_INFERENCE_STEPS, num_train_timesteps),
                min(DEFAULT_INFERENCE_STEPS, num_train_timesteps),
                info=f"{num_train_timesteps} respaced to this many steps; the chain runs those up to t",
                elem_id="interpolate-steps",
            )
            shared_noise = gr.Checkbox(value=True, label="Same noise for both images", elem_id="interpolate-shared")
            button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
            digits = digit_examples()
            gr.Examples(
                examples=[digits[i : i + 2] for i in range(0, len(digits) - 1, 2)],
                inputs=[image_a, image_b],
                label="Examples: pairs of MNIST test digits",
                elem_id="interpolate-examples",
            )
        with gr.Column(scale=2):
            gallery = sample_gallery("Decoded mixes", elem_id="interpolate-gallery")
            strip = strip_image(elem_id="interpolate-strip")
    gr.Markdown(interpolate_how_it_works(pipeline), elem_classes=["how-it-works"])

    def run(a: PIL.Image.Image | None, b: PIL.Image.Image | None, t: int, points: int, seed: int, steps: int, shared):
        return interpolate(pipeline, a, b, t, points, seed, steps, shared)

    on_click(
        button,
        run,
        "interpolate",
        inputs=[image_a, image_b, timestep, num_points, seed, steps, shared_noise],
        outputs=[gallery, strip],
    )


def build_edit_tab(pipeline: DDPMPaperPipeline) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            editor = gr.ImageEditor(
                label="Image; paint over the region to regenerate",
                type="pil",
                image_mode="RGBA",
                sources=["upload", "clipboard"],
                brush=gr.Brush(colors=["#ff2d55", "#ffffff", "#000000"], default_size=3),
                canvas_size=(224, 224),
                height=340,
                elem_id="edit-editor",
            )
            mode = gr.Radio(list(MODES), value=INPAINT, label="Edit", elem_id="edit-mode")
            strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.05, label="Strength (image-to-image)")
            strength.preprocess = require_strength
            steps = whole_number_slider("Inference steps", 1, MAX_EDIT_STEPS, DEFAULT_EDIT_STEPS, elem_id="edit-steps")
            seed = seed_input("Seed", elem_id="edit-seed")
            button = gr.Button("Edit", variant="primary", elem_id="edit-button")
            gr.Examples(
                examples=digit_examples(),
                inputs=[editor],
                label="Examples: MNIST test digits",
                elem_id="edit-examples",
            )
        with gr.Column(scale=2):
            with gr.Row():
                seen = image_output("Input as the model sees it", elem_id="edit-input")
                result = image_output("Edited", elem_id="edit-result")
            strip = strip_image(elem_id="edit-trajectory")
    gr.Markdown(edit_how_it_works(pipeline), elem_classes=["how-it-works"])

    def run(value: Any, chosen: str, s: float, n: int, seed_value: int):
        return edit(pipeline, value, chosen, s, n, seed_value)

    on_click(button, run, "edit", inputs=[editor, mode, strength, steps, seed], outputs=[seen, result, strip])


def save_pil_to_cache_atomically(
    img: PIL.Image.Image, cache_dir: str, name: str = "image", format: str = "webp"
) -> str:
    """gradio's `processing_utils.save_pil_to_cache`, but never rewriting a file in place.

    gradio names a cached output by the hash of its bytes and rewrites it on every request, so when two requests give
    the same image (two users segmenting the same example) one response can send a file the other is half-way through
    rewriting: the client gets "peer closed connection without sending complete message body" (gradio 6.31). Here an
    existing file (same hash, so same bytes) is left alone and a new one appears complete, by rename.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if not path.is_file():
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return str(path)


def build_demo(
    swin_fpn_model: str | os.PathLike | None = None,
    ddpm_model: str | os.PathLike | None = None,
) -> gr.Blocks:
    """Loads both models and builds the queued Space.

    Args:
        swin_fpn_model: segmentation model folder or Hub repo id; default `$SWIN_FPN_MODEL`, else
            `demo_models/swin-fpn-digit-scenes`.
        ddpm_model: `DDPMPaperPipeline` folder or Hub repo id; default `$DDPM_MODEL`, else `demo_models/ddpm-mnist`.

    Raises:
        ModelLoadError: a model is missing or unreadable (the message says to run `make demo-models`).
    """
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically  # see its docstring: a gradio race
    segmenter = load_segmenter(model_location(swin_fpn_model, SWIN_FPN_MODEL_ENV, DEFAULT_SWIN_FPN_MODEL))
    ddpm_source = model_location(ddpm_model, DDPM_MODEL_ENV, DEFAULT_DDPM_MODEL)
    pipeline = load_ddpm(ddpm_source)
    with gr.Blocks(title="Swin + FPN segmentation · DDPM generation") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("Segment", id="segment"):
                segment_tab = build_segment_tab(segmenter)
            with gr.Tab("Generate", id="generate"):
                gallery, segment_these = build_generate_tab(pipeline)
                connect_segment_these(segment_these, gallery, tabs, segment_tab, segmenter)
            with gr.Tab("Forward process", id="forward"):
                build_forward_tab(pipeline.scheduler)
            with gr.Tab("Interpolate", id="interpolate"):
                build_interpolate_tab(pipeline)
            with gr.Tab("Edit", id="edit"):
                build_edit_tab(pipeline)
        gr.Markdown(f"Models: segmentation `{model_name(segmenter.source)}` · diffusion `{model_name(ddpm_source)}`")
    demo.queue(default_concurrency_limit=INFERENCE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return demo


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas (as MALLOC_ARENA_MAX does); False where that is not glibc.

    glibc gives threads that allocate at the same time their own arenas (up to 8 per core) and keeps freed memory in
    each; with gradio's worker threads the Space's resident memory kept rising from round to round of load: 817 to
    1071 MiB over 5 rounds of 150 requests (benchmarks/bench_space_load.py), 771 to 831 MiB with this cap set at
    start-up, flat at ~812 MiB from the second round with MALLOC_ARENA_MAX=2 in the environment (arenas created while
    importing are not capped by a later call; set the variable where you can).
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main() -> int:
    """Serves the Space on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860)."""
    limit_malloc_arenas()
    try:
        demo = build_demo()
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    demo.launch(**launch_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
