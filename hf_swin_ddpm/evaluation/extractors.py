"""Feature extractors for FID / KID / IS: a digit classifier trained here, or the standard FID Inception-v3.

An extractor maps images, float (N, C, H, W) in [0, 1], to `(features, logits)`: (N, d) features for FID and KID
and (N, K) class logits for the Inception Score. `extractor_id` names it exactly (statistics computed with one are
not comparable with another's).

- `"classifier"`: a small CNN (two convolutions, 128-d features, as MNIST-type results are reported with LeNet
  features) trained deterministically in seconds on an embedded dataset's training split (`digits` or `mnist`) and
  cached in the Hugging Face cache (`models--hf-swin-ddpm--classifier-{dataset}-seed{seed}/snapshots/v1/`).
- `"inception"`: the 2015-12-05 TensorFlow FID Inception-v3 (2048-d pool features, 1008 logits) through
  torchmetrics' `NoTrainInceptionV3` (torch-fidelity), from a weights file the user names (a path, or a Hub repo
  downloaded with `hf_hub_download`). torch-fidelity needs torchvision.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hub_constants
from safetensors.torch import load_file, save_file
from torch import nn

CLASSIFIER_VERSION = "v1"
# dataset -> the classifier's input side, first convolution (stride 1 + max-pool, or stride 2), widths and epochs
CLASSIFIER_RECIPES: dict[str, dict] = {
    "digits": {"input_side": 16, "first_stride": 1, "channels": [16, 32], "epochs": 20},
    "mnist": {"input_side": 28, "first_stride": 2, "channels": [32, 64], "epochs": 10},
}
CLASSIFIER_DATASETS = tuple(CLASSIFIER_RECIPES)
CLASSIFIER_MIN_ACCURACY = 0.97
CLASSIFIER_FEATURES = 128
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_INSTALL = "pip install 'hf-swin-ddpm[eval]' (torch-fidelity and a torchvision matching your torch)"


class EvaluationError(ValueError):
    """A user error of the evaluation tools (missing package or file, unknown reference): one line says the fix."""


class DigitClassifier(nn.Module):
    """Conv-ReLU(-MaxPool)-Conv-ReLU-MaxPool-AvgPool(4x4)-Linear(128)-ReLU features, a Linear(10) classifier on top.

    Input: grayscale (N, 1, R, R) in [0, 1]; `features` is the 128-d penultimate layer. The first convolution is
    3x3 followed by a 2x2 max-pool (`first_stride=1`) or 5x5 with stride 2 (`first_stride=2`, cheaper at 28x28).
    """

    def __init__(
        self,
        first_stride: int = 1,
        channels: tuple[int, int] | list[int] = (16, 32),
        num_classes: int = 10,
        num_features: int = CLASSIFIER_FEATURES,
    ) -> None:
        super().__init__()
        first = (
            [nn.Conv2d(1, channels[0], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            if first_stride == 1
            else [nn.Conv2d(1, channels[0], 5, stride=2, padding=2), nn.ReLU()]
        )
        self.body = nn.Sequential(
            *first,
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(channels[1] * 16, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images * 2.0 - 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def default_cache_dir() -> Path:
    """The Hugging Face hub cache (`HF_HUB_CACHE`, by default `~/.cache/huggingface/hub`)."""
    return Path(hub_constants.HF_HUB_CACHE)


def classifier_folder(dataset: str, seed: int, cache_dir: str | Path | None = None) -> Path:
    """Where the classifier of `dataset` and `seed` is cached, in the hub cache's `models--org--name` layout."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"models--hf-swin-ddpm--classifier-{dataset}-seed{seed}" / "snapshots" / CLASSIFIER_VERSION


def _grayscale(images: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 1, side, side): channel mean, bilinear resize (antialiased when shrinking)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W) in [0, 1], got shape {tuple(images.shape)}.")
    images = images.float().mean(dim=1, keepdim=True)
    if images.shape[-2:] != (side, side):
        shrink = images.shape[-1] > side
        images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
    return images


def classifier_images(dataset: str, split: str, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedded dataset's split as (N, 1, side, side) in [0, 1] (the classifier's input) and its labels, from the
    stored arrays (the same pixels as `embedded_dataset(dataset, split)`)."""
    from ..data.embedded import load_digits_arrays, load_mnist_arrays

    arrays = load_mnist_arrays() if dataset == "mnist" else load_digits_arrays()
    rows = np.flatnonzero(arrays["is_test"] == (split == "test"))
    pixels = torch.from_numpy(arrays["images"][rows].astype(np.float32) / 255.0).unsqueeze(1)
    return _grayscale(pixels, side), torch.from_numpy(arrays["labels"][rows].astype(np.int64))


def _shifted(images: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """The batch translated by up to `max_shift` pixels each way (zero fill; one shift per batch): the only
    augmentation."""
    padded = F.pad(images, (max_shift,) * 4)
    side = images.shape[-1]
    y, x = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[:, :, y : y + side, x : x + side]


def train_classifier(dataset: str, seed: int = 0) -> tuple[DigitClassifier, dict]:
    """Train the digit classifier on `dataset`'s training split (`CLASSIFIER_RECIPES`): Adam with a one-cycle rate
    peaking at 3e-3, batch 64, random shifts of 1-2 pixels, deterministic in `seed` (one thread, seeded
    initialisation, order and shifts). Returns it (eval mode) and its record: recipe, held-out accuracy, time."""
    if dataset not in CLASSIFIER_RECIPES:
        raise EvaluationError(
            f"no classifier features for dataset {dataset!r}; the classifier is trained on one of "
            f"{', '.join(CLASSIFIER_DATASETS)} (pass classifier_dataset=... / --classifier_dataset)."
        )
    recipe = CLASSIFIER_RECIPES[dataset]
    side = recipe["input_side"]
    train_images, train_labels = classifier_images(dataset, "train", side)
    test_images, test_labels = classifier_images(dataset, "test", side)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(1)  # the same reductions, hence the same weights, on every machine
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitClassifier(recipe["first_stride"], recipe["channels"])
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        batches_per_epoch = math.ceil(len(train_images) / 64)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=recipe["epochs"] * batches_per_epoch
        )
        max_shift = max(1, side // 14)
        for _ in range(recipe["epochs"]):
            for batch in torch.randperm(len(train_images), generator=generator).split(64):
                loss = F.cross_entropy(model(_shifted(train_images[batch], generator, max_shift)), train_labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_images).argmax(-1) == test_labels).float().mean().item()
            # features scaled to a mean square of 1 on the training split, the scale KID's kernel expects
            feature_scale = model.features(train_images).double().square().mean().rsqrt().item()
    finally:
        torch.set_num_threads(threads)
    record = {
        "dataset": dataset,
        "seed": seed,
        **recipe,
        "test_accuracy": accuracy,
        "feature_scale": feature_scale,
        "train_seconds": round(time.perf_counter() - start, 2),
        "version": CLASSIFIER_VERSION,
    }
    return model, record


def load_classifier(dataset: str, seed: int = 0, cache_dir: str | Path | None = None) -> tuple[DigitClassifier, dict]:
    """The cached classifier of `dataset` and `seed`, trained (seconds) and cached on first use."""
    folder = classifier_folder(dataset, seed, cache_dir)
    weights, record_file = folder / "model.safetensors", folder / "config.json"
    if weights.is_file() and record_file.is_file():
        record = json.loads(record_file.read_text())
        with torch.random.fork_rng(devices=[]):  # the initial weights, replaced next, must not move the global RNG
            model = DigitClassifier(record["first_stride"], record["channels"])
        model.load_state_dict(load_file(weights))
        return model.eval(), record
    model, record = train_classifier(dataset, seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, weights)
    record_file.write_text(json.dumps(record, indent=2))
    return model, record


class ClassifierFeatures(nn.Module):
    """The digit classifier as an extractor: its 128-d features times `feature_scale` (a mean square of 1 on the
    training split, so that KID's polynomial kernel (x.y / d + 1)^3 sees Inception-like magnitudes) and its 10
    logits; images are made grayscale and resized to its input side."""

    def __init__(self, classifier: DigitClassifier, record: dict) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.record = record
        self.input_side = int(record["input_side"])
        self.feature_scale = float(record["feature_scale"])
        self.num_features = CLASSIFIER_FEATURES
        self.extractor_id = f"classifier-{record['dataset']}-seed{record['seed']}-{record['version']}"

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = _grayscale(images.to(next(self.classifier.parameters()).device), self.input_side)
        features = self.classifier.features(images)
        return features.double() * self.feature_scale, self.classifier.head(features).double()


class InceptionFeatures(nn.Module):
    """torchmetrics' FID Inception-v3 (torch-fidelity's port of the 2015-12-05 TF graph): 2048-d pool features and
    the 1008 unbiased logits, from 3-channel uint8 images (it resizes them to 299x299 itself)."""

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.network = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(weights_path),
        )
        self.num_features = 2048
        self.extractor_id = f"inception-2015-12-05-{Path(weights_path).name}"

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        features, logits = self.network((images.clamp(0, 1) * 255).round().to(torch.uint8))
        return features.double(), logits.double()


def resolve_inception_weights(weights: str | Path | None) -> Path:
    """A local weights file, or `REPO_ID` / `REPO_ID:FILENAME` downloaded with `hf_hub_download` (nothing else is
    downloaded); a one-line `EvaluationError` otherwise."""
    if weights is None or str(weights) == "":
        raise EvaluationError(
            f"the inception features need the FID Inception weights ({INCEPTION_WEIGHTS_FILE}): pass "
            "--inception_weights PATH_OR_REPO (inception_weights=...); nothing is downloaded unless you name it."
        )
    path = Path(weights)
    if path.is_file():
        return path
    if path.suffix in (".pth", ".pt", ".bin") or path.is_dir() or str(weights).startswith((".", "/", "~")):
        raise EvaluationError(f"--inception_weights: {weights} is not a file; give the .pth file or a Hub repo id.")
    repo_id, _, filename = str(weights).partition(":")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename or INCEPTION_WEIGHTS_FILE))
    except Exception as error:  # noqa: BLE001 (any download error becomes the one-line message)
        raise EvaluationError(
            f"--inception_weights: could not download {filename or INCEPTION_WEIGHTS_FILE} from Hub repo {repo_id} "
            f"({type(error).__name__}); give a local file or an existing repo[:filename]."
        ) from None


def check_inception_packages() -> None:
    """torchmetrics' Inception needs torch-fidelity (and torchvision): a one-line error saying what to install."""
    missing = [name for name in ("torch_fidelity", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        raise EvaluationError(f"the inception features need {' and '.join(missing)}: {INCEPTION_INSTALL}.")


def load_extractor(
    features: str | nn.Module = "classifier",
    *,
    classifier_dataset: str = "mnist",
    seed: int = 0,
    inception_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The extractor `features` names (`"classifier"` or `"inception"`), or `features` itself when it is one
    (a module with `extract(images) -> (features, logits)`, `num_features` and `extractor_id`)."""
    if isinstance(features, nn.Module):
        missing = [name for name in ("extract", "num_features", "extractor_id") if not hasattr(features, name)]
        if missing:
            raise EvaluationError(f"a custom feature extractor needs {', '.join(missing)}.")
        return features
    if features == "classifier":
        extractor = ClassifierFeatures(*load_classifier(classifier_dataset, seed, cache_dir))
    elif features == "inception":
        weights = resolve_inception_weights(inception_weights)
        check_inception_packages()
        extractor = InceptionFeatures(weights)
    else:
        raise EvaluationError(f"unknown features {features!r}; choose classifier or inception.")
    return extractor.to(device) if device is not None else extractor
