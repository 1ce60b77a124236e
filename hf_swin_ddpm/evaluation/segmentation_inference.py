"""Segmentation inference at any image size, as mmsegmentation tests segmenters: `whole` and `slide` modes and
multi-scale + flip test-time augmentation. `SwinFPNForSegmentation.inference` is the entry point; the evaluation
protocol that uses it (resizing, metrics) is in `evaluation.segmentation`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..swin_fpn.modeling_swin_fpn import check_pixel_values

if TYPE_CHECKING:
    import numpy as np

    from ..swin_fpn.modeling_swin_fpn import SwinFPNForSegmentation


@torch.no_grad()
def inference(
    model: SwinFPNForSegmentation,
    pixel_values: torch.Tensor,
    mode: str = "whole",
    output_size: tuple[int, int] | None = None,
    crop_size: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    scales: tuple[float, ...] | list[float] = (1.0,),
    flip: bool = False,
    window_batch_size: int = 1,
) -> torch.Tensor:
    """`model`'s logits (batch, num_labels, *output_size) for normalised `pixel_values` of any size, as mmseg's
    test modes give them; `SwinFPNForSegmentation.inference` calls it.

    `mode="whole"` runs the model on the full image. `mode="slide"` runs it on `crop_size` windows placed every
    `stride` pixels (the last window of a row or column is moved back to end at the image border) and averages
    the logits of overlapping windows with a count map: memory is bounded by the crop, whatever the image size.
    `crop_size` defaults to `config.image_size` and `stride` to two thirds of the crop (512 -> 341, mmseg's
    ADE20K setting); both take an int or (height, width). `window_batch_size` windows go through the model in one
    forward (the same logits, up to float rounding; faster where one window leaves the hardware idle).

    Test-time augmentation: each of `scales` resizes the input (bilinear) by that ratio, `flip=True` adds the
    horizontal mirror of every scale. Every view's logits are resized (bilinear) to `output_size` (default: the
    input's size), flipped views are mirrored back, and the views' **softmax probabilities** are averaged, as
    mmseg's `SegTTAModel` (and the Swin repo's `aug_test`) do; the result is returned as log-probabilities, so
    its softmax is that average and its argmax the TTA prediction. With one view (the default) the model's raw
    logits are returned, resized to `output_size`.
    """
    # 1. the arguments checked, with their defaults
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference: mode must be 'whole' or 'slide', got {mode!r}.")
    check_pixel_values(pixel_values, model.config, whole_forward=False)
    scales = tuple(float(scale) for scale in scales)
    if not scales or any(not (0.0 < scale < math.inf) for scale in scales):
        raise ValueError(f"inference: scales must be positive finite ratios, got {scales!r}.")
    height, width = pixel_values.shape[-2:]
    output_size = (int(height), int(width)) if output_size is None else tuple(int(s) for s in output_size)
    if len(output_size) != 2 or min(output_size) < 1:
        raise ValueError(f"inference: output_size must be (height, width) >= 1, got {output_size!r}.")
    crop = _pair(crop_size if crop_size is not None else model.config.image_size, "crop_size")
    window_stride = _pair(stride if stride is not None else tuple(max(1, 2 * c // 3) for c in crop), "stride")
    if isinstance(window_batch_size, bool) or not isinstance(window_batch_size, int) or window_batch_size < 1:
        raise ValueError(f"inference: window_batch_size must be a positive int, got {window_batch_size!r}.")
    if any(s > c for s, c in zip(window_stride, crop)):
        raise ValueError(
            f"inference: stride {window_stride} exceeds crop_size {crop}, which would leave pixels between the "
            "windows unpredicted; use a stride <= the crop size."
        )
    # 2. each view's logits at the output size; one view: the model's logits
    views = [(scale, flipped) for scale in scales for flipped in ((False, True) if flip else (False,))]
    total = None
    for scale, flipped in views:
        slide = (crop, window_stride, window_batch_size) if mode == "slide" else None
        logits = _view_logits(model, pixel_values, scale, flipped, output_size, slide)
        if len(views) == 1:
            return logits
        # 3. several views: their softmax probabilities averaged
        probabilities = logits.float().softmax(dim=1)
        total = probabilities if total is None else total + probabilities
    return (total / len(views)).log()


def _view_logits(
    model: SwinFPNForSegmentation,
    pixel_values: torch.Tensor,
    scale: float,
    flipped: bool,
    output_size: tuple[int, int],
    slide: tuple[tuple[int, int], tuple[int, int], int] | None,
) -> torch.Tensor:
    """The logits of one test-time view (`pixel_values` resized by `scale`, mirrored if `flipped`), resized to
    `output_size` and mirrored back; `slide` is (crop size, stride, window batch size) in slide mode, None in whole
    mode."""
    height, width = pixel_values.shape[-2:]
    view = pixel_values.flip(-1) if flipped else pixel_values
    if scale != 1.0:
        size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        view = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
    if slide is not None:
        logits = slide_inference(model, view, *slide)
    else:
        logits = model(pixel_values=view, return_dict=True).logits
    if tuple(logits.shape[-2:]) != output_size:
        logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
    return logits.flip(-1) if flipped else logits


def slide_inference(
    model: SwinFPNForSegmentation,
    pixel_values: torch.Tensor,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    window_batch_size: int = 1,
) -> torch.Tensor:
    """mmseg's `slide_inference`: logits of `crop_size` windows every `stride` pixels, summed into place and
    divided by the count map (how many windows cover each pixel). (batch, num_labels, height, width). The windows
    all have one size (the last of a row or column moved back inside the image), so `window_batch_size` of them go
    through the model stacked along the batch."""
    batch, _, height, width = pixel_values.shape
    window = (min(crop_size[0], height), min(crop_size[1], width))
    origins = window_origins((height, width), crop_size, stride)
    logits_sum = count = None
    for start in range(0, len(origins), window_batch_size):
        group = origins[start : start + window_batch_size]
        crops = torch.cat([pixel_values[..., top : top + window[0], left : left + window[1]] for top, left in group])
        group_logits = model(pixel_values=crops, return_dict=True).logits.split(batch)
        if logits_sum is None:
            logits_sum = group_logits[0].new_zeros(batch, group_logits[0].shape[1], height, width)
            count = group_logits[0].new_zeros(1, 1, height, width)
        for (top, left), crop_logits in zip(group, group_logits, strict=True):
            logits_sum[..., top : top + window[0], left : left + window[1]] += crop_logits
            count[..., top : top + window[0], left : left + window[1]] += 1
    return logits_sum.div_(count)


def _pair(value, name: str) -> tuple[int, int]:
    """An int or (height, width) of positive ints as (height, width)."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(
            f"inference: {name} must be a positive int or (height, width) of positive ints, got {value!r}."
        )
    return int(pair[0]), int(pair[1])


def window_origins(
    size: tuple[int, int], crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners of mmseg's sliding windows: ceil((size - crop) / stride) + 1 per axis, the last one moved back
    to end at the border; a crop larger than the image gives one window, the whole image."""
    origins = []
    for axis in range(2):
        grids = max(size[axis] - crop_size[axis] + stride[axis] - 1, 0) // stride[axis] + 1
        origins.append(
            [max(min(i * stride[axis] + crop_size[axis], size[axis]) - crop_size[axis], 0) for i in range(grids)]
        )
    return [(top, left) for top in origins[0] for left in origins[1]]


@torch.no_grad()
def segment_large(
    model: SwinFPNForSegmentation,
    image,
    crop_size: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    window_batch_size: int = 1,
    *,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    progress_bar: bool = False,
) -> np.ndarray:
    """The label map (height, width) of an image of any size by slide inference, in memory bounded by a band of rows:
    the argmax of :func:`inference` with `mode="slide"`, without ever holding the image's float logits.

    `image` is a PIL image (converted to RGB) or a uint8 array (height, width, channels), segmented at its own size;
    each band of rows is normalised when it is read, as the image processor does: ``(x / 255 - mean) / std``
    (default: ImageNet's mean and std, the image processor's). The windows are mmseg's (:func:`window_origins`:
    `crop_size`, default `config.image_size`, every `stride`, default two thirds of the crop), taken band by band
    (one row of windows, top to bottom), `window_batch_size` windows of a band per forward, left to right. Only the
    pixels still open are accumulated, per column segment (between consecutive window edges): the band's rows in the
    segments its current window covers, and the rows the next band overlaps (crop - stride rows; more before the
    last band, which is moved back to the border) in the segments already passed, carried to the next band and freed
    as it takes them. A segment no further window of the band covers is closed: its finished rows divided by their
    window count and their argmax written into the label map. Every pixel's logits are summed in the order slide inference sums them (row-major windows, from zero), so
    the labels equal the argmax of ``inference(mode="slide")`` exactly, ties included (torch's argmax takes the first
    maximum), as long as the forwards give the same logits: with a `window_batch_size` of 1, or the number of windows
    of a band (the same batches there). Peak memory: about 4 * num_labels * width * (the most rows carried, crop -
    stride or, before the last band, up to crop - 1) bytes, plus one band's rows over a window and a window batch's
    logits, against 4 * num_labels * height * width for :func:`inference`; the label map is 1 (2) bytes a pixel.

    Returns uint8 class ids for up to 256 classes, uint16 above. `progress_bar` shows a tqdm bar of the windows.
    """
    import numpy as np
    from tqdm.auto import tqdm
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim != 3 or array.dtype != np.uint8 or min(array.shape) < 1:
        raise ValueError(
            f"segment_large: expected a PIL image or a uint8 array (height, width, channels), got {array.dtype} "
            f"{array.shape}."
        )
    if array.shape[2] != model.config.num_channels:
        raise ValueError(
            f"segment_large: the image has {array.shape[2]} channels, the model takes {model.config.num_channels}."
        )
    height, width = array.shape[:2]
    crop = _pair(crop_size if crop_size is not None else model.config.image_size, "crop_size")
    window_stride = _pair(stride if stride is not None else tuple(max(1, 2 * c // 3) for c in crop), "stride")
    if isinstance(window_batch_size, bool) or not isinstance(window_batch_size, int) or window_batch_size < 1:
        raise ValueError(f"segment_large: window_batch_size must be a positive int, got {window_batch_size!r}.")
    if any(s > c for s, c in zip(window_stride, crop)):
        raise ValueError(f"segment_large: stride {window_stride} exceeds crop_size {crop}; use a stride <= the crop.")
    window = (min(crop[0], height), min(crop[1], width))
    origins = window_origins((height, width), crop, window_stride)
    tops = sorted({top for top, _ in origins})
    lefts = sorted({left for _, left in origins})
    # every pixel's window count is its row's count times its column's (the windows form a grid)
    row_count = torch.zeros(height)
    col_count = torch.zeros(width)
    for top in tops:
        row_count[top : top + window[0]] += 1
    for left in lefts:
        col_count[left : left + window[1]] += 1
    num_labels = model.config.num_labels
    labels = np.zeros((height, width), dtype=np.uint8 if num_labels <= 256 else np.uint16)
    normalise = (
        torch.tensor(IMAGENET_DEFAULT_MEAN if mean is None else mean, dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(IMAGENET_DEFAULT_STD if std is None else std, dtype=torch.float32).view(-1, 1, 1),
    )

    def emit(sums: torch.Tensor, top: int, left: int) -> None:
        """Finished sums (num_labels, rows, columns) at (top, left) into the label map."""
        rows, columns = sums.shape[1:]
        count = row_count[top : top + rows, None] * col_count[None, left : left + columns]
        labels[top : top + rows, left : left + columns] = (sums / count).argmax(dim=0).numpy()

    # column segments: between consecutive window edges, each covered by one fixed set of windows of a band
    edges = sorted({0, width, *lefts, *(left + window[1] for left in lefts)})
    segments = list(zip(edges[:-1], edges[1:], strict=True))
    carry: list[torch.Tensor | None] = [None] * len(segments)  # per segment: the sums from the bands above

    def close(open_sums: dict[int, torch.Tensor], segment: int, top: int, finished: int) -> None:
        """Emit the `finished` rows of a segment no further window of the band covers; carry the others."""
        sums = open_sums.pop(segment)
        emit(sums[:, :finished], top, segments[segment][0])
        carry[segment] = sums[:, finished:].clone() if finished < window[0] else None

    with tqdm(total=len(origins), desc="segment", unit="window", disable=not progress_bar) as bar:
        for index, top in enumerate(tops):
            # 1. the band's rows, normalised; it finishes rows [top, next_top), the next band overlaps the rest
            band = torch.from_numpy(np.array(array[top : top + window[0]])).permute(2, 0, 1).float()
            band = band.div_(255.0).sub_(normalise[0]).div_(normalise[1])[None]
            next_top = tops[index + 1] if index + 1 < len(tops) else top + window[0]
            finished = next_top - top
            open_sums: dict[int, torch.Tensor] = {}  # segment -> sums of the band's rows, while windows add to it
            next_segment = 0  # the segments before it are closed
            # 2. the band's windows, left to right, each added segment by segment
            for start in range(0, len(lefts), window_batch_size):
                group = lefts[start : start + window_batch_size]
                crops = torch.cat([band[..., left : left + window[1]] for left in group])
                logits = model(pixel_values=crops.to(device=model.device, dtype=model.dtype), return_dict=True)
                for left, crop_logits in zip(group, logits.logits.float().cpu(), strict=True):
                    while segments[next_segment][1] <= left:  # left of this window: final
                        close(open_sums, next_segment, top, finished)
                        next_segment += 1
                    segment = next_segment
                    while segment < len(segments) and segments[segment][1] <= left + window[1]:
                        begin, end = segments[segment]
                        if segment not in open_sums:
                            open_sums[segment] = _opened_sums(carry[segment], num_labels, window[0], end - begin)
                            carry[segment] = None
                        open_sums[segment] += crop_logits[..., begin - left : end - left]
                        segment += 1
                bar.update(len(group))
            for segment in sorted(open_sums):
                close(open_sums, segment, top, finished)
    return labels


def _opened_sums(carried: torch.Tensor | None, num_labels: int, rows: int, columns: int) -> torch.Tensor:
    """A band's sums (num_labels, rows, columns) for one column segment before its windows: the bands above's sums
    of its first rows (`carried`), zero below."""
    sums = torch.zeros(num_labels, rows, columns)
    if carried is not None:
        sums[:, : carried.shape[1]] = carried
    return sums
