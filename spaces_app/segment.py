"""The Segment tab's prediction for images of any size: slide inference above the model's training size.

`predict_classes(model, processor, image)` is what `spaces_app/app.py`'s `/segment` route computes, as a pure
function (an RGB PIL image in, the (H, W) class map out): an image no larger than the model's training size (the
image processor's `size`) is resized to it, predicted in one forward and the logits resized back, as before; a larger
one (the uploads stay bounded by the app's `MAX_IMAGE_SIDE`) keeps its resolution and is predicted with
`SwinFPNForSegmentation.inference(mode="slide")`, windows of the training size every two thirds of it, their logits
averaged with a count map, so memory stays that of one training-size forward and small objects are not lost to a
downscale. Models without `inference` (other transformers segmenters) always take the resize path.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch


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
    """The class id of every pixel of an RGB image, (H, W) int64, by slide inference when the image is larger than
    the model's training size and by resize-to-training-size otherwise."""
    if not uses_slide_inference(model, processor, image):
        inputs = processor(images=image, return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"])
        target_size = [(image.height, image.width)]
        return processor.post_process_semantic_segmentation(outputs, target_sizes=target_size)[0].numpy()
    pixel_values = processor(images=image, do_resize=False, return_tensors="pt")["pixel_values"]
    logits = model.inference(pixel_values.to(model.dtype), mode="slide", crop_size=training_size(processor))
    return logits[0].argmax(dim=0).numpy()
