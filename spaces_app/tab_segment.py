"""The Segment tab (`/segment`): the predicted classes of an image as an overlay, a class-id mask and a legend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from image_inputs import MAX_IMAGE_SIDE, prepare_image

from hf_swin_ddpm.imaging import is_background

OVERLAY_OPACITY = 0.55
LEGEND_HEADERS = ["class id", "class", "colour", "pixels (%)"]
LEGEND_ALL_CLASSES_UP_TO = 12  # with more classes the legend lists only those present
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
def predict_classes(model, processor, image: PIL.Image.Image) -> np.ndarray:
    """The class id of every pixel of an RGB image, (H, W) int64.

    An image no larger than the model's training size (the image processor's `size`) is resized to it, predicted in
    one forward and the logits resized back; a larger one (uploads stay bounded by `MAX_IMAGE_SIDE`) keeps its
    resolution and is predicted with `SwinFPNForSegmentation.inference(mode="slide")`: windows of the training size
    every two thirds of it, their logits averaged with a count map, so memory stays that of one training-size forward
    and small objects are not lost to a downscale. Models without `inference` always take the resize path.
    """
    if not uses_slide_inference(model, processor, image):
        inputs = processor(images=image, return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"])
        target_size = [(image.height, image.width)]
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
"""
