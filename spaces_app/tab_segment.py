"""The Segment tab: the predicted classes of an image as an overlay, a class-id mask and a legend.

Two routes: `/segment` takes an uploaded image; `/segment_drawing` takes the sketchpad's value (a drawing, white
strokes on black or black strokes on white), composited onto a solid ground and predicted as one whole image at the
model's training size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_IMAGE_SIDE, check_pixel_count, prepare_image

from hf_swin_ddpm.imaging import is_background

OVERLAY_OPACITY = 0.55
LEGEND_HEADERS = ["class id", "class", "colour", "pixels (%)"]
LEGEND_ALL_CLASSES_UP_TO = 12  # with more classes the legend lists only those present
DRAWING_SIDE = 384  # the sketchpad's canvas; 4x the demo segmenter's 96x96 training canvases
DRAWING_BRUSH_SIZE = 8  # strokes about 16 pixels wide: 4 at 96x96, an MNIST stroke on a 40-pixel digit
WHITE_ON_BLACK = "white on black"
BLACK_ON_WHITE = "black on white"
INKS = {WHITE_ON_BLACK: ((255, 255, 255), (0, 0, 0)), BLACK_ON_WHITE: ((0, 0, 0), (255, 255, 255))}  # ink, ground
SEMANTIC_FPN_HEAD = """A **feature pyramid (FPN)** merges them top-down, and the **Semantic FPN head** (Kirillov et al. 2019) brings every
level to 1/4 scale, sums them and predicts one class per pixel, upsampled bilinearly to the image."""
UPERNET_HEAD = """The **UperNet head** (Xiao et al. 2018), the head of the Swin paper's ADE20K results{source}, pools the last map
at 1, 2, 3 and 6 cells (pyramid pooling), merges the levels top-down as a feature pyramid, fuses all of them at 1/4
scale and predicts one class per pixel, upsampled bilinearly to the image."""


@dataclass
class Segmenter:
    """A semantic segmentation model with its image processor and class colours."""

    model: torch.nn.Module
    processor: Any
    id2label: dict[int, str]
    colours: np.ndarray  # (num_labels, 3) uint8, from hf_swin_ddpm.imaging.class_colours
    source: str


def training_size(processor) -> tuple[int, int] | None:
    """(height, width) the image processor resizes to, or None when it does not resize to a fixed size."""
    size = getattr(processor, "size", None) or {}
    if not getattr(processor, "do_resize", True) or "height" not in size or "width" not in size:
        return None
    return int(size["height"]), int(size["width"])


def uses_slide_inference(model, processor, image: PIL.Image.Image) -> bool:
    """Whether `image` is larger than the training size on either side and the model can slide."""
    size = training_size(processor)
    return hasattr(model, "inference") and size is not None and (image.height > size[0] or image.width > size[1])


@torch.inference_mode()
def predict_classes(
    model, processor, image: PIL.Image.Image, output_size: tuple[int, int] | None = None
) -> np.ndarray:
    """The class id of every pixel of an RGB image, (H, W) int64 (or `output_size` (H, W) on the resize path).

    An image no larger than the model's training size (the image processor's `size`) is resized to it, predicted in
    one forward and the logits resized back; a larger one (uploads stay bounded by `MAX_IMAGE_SIDE`) keeps its
    resolution and is predicted with `SwinFPNForSegmentation.inference(mode="slide")`: windows of the training size
    every two thirds of it, their logits averaged with a count map, so memory stays that of one training-size forward
    and small objects are not lost to a downscale. Models without `inference` always take the resize path.
    """
    if not uses_slide_inference(model, processor, image):
        inputs = processor(images=image, return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"])
        target_size = [output_size or (image.height, image.width)]
        return processor.post_process_semantic_segmentation(outputs, target_sizes=target_size)[0].numpy()
    pixel_values = processor(images=image, do_resize=False, return_tensors="pt")["pixel_values"]
    logits = model.inference(pixel_values.to(model.dtype), mode="slide", crop_size=training_size(processor))
    return logits[0].argmax(dim=0).numpy()


def mask_image(classes: np.ndarray, colours: np.ndarray) -> PIL.Image.Image:
    """The class map as a palette PNG image: pixel value = class id, shown in the class colours.

    With more than 256 classes it is a 16-bit greyscale image (pixel value = class id).
    """
    if len(colours) > 256:
        return PIL.Image.fromarray(classes.astype(np.uint16))
    mask = PIL.Image.fromarray(classes.astype(np.uint8))
    mask.putpalette(colours.flatten().tolist())  # L -> P: the values stay the class ids
    return mask


def overlay_image(image: PIL.Image.Image, classes: np.ndarray, segmenter: Segmenter) -> PIL.Image.Image:
    """The image with each non-background class tinted in its colour."""
    pixels = np.asarray(image, dtype=np.float32)
    tint = segmenter.colours[classes].astype(np.float32)
    background_ids = [i for i, name in segmenter.id2label.items() if is_background(name)]
    opacity = np.where(np.isin(classes, background_ids), 0.0, OVERLAY_OPACITY)[..., None]
    blended = pixels * (1.0 - opacity) + tint * opacity
    return PIL.Image.fromarray(np.round(blended).astype(np.uint8))


def colour_swatch(colour: Sequence[int]) -> str:
    hex_colour = "#{:02x}{:02x}{:02x}".format(*colour)
    return f'<span class="swatch" style="background:{hex_colour}"></span> {hex_colour}'


def legend_rows(classes: np.ndarray, segmenter: Segmenter) -> list[list[Any]]:
    """[class id, name, colour swatch, share of pixels in %] per class (all of them, or those present when the
    model has many classes, largest first)."""
    counts = np.bincount(classes.ravel(), minlength=len(segmenter.colours))
    shares = 100.0 * counts / max(int(counts.sum()), 1)
    if len(segmenter.id2label) <= LEGEND_ALL_CLASSES_UP_TO:
        class_ids = sorted(segmenter.id2label)
    else:
        class_ids = sorted(np.flatnonzero(counts), key=lambda i: -counts[i])
    return [
        [
            int(i),
            segmenter.id2label.get(int(i), f"class {i}"),
            colour_swatch(segmenter.colours[i]),
            round(float(shares[i]), 2),
        ]
        for i in class_ids
    ]


def segment(
    segmenter: Segmenter, image: PIL.Image.Image | np.ndarray | None
) -> tuple[PIL.Image.Image, PIL.Image.Image, list[list[Any]]]:
    """The `/segment` route: overlay, class-id mask (palette PNG) and legend for one image."""
    rgb = prepare_image(image)
    classes = predict_classes(segmenter.model, segmenter.processor, rgb)
    return (
        overlay_image(rgb, classes, segmenter),
        mask_image(classes, segmenter.colours),
        legend_rows(classes, segmenter),
    )


def blank_drawing(ink: str = WHITE_ON_BLACK) -> dict[str, Any]:
    """The sketchpad's value for an empty canvas of `ink`'s ground colour (opaque, so strokes of either colour show)."""
    _, ground = INKS[ink]
    return {"background": PIL.Image.new("RGB", (DRAWING_SIDE, DRAWING_SIDE), ground), "layers": [], "composite": None}


def _as_rgba(image: Any) -> PIL.Image.Image | None:
    if image is None:
        return None
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    if not isinstance(image, PIL.Image.Image):
        raise gr.Error("Could not read the drawing; draw on the canvas or upload an image in the Upload tab.")
    check_pixel_count(image, "the drawing")
    return image.convert("RGBA")


def drawing_image(value: Any) -> PIL.Image.Image:
    """The sketchpad's value (background, layers, composite) as an opaque RGB image.

    The editor's composite is used when it is there, else the background with the layers on top. Where the canvas is
    transparent (a sketchpad without background: gradio's default, or after the trash button) the strokes are put
    on a solid ground of the opposite brightness to their ink, black under light strokes and white under dark ones,
    so that white-on-black and black-on-white drawings both come out as the model was trained on them.
    """
    if not isinstance(value, dict):
        raise gr.Error("Draw one or more digits on the canvas first.")
    image = _as_rgba(value.get("composite"))
    if image is None:
        layers = [
            layer
            for layer in map(_as_rgba, [value.get("background"), *(value.get("layers") or [])])
            if layer is not None
        ]
        if not layers:
            raise gr.Error("Draw one or more digits on the canvas first.")
        image = PIL.Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
        for layer in layers:
            image = PIL.Image.alpha_composite(image, layer.resize(image.size, PIL.Image.Resampling.NEAREST))
    pixels = np.asarray(image)
    alpha = pixels[:, :, 3]
    if not alpha.any() or (alpha.min() == 255 and (pixels[:, :, :3] == pixels[0, 0, :3]).all()):
        raise gr.Error("Draw one or more digits on the canvas first.")
    if alpha.min() < 255:
        painted = pixels[alpha > 0, :3].astype(np.float64)
        light_ink = (painted @ np.array([0.299, 0.587, 0.114])).mean() >= 128
        ground = PIL.Image.new("RGBA", image.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(ground, image)
    return image.convert("RGB")


def segment_drawing(segmenter: Segmenter, value: Any) -> tuple[PIL.Image.Image, PIL.Image.Image, list[list[Any]]]:
    """The `/segment_drawing` route: overlay, class-id mask and legend for the sketchpad's drawing.

    A drawing is one scene, not a photograph to tile: it is reduced (area-averaged) to the model's training size,
    predicted in one forward, and the logits are resized back to the drawing's size (bilinear), so that digits drawn
    at a third of the canvas reach the model at the scale of its training digits.
    """
    drawing = drawing_image(value)
    size = training_size(segmenter.processor)
    model_input = drawing if size is None else drawing.resize((size[1], size[0]), PIL.Image.Resampling.BOX)
    classes = predict_classes(segmenter.model, segmenter.processor, model_input, (drawing.height, drawing.width))
    return (
        overlay_image(drawing, classes, segmenter),
        mask_image(classes, segmenter.colours),
        legend_rows(classes, segmenter),
    )


def segment_how_it_works(segmenter: Segmenter) -> str:
    config = segmenter.model.config
    window = getattr(config, "window_size", 7)
    patch = getattr(config, "patch_size", 4)
    classes = ", ".join(segmenter.id2label[i] for i in sorted(segmenter.id2label))
    stem = (
        " (this model embeds them with a small convolutional stem, Xiao et al. 2021, which trains faster from scratch)"
        if getattr(config, "patch_embedding_type", "linear") == "convolutional"
        else ""
    )
    head = (
        UPERNET_HEAD.format(
            source=f" (converted from `{config.backbone_checkpoint}`)" if config.backbone_checkpoint else ""
        )
        if getattr(config, "decode_head_type", None) == "upernet"
        else SEMANTIC_FPN_HEAD
    )
    return f"""
### How it works
**Swin Transformer** (Liu et al. 2021) cuts the image into {patch}×{patch} patches{stem} and computes self-attention only inside
non-overlapping {window}×{window} windows, so its cost grows **linearly** with the number of pixels (global attention,
as in ViT, grows quadratically). Every second block **shifts the window grid** by {window // 2} patches, so
information flows across window borders; patch merging halves the resolution between stages, which yields feature
maps at 1/4, 1/8, 1/16 and 1/32 of the input, like a CNN.
{head}

Classes: {classes}. The mask is a PNG whose pixel values are the class ids (shown in the legend colours).
Images of any size and mode are accepted; the longer side is reduced to {MAX_IMAGE_SIDE} pixels first, and images
larger than the model's training size are predicted with sliding windows of that size (logits averaged).
A drawing is put on a solid ground (black under white strokes, white under black ones), reduced to the training
size as a whole and predicted in one pass.
"""
