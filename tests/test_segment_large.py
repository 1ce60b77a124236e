"""`segment_large` (slide inference of any image size in memory bounded by a band of rows) against the in-memory
`inference(mode="slide")`, and the `hf-swin-ddpm segment` command with its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TINY_SWIN_FPN_GEOMETRY
from PIL import Image
from training_support import run_cli_in_process

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.evaluation.segmentation_inference import inference, segment_large

IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1))


def tiny_segmenter(num_labels: int) -> SwinFPNForSegmentation:
    """A random tiny SwinFPN whose head's weights are drawn large enough that its prediction varies over an image."""
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN_GEOMETRY, num_labels=num_labels, image_size=32))
    with torch.no_grad():
        for parameter in model.decode_head.parameters():
            if parameter.ndim > 1:
                parameter.normal_(std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def model(one_thread) -> SwinFPNForSegmentation:
    return tiny_segmenter(5)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random colour blocks of 6x6 pixels."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(blocks.repeat(6, axis=0).repeat(6, axis=1)[:height, :width])


def slide_labels(model, image: np.ndarray, crop, stride, window_batch_size: int = 1) -> np.ndarray:
    """The argmax of the in-memory slide inference of the image normalised as a whole."""
    pixels = (
        torch.from_numpy(np.array(image))
        .permute(2, 0, 1)
        .float()
        .div_(255.0)
        .sub_(IMAGENET[0])
        .div_(IMAGENET[1])[None]
    )
    logits = inference(model, pixels, mode="slide", crop_size=crop, stride=stride, window_batch_size=window_batch_size)
    return logits[0].argmax(dim=0).numpy()


@pytest.mark.parametrize(
    "size, crop, stride, window_batch_size",
    [
        ((45, 61), 16, 5, 1),  # three or four bands overlap a row: stride < crop / 2
        ((45, 61), (16, 24), (11, 7), 1),  # rectangular crops, stride > crop / 2, last windows moved back
        ((37, 53), 16, 16, 4),  # no overlap; 4 windows = the windows of a band, the same batches as inference's
        ((29, 31), (16, 32), 9, 1),  # a crop wider than the image: one window per band
    ],
)
def test_labels_equal_the_argmax_of_in_memory_slide_inference(model, size, crop, stride, window_batch_size):
    image = random_image(*size)
    expected = slide_labels(model, image, crop, stride, window_batch_size)
    labels = segment_large(model, image, crop, stride, window_batch_size)
    assert labels.dtype == np.uint8 and labels.shape == size
    assert len(np.unique(expected)) > 1  # a prediction that varies, not one class everywhere
    np.testing.assert_array_equal(labels, expected)
    # a PIL image gives the same labels as its array
    np.testing.assert_array_equal(
        segment_large(model, Image.fromarray(image), crop, stride, window_batch_size), labels
    )


def test_more_than_256_classes_give_uint16(one_thread):
    model = tiny_segmenter(300)
    image = random_image(27, 35, seed=1)
    labels = segment_large(model, image, 16, 6)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, slide_labels(model, image, 16, 6))


def test_arguments_are_checked(model):
    with pytest.raises(ValueError, match="uint8 array"):
        segment_large(model, np.zeros((8, 8, 3), dtype=np.float32), 16, 8)
    with pytest.raises(ValueError, match="exceeds crop_size"):
        segment_large(model, random_image(20, 20), 8, 9)
    with pytest.raises(ValueError, match="window_batch_size"):
        segment_large(model, random_image(20, 20), 8, 4, 0)


# --- hf-swin-ddpm segment ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("segment")
    model.save_pretrained(folder / "model")
    SwinFPNImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder / "model")
    Image.fromarray(random_image(45, 61, seed=2)).save(folder / "image.png")
    return folder


def test_segment_writes_the_label_map_png(saved, model, tmp_path, capsys):
    output = tmp_path / "labels.png"
    result = run_cli_in_process(
        "segment", str(saved / "model"), str(saved / "image.png"), str(output), "--crop_size", "16", "--stride", "5",
        "--window_batch_size", "3", cwd=tmp_path, capsys=capsys,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "segment: 100%" in result.stderr  # the progress bar
    written = np.asarray(Image.open(output))
    expected = slide_labels(model, np.asarray(Image.open(saved / "image.png")), 16, 5)
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written, expected)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's decompression-bomb limit is back after the read


def test_segment_reads_past_the_decompression_bomb_limit_and_writes_16_bit_png(tmp_path, capsys, monkeypatch):
    model = tiny_segmenter(300)
    model.save_pretrained(tmp_path / "model")
    image = random_image(30, 40, seed=3)
    Image.fromarray(image).save(tmp_path / "image.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the image is 12x Pillow's limit: a "bomb" error otherwise
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "image.png")
    result = run_cli_in_process(
        "segment", str(tmp_path / "model"), "image.png", "labels.png", "--crop_size", "16", cwd=tmp_path, capsys=capsys
    )
    assert result.returncode == 0, result.stderr
    assert Image.MAX_IMAGE_PIXELS == 100
    monkeypatch.undo()
    with Image.open(tmp_path / "labels.png") as written:
        assert written.mode.startswith("I")  # a 16-bit PNG
        labels = np.asarray(written)
    np.testing.assert_array_equal(labels, slide_labels(model, image, 16, None))


@pytest.mark.parametrize(
    "image, extra, message",
    [
        ("image.png", ["--stride", "0"], "--stride: expected positive integers"),
        ("image.png", ["--crop_size", "48"], "--crop_size: 48x48 is larger than IMAGE (45x61)"),
        ("image.png", ["--max_pixels", "2000"], "45 = 2,745 pixels decoded, more than 2,000 (--max_pixels)"),
        ("image.png", ["--window_batch_size", "0"], "--window_batch_size: expected positive integers"),
        ("empty.png", [], "empty.png is not a readable image"),
        ("corrupt.png", [], "corrupt.png is not a readable image"),
        ("truncated.png", [], "truncated.png is not a readable image (OSError: image file is truncated"),
        ("missing.png", [], "missing.png is not a file"),
    ],
)
def test_segment_errors_are_one_line(saved, tmp_path, capsys, image, extra, message):
    data = (saved / "image.png").read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not an image at all" * 10)
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "image.png").write_bytes(data)
    (tmp_path / "labels.png").write_bytes(b"earlier output")
    result = run_cli_in_process(
        "segment", str(saved / "model"), image, "labels.png", "--crop_size", "16", *extra, cwd=tmp_path, capsys=capsys
    )
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors[-1].startswith("hf-swin-ddpm segment: error: ") and message in errors[-1], errors[-1]
    assert (tmp_path / "labels.png").read_bytes() == b"earlier output"  # nothing already written is lost


def test_segment_unknown_model_folder_and_output_name(saved, tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    for model, output, message in [
        (str(tmp_path / "absent"), "labels.png", "is neither an existing folder nor a Hub repo id"),
        (str(tmp_path / "not-a-model"), "labels.png", "not-a-model"),
        (str(saved / "model"), "labels.jpg", "is not a .png file name"),
    ]:
        result = run_cli_in_process("segment", model, str(saved / "image.png"), output, cwd=tmp_path, capsys=capsys)
        errors = result.stderr.strip().splitlines()
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert errors[-1].startswith("hf-swin-ddpm segment: error: ") and message in errors[-1], errors[-1]


def test_segment_default_max_pixels_comes_from_the_available_memory(saved, tmp_path, capsys, monkeypatch):
    import hf_swin_ddpm.cli as cli

    assert cli._available_memory() > 0
    monkeypatch.setattr(cli, "_available_memory", lambda: 2000 * cli.SEGMENT_BYTES_PER_PIXEL)  # room for 2,000 px
    result = run_cli_in_process(
        "segment", str(saved / "model"), str(saved / "image.png"), "labels.png", cwd=tmp_path, capsys=capsys
    )
    assert result.returncode == 2
    assert "2,745 pixels decoded, more than 2,000 (the memory available now)" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "labels.png").exists()
