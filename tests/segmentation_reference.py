"""mmsegmentation's test protocol written out independently of `hf_swin_ddpm.evaluation`, as the expected values of
the evaluation tests: the keep-ratio resize (mmseg ``Resize(scale, keep_ratio=True)``), slide inference
(``EncoderDecoder.slide_inference``), multi-scale + flip TTA (``SegTTAModel``: the views' softmax averaged), the
logits resized to each label map's size, and ``IoUMetric`` in numpy. `RecordingSwinFPN` is a real
`SwinFPNForSegmentation` that keeps every input its forward sees, so a test can compare what reached the model."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hf_swin_ddpm import SwinFPNForSegmentation

IGNORE = 255


class RecordingSwinFPN(SwinFPNForSegmentation):
    """The real model; `inputs` collects the `pixel_values` of every forward (the windows and views it was given)."""

    def __init__(self, config):
        super().__init__(config)
        self.inputs: list[torch.Tensor] = []

    def forward(self, pixel_values=None, *args, **kwargs):
        self.inputs.append(pixel_values.detach().clone())
        return super().forward(pixel_values, *args, **kwargs)


def recording_copy(model: SwinFPNForSegmentation) -> RecordingSwinFPN:
    """A `RecordingSwinFPN` with `model`'s config and weights, in eval mode."""
    copy = RecordingSwinFPN(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def keep_ratio_hw(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmseg ``rescale_size``: the factor min(long / long side, short / short side), sizes rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def normalised_pixels(image: Image.Image, scale: tuple[int, int], mean, std) -> torch.Tensor:
    """(1, 3, h, w): the image resized (PIL bilinear) keeping its aspect ratio to `scale`, then normalised."""
    height, width = keep_ratio_hw(image.height, image.width, scale)
    array = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    array = (array / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def slide_logits(model, pixels: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """mmseg ``slide_inference``, line by line: the grid, windows moved back to end at the border, the count map."""
    _, _, h_img, w_img = pixels.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = count = None
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            crop_logits = model(pixel_values=pixels[:, :, y1:y2, x1:x2]).logits
            if preds is None:
                preds = torch.zeros(1, crop_logits.shape[1], h_img, w_img)
                count = torch.zeros(1, 1, h_img, w_img)
            preds[:, :, y1:y2, x1:x2] += crop_logits
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@torch.no_grad()
def protocol_prediction(
    model,
    pixels: torch.Tensor,
    label_size: tuple[int, int],
    mode: str = "whole",
    crop: int | None = None,
    stride: int | None = None,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
) -> np.ndarray:
    """The class map at `label_size`: every (scale, flip) view's logits resized to the label size (bilinear),
    mirrored back, and with several views the argmax of their summed softmax (mmseg ``SegTTAModel``)."""
    height, width = pixels.shape[-2:]
    views = []
    for scale in scales:
        for flipped in (False, True) if flip else (False,):
            view = pixels.flip(-1) if flipped else pixels
            if scale != 1.0:
                size = (int(height * scale + 0.5), int(width * scale + 0.5))
                view = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
            logits = slide_logits(model, view, crop, stride) if mode == "slide" else model(pixel_values=view).logits
            logits = F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False)
            views.append(logits.flip(-1) if flipped else logits)
    if len(views) == 1:
        return views[0][0].argmax(0).numpy()
    return sum(view.softmax(dim=1) for view in views)[0].argmax(0).numpy()


def protocol_predictions(model, dataset, scale, mean, std, **protocol) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(predictions, labels) of every ``image`` + ``annotation`` example, at the label maps' own sizes."""
    predictions, labels = [], []
    for example in dataset:
        label = np.asarray(example["annotation"]).astype(np.int64)
        pixels = normalised_pixels(example["image"], scale, mean, std)
        predictions.append(protocol_prediction(model, pixels, label.shape, **protocol))
        labels.append(label)
    return predictions, labels


def numpy_metrics(predictions: list[np.ndarray], labels: list[np.ndarray], num_labels: int) -> dict[str, object]:
    """mmseg IoUMetric, written independently: a confusion matrix over the non-ignored pixels."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)  # [label, prediction]
    for prediction, label in zip(predictions, labels, strict=True):
        keep = label != IGNORE
        np.add.at(confusion, (label[keep], prediction[keep]), 1)
    intersection = np.diag(confusion).astype(float)
    predicted, labelled = confusion.sum(0).astype(float), confusion.sum(1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersection / (predicted + labelled - intersection)
        acc = intersection / labelled
        dice = 2 * intersection / (predicted + labelled)
        precision = intersection / predicted
        fscore = 2 * precision * acc / (precision + acc)
    return {
        "aAcc": intersection.sum() / labelled.sum(),
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "mDice": np.nanmean(dice),
        "mFscore": np.nanmean(fscore),
        "mPrecision": np.nanmean(precision),
        "IoU": iou,
        "Acc": acc,
    }
