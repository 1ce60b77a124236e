"""SwinFPNForSegmentation.inference: whole and slide modes (mmseg's count map), multi-scale and flip TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from factories import TINY_SWIN_FPN
from transformers.modeling_outputs import SemanticSegmenterOutput

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation


def reference_windows(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis, written independently of the model: every stride, plus one ending at the border."""
    if crop >= size:
        return [0]
    return sorted(set(range(0, size - crop, stride)) | {size - crop})


class PositionLogits(SwinFPNForSegmentation):
    """A model whose logits depend only on the position within its input: class c at (y, x) gets c + 10 y + 0.1 x."""

    def forward(self, pixel_values, labels=None, return_dict=True, **kwargs):
        height, width = pixel_values.shape[-2:]
        rows = torch.arange(height, dtype=torch.float64)[:, None] * 10.0
        cols = torch.arange(width, dtype=torch.float64)[None, :] * 0.1
        classes = torch.arange(self.config.num_labels, dtype=torch.float64)[:, None, None]
        logits = (classes + rows + cols).expand(pixel_values.shape[0], -1, -1, -1)
        return SemanticSegmenterOutput(logits=logits.clone())


class PixelwiseLinear(SwinFPNForSegmentation):
    """A flip-equivariant model: a 1x1 convolution of the pixels."""

    def __init__(self, config):
        super().__init__(config)
        self.pixelwise = torch.nn.Conv2d(config.num_channels, config.num_labels, kernel_size=1)

    def forward(self, pixel_values, labels=None, return_dict=True, **kwargs):
        return SemanticSegmenterOutput(logits=self.pixelwise(pixel_values))


@torch.no_grad()
def test_slide_with_a_crop_covering_the_image_equals_whole(tiny_swin_fpn):
    pixel_values = torch.randn(2, 3, 40, 56)
    whole = tiny_swin_fpn.inference(pixel_values, mode="whole")
    assert torch.equal(whole, tiny_swin_fpn(pixel_values).logits)
    for crop in [(40, 56), 64, (100, 57)]:
        assert torch.equal(tiny_swin_fpn.inference(pixel_values, mode="slide", crop_size=crop, stride=16), whole)


@pytest.mark.parametrize(
    "size, crop, stride",
    [((50, 70), 32, 21), ((50, 70), (24, 40), (8, 13)), ((33, 20), (16, 20), 16), ((17, 90), 17, (5, 12))],
)
def test_slide_count_map_average_is_exact_for_position_logits(size, crop, stride):
    model = PositionLogits(SwinFPNConfig(**TINY_SWIN_FPN)).eval()
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    expected = np.zeros((3, *size))
    count = np.zeros(size)
    for top in reference_windows(size[0], crop_h, stride_h):
        for left in reference_windows(size[1], crop_w, stride_w):
            h, w = min(crop_h, size[0]), min(crop_w, size[1])
            rows, cols = np.mgrid[0:h, 0:w]
            local = np.arange(3)[:, None, None] + 10.0 * rows + 0.1 * cols
            expected[:, top : top + h, left : left + w] += local
            count[top : top + h, left : left + w] += 1
    expected /= count
    assert count.max() > 1  # the windows overlap
    result = model.inference(torch.zeros(1, 3, *size), mode="slide", crop_size=crop, stride=stride)
    assert result.shape == (1, 3, *size)
    np.testing.assert_allclose(result[0].numpy(), expected, rtol=0, atol=1e-9)


@torch.no_grad()
def test_slide_equals_per_window_forward_of_a_real_model(tiny_swin_fpn):
    torch.manual_seed(1)
    pixel_values = torch.randn(1, 3, 45, 60)
    total, count = torch.zeros(1, 3, 45, 60), torch.zeros(45, 60)
    for top in reference_windows(45, 32, 20):
        for left in reference_windows(60, 32, 20):
            window = (slice(None), slice(None), slice(top, top + 32), slice(left, left + 32))
            total[window] += tiny_swin_fpn(pixel_values[window]).logits
            count[top : top + 32, left : left + 32] += 1
    result = tiny_swin_fpn.inference(pixel_values, mode="slide", crop_size=32, stride=20)
    torch.testing.assert_close(result, total / count, rtol=0, atol=1e-6)
    # several windows per forward (4 windows here: batches of 3 and 1), two images: the same per-window sums
    pair = torch.cat([pixel_values, pixel_values.flip(-1)])
    batched = tiny_swin_fpn.inference(pair, mode="slide", crop_size=32, stride=20, window_batch_size=3)
    torch.testing.assert_close(batched[:1], total / count, rtol=0, atol=1e-5)
    mirrored = tiny_swin_fpn.inference(pair[1:], mode="slide", crop_size=32, stride=20)
    torch.testing.assert_close(batched[1:], mirrored, rtol=0, atol=1e-5)


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
    torch.manual_seed(0)
    model = PixelwiseLinear(SwinFPNConfig(**TINY_SWIN_FPN)).eval()
    pixel_values = torch.randn(2, 3, 24, 37)
    for mode in ("whole", "slide"):
        plain = model.inference(pixel_values, mode=mode, crop_size=16, stride=10)
        flipped = model.inference(pixel_values, mode=mode, crop_size=16, stride=10, flip=True)
        torch.testing.assert_close(flipped.softmax(1), plain.softmax(1), rtol=0, atol=1e-6)
        assert torch.equal(flipped.argmax(1), plain.argmax(1))


@torch.no_grad()
def test_multi_scale_flip_tta_averages_the_views_softmax(tiny_swin_fpn):
    torch.manual_seed(2)
    pixel_values = torch.randn(1, 3, 36, 44)
    output_size = (50, 30)
    views = []
    for scale in (0.5, 1.25):
        size = (int(36 * scale + 0.5), int(44 * scale + 0.5))
        scaled = F.interpolate(pixel_values, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            logits = tiny_swin_fpn(scaled.flip(-1) if flipped else scaled).logits
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
            views.append((logits.flip(-1) if flipped else logits).softmax(1))
    expected = torch.stack(views).mean(0)
    result = tiny_swin_fpn.inference(pixel_values, scales=(0.5, 1.25), flip=True, output_size=output_size)
    assert result.shape == (1, 3, *output_size)
    torch.testing.assert_close(result.softmax(1), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.exp().sum(1), torch.ones(1, *output_size), rtol=0, atol=1e-6)


@torch.no_grad()
def test_output_size_resizes_the_logits(tiny_swin_fpn):
    pixel_values = torch.randn(1, 3, 32, 48)
    logits = tiny_swin_fpn(pixel_values).logits
    expected = F.interpolate(logits, size=(20, 70), mode="bilinear", align_corners=False)
    assert torch.equal(tiny_swin_fpn.inference(pixel_values, output_size=(20, 70)), expected)


def test_slide_bounds_the_forward_size():
    model = SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN, max_input_pixels=32 * 32)).eval()
    pixel_values = torch.randn(1, 3, 64, 80)
    with pytest.raises(ValueError, match="max_input_pixels"):
        model.inference(pixel_values, mode="whole")
    assert model.inference(pixel_values, mode="slide", crop_size=32, stride=21).shape == (1, 3, 64, 80)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "tile"}, "mode must be 'whole' or 'slide'"),
        ({"mode": "slide", "crop_size": 0}, "crop_size must be a positive int"),
        ({"mode": "slide", "stride": (4, 4, 4)}, "stride must be a positive int"),
        ({"mode": "slide", "crop_size": 8, "stride": 9}, "exceeds crop_size"),
        ({"scales": ()}, "scales must be positive"),
        ({"scales": (1.0, -0.5)}, "scales must be positive"),
        ({"output_size": (0, 5)}, "output_size must be"),
        ({"mode": "slide", "window_batch_size": 0}, "window_batch_size must be a positive int"),
    ],
)
def test_bad_arguments_name_the_problem(tiny_swin_fpn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_swin_fpn.inference(torch.zeros(1, 3, 16, 16), **kwargs)


def test_bad_pixel_values_name_the_problem(tiny_swin_fpn):
    with pytest.raises(ValueError, match="floating-point torch.Tensor"):
        tiny_swin_fpn.inference(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="floating-point torch.Tensor"):
        tiny_swin_fpn.inference(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
