"""How good the shipped demo models are, judged by more than one measure.

DDPM (`demo_models/ddpm-mnist`): for each seed, N samples (N = the 500 held-out MNIST digits) with the paper's
sampler (sigma_t^2 = beta_t) at each step count, scored three ways:
- FID with the project's digit-classifier features (`SampleMetrics("classifier")`, the metric of `evaluate-ddpm`);
- FID with the features of an independent classifier: another architecture (`IndependentDigitCNN` below: two conv
  layers, 256 pooled features), trained here with its own seed, so the recipe is not judged only by the measure it
  was chosen on;
- the recognition rate: the share of images the independent classifier labels with confidence >= 0.9, for the samples
  and for the real held-out digits; their ratio says how often samples are read as digits relative to real ones.
Each FID is against the training split and set against two real-data references at the same N:
- the floor: the real held-out split against the training split. The split holds exactly 50 digits of each class;
- the FID a perfect sampler is expected to score: real held-out digits drawn as an unconditional sampler draws them,
  with multinomial class counts (`perfect_sampler_draw`), mean over `--perfect_sampler_draws` draws. A sampler does
  not stratify its classes, and with 128-d classifier features the class counts' spread alone raises the FID well
  above the stratified floor.
A grid of samples goes to `benchmarks/results/demo_ddpm_mnist_samples.png` to be looked at.

SwinFPN (`demo_models/swin-fpn-digit-scenes`): mmseg's protocol (`evaluate_segmentation`, keep-ratio resize to the
test scale recorded in the image processor, whole-image inference) on the `digit_scenes` test split (mean IoU and the per-class table), and, as an independent
check of how it holds up, on test canvases laid out unlike its training data (`OTHER_LAYOUTS`: other canvas sizes,
digit counts and digit scales), drawn from the held-out digits.

    python benchmarks/eval_demo_quality.py [--part ddpm segmentation] [--seeds 0 1 2 3 4] [--steps 250 20]

Writes `benchmarks/results/demo_quality.json` (the parts run update their entries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from hf_swin_ddpm import DDPMPaperPipeline, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.data import SceneLayout
from hf_swin_ddpm.data.embedded import digit_scenes_dataset, load_mnist_arrays
from hf_swin_ddpm.evaluation import SampleMetrics, evaluate_segmentation
from hf_swin_ddpm.imaging import image_grid

RESULTS = Path(__file__).parent / "results"
RECOGNISED_CONFIDENCE = 0.9
OTHER_LAYOUTS = {
    "dense: 128x128, 4-7 digits of 20-40 px": SceneLayout(128, 4, 7, 20, 40),
    "large: 160x160, 1-3 digits of 48-80 px": SceneLayout(160, 1, 3, 48, 80),
    "small: 64x64, 1-2 digits of 20-36 px": SceneLayout(64, 1, 2, 20, 36),
}


class IndependentDigitCNN(nn.Module):
    """A second digit classifier, of another architecture than the project's, as a feature extractor for
    `SampleMetrics` (`extract(images) -> (features, logits)`, `num_features`, `extractor_id`)."""

    num_features = 256
    extractor_id = "independent-digit-cnn"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(256, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images * 2 - 1))

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images.float() * 2 - 1)
        return features.double(), self.head(features).double()


def mnist_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The real `mnist` split as (N, 1, 28, 28) floats in [0, 1] and its labels."""
    arrays = load_mnist_arrays()
    rows = np.flatnonzero(arrays["is_test"] == (split == "test"))
    images = torch.from_numpy(arrays["images"][rows]).float().div(255).unsqueeze(1)
    return images, torch.from_numpy(arrays["labels"][rows])


def train_independent_classifier(epochs: int = 30) -> tuple[IndependentDigitCNN, float]:
    """The independent classifier trained on the MNIST training split (seed 1234); returns it and its held-out
    accuracy."""
    torch.manual_seed(1234)
    images, labels = mnist_tensors("train")
    classifier = IndependentDigitCNN()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval()
    test_images, test_labels = mnist_tensors("test")
    with torch.no_grad():
        accuracy = (classifier(test_images).argmax(-1) == test_labels).float().mean().item()
    return classifier, accuracy


def _recognised(logits: torch.Tensor) -> float:
    return (logits.softmax(-1).amax(-1) >= RECOGNISED_CONFIDENCE).double().mean().item()


def perfect_sampler_draw(
    images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, overflow: tuple | None = None
) -> torch.Tensor:
    """Real images drawn as a perfect unconditional sampler draws len(images): the class counts multinomial over the
    split's class frequencies, the images of a class without replacement while the class's own last. A count past
    them (at 50 digits per class and N = 500, about 5% of the images) is filled by repeating the class's images, which
    biases the FID up, or with `overflow=(images, labels)` (the training split, the FID's reference) by images of
    that split, which biases it down: the two bracket what an endless held-out split would give."""
    classes, frequencies = np.unique(labels.numpy(), return_counts=True)
    counts = rng.multinomial(len(labels), frequencies / len(labels))
    drawn = []
    for label, count in zip(classes, counts):
        own = images[rng.permutation(np.flatnonzero(labels.numpy() == label))]
        extra = max(count - len(own), 0)
        if overflow is None:
            fill = own[rng.choice(len(own), extra)]
        else:
            fill = overflow[0][rng.permutation(np.flatnonzero(overflow[1].numpy() == label))[:extra]]
        drawn += [own[:count], fill]
    return torch.cat(drawn)


def _fid(metrics: SampleMetrics, images: torch.Tensor) -> float:
    """FID of `images` against the real images `metrics` already holds (`reset` forgets only the generated ones)."""
    metrics.reset()
    for batch in images.split(500):
        metrics.update(batch, real=False)
    return float(metrics.compute()["fid"])


def _perfect_sampler_fids(
    extractors: dict[str, SampleMetrics], images: torch.Tensor, labels: torch.Tensor, training: tuple, draws: int
) -> dict[str, dict]:
    """Per extractor, the mean and standard deviation of the FID over `draws` draws of `perfect_sampler_draw`, with
    each of its two fills (repeats; `training` images)."""
    perfect_sampler = {name: {"draws": draws} for name in extractors}
    for fill, overflow in (("repeats", None), ("training_digits", training)):
        rng = np.random.default_rng(0)
        fids = {name: [] for name in extractors}
        for _ in range(draws):
            drawn = perfect_sampler_draw(images, labels, rng, overflow)
            for name, metrics in extractors.items():
                fids[name].append(_fid(metrics, drawn))
        for name, values in fids.items():
            perfect_sampler[name][f"fid_mean_{fill}"] = statistics.fmean(values)
            perfect_sampler[name][f"fid_sd_{fill}"] = statistics.stdev(values)
    return perfect_sampler


def _ratios_to_perfect_sampler(fid: float, perfect_sampler: dict) -> dict:
    return {fill: fid / perfect_sampler[f"fid_mean_{fill}"] for fill in ("repeats", "training_digits")}


@dataclass
class DDPMJudges:
    """What every DDPM is judged against: both extractors holding the training digits (the reference of every FID),
    their floors (held-out vs training digits), the FID a perfect sampler is expected to score (mean and standard
    deviation over draws of `perfect_sampler_draw`, with each of its two fills; measured only when asked for: it
    rescales all ratios of one set of judges alike, so ranking candidates does not need it), the independent
    classifier and how often it recognises real digits."""

    extractors: dict[str, SampleMetrics]
    floors: dict[str, float]
    perfect_sampler: dict[str, dict]
    independent: IndependentDigitCNN
    independent_accuracy: float
    real_recognised: float
    num_samples: int

    @classmethod
    def build(cls, perfect_sampler_draws: int = 0) -> DDPMJudges:
        train_images, train_labels = mnist_tensors("train")
        test_images, test_labels = mnist_tensors("test")
        independent, independent_accuracy = train_independent_classifier()
        extractors = {
            "project_classifier": SampleMetrics("classifier", classifier_dataset="mnist"),
            "independent_cnn": SampleMetrics(independent),
        }
        for metrics in extractors.values():  # the training digits, once: the reference of every FID below
            for batch in train_images.split(500):
                metrics.update(batch, real=True)
        floors = {name: _fid(metrics, test_images) for name, metrics in extractors.items()}
        perfect_sampler = {}
        if perfect_sampler_draws:
            training = (train_images, train_labels)
            perfect_sampler = _perfect_sampler_fids(
                extractors, test_images, test_labels, training, perfect_sampler_draws
            )
        with torch.no_grad():
            real_recognised = _recognised(independent(test_images))
        return cls(
            extractors, floors, perfect_sampler, independent, independent_accuracy, real_recognised, len(test_images)
        )


def ddpm_quality(
    folder: Path,
    seeds: list[int],
    steps: list[int],
    device: str = "cpu",
    judges: DDPMJudges | None = None,
    grid_folder: Path = RESULTS,
) -> dict:
    """FID (two feature extractors) and recognition rate of the DDPM's samples, per step count, over `seeds`.
    Sampling runs on `device`; the noise comes from a CPU generator per seed, so it is the same on any device."""
    judges = judges or DDPMJudges.build()
    pipeline = DDPMPaperPipeline.from_pretrained(folder).to(device)
    pipeline.set_progress_bar_config(disable=True)
    count = judges.num_samples
    batch_size = 100 if device == "cpu" else count
    rows = {}
    for num_steps in steps:
        runs = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            images = torch.cat(
                [
                    pipeline(
                        batch_size=batch_size, generator=generator, num_inference_steps=num_steps, output_type="pt"
                    ).images.cpu()
                    for _ in range(count // batch_size)
                ]
            )
            seconds = time.perf_counter() - start
            if seed == seeds[0]:
                grid = image_grid([Image.fromarray(image) for image in (images[:64, 0] * 255).round().byte().numpy()])
                grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST).save(
                    grid_folder / f"demo_ddpm_mnist_samples_{num_steps}_steps.png"
                )
            with torch.no_grad():
                predicted = judges.independent(images)
            run = {name: _fid(metrics, images) for name, metrics in judges.extractors.items()}
            run.update(
                seed=seed,
                recognised=_recognised(predicted),
                classes_present=int((torch.bincount(predicted.argmax(-1), minlength=10) > 0).sum()),
                sampling_seconds=round(seconds, 1),
            )
            runs.append(run)
            print(json.dumps({"model": str(folder), "steps": num_steps, **run}), flush=True)
        summary = {}
        for name in judges.extractors:
            mean = statistics.fmean(run[name] for run in runs)
            summary[name] = {
                "fid_mean": mean,
                "fid_per_seed": [run[name] for run in runs],
                "ratio": mean / judges.floors[name],
            }
            if judges.perfect_sampler:
                summary[name]["ratio_to_perfect_sampler"] = _ratios_to_perfect_sampler(
                    mean, judges.perfect_sampler[name]
                )
        recognised = statistics.fmean(run["recognised"] for run in runs)
        summary["recognised"] = recognised
        summary["recognised_relative_to_real"] = recognised / judges.real_recognised
        summary["seconds_per_seed"] = statistics.fmean(run["sampling_seconds"] for run in runs)
        summary["runs"] = runs
        rows[f"{num_steps}_steps"] = summary
    return {
        "model": str(folder),
        "device": str(device),
        "num_samples": count,
        "seeds": seeds,
        "floors_fid_test_vs_train": judges.floors,
        **({"perfect_sampler_fid": judges.perfect_sampler} if judges.perfect_sampler else {}),
        "independent_classifier_test_accuracy": judges.independent_accuracy,
        "real_test_recognised": judges.real_recognised,
        "by_steps": rows,
    }


def rejudge_references(entry: dict, judges: DDPMJudges) -> dict:
    """A stored `ddpm_quality` entry with the perfect sampler's FIDs and the ratios to them added, from its per-seed
    FIDs, without sampling again. The judges must be the ones that scored it: their floors must repeat exactly."""
    for name, floor in entry["floors_fid_test_vs_train"].items():
        if judges.floors[name] != floor:
            raise SystemExit(
                f"the {name} floor is {judges.floors[name]!r} here but {floor!r} in the stored results: other judges "
                "scored them (another machine's project classifier?); run --part ddpm to sample and judge again."
            )
    entry["perfect_sampler_fid"] = judges.perfect_sampler
    for row in entry["by_steps"].values():
        for name in judges.extractors:
            row[name]["ratio_to_perfect_sampler"] = _ratios_to_perfect_sampler(
                row[name]["fid_mean"], judges.perfect_sampler[name]
            )
    return entry


def segmentation_quality(folder: Path) -> dict:
    """mmseg's metrics on the `digit_scenes` test split and on the test canvases of `OTHER_LAYOUTS`."""
    model = SwinFPNForSegmentation.from_pretrained(folder).eval()
    processor = SwinFPNImageProcessor.from_pretrained(folder)
    options = {"mean": processor.image_mean, "std": processor.image_std, "progress": False}
    scale = tuple(processor.test_scale)
    test = digit_scenes_dataset("test")
    with torch.no_grad():
        results = evaluate_segmentation(model, test, scale=scale, **options)
        report = {
            "test_scale": list(scale),
            "test": {
                "num_images": results["num_images"],
                "mIoU": results["mIoU"],
                "aAcc": results["aAcc"],
                "per_class_IoU": {name: row["IoU"] for name, row in results["per_class"].items()},
            },
        }
        for name, layout in OTHER_LAYOUTS.items():
            dataset = digit_scenes_dataset("test", num_examples=200, layout=layout)
            results = evaluate_segmentation(model, dataset, scale=scale, **options)
            report[name] = {"num_images": results["num_images"], "mIoU": results["mIoU"], "aAcc": results["aAcc"]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("demo_models"))
    parser.add_argument(
        "--part",
        nargs="+",
        choices=("ddpm", "segmentation", "ddpm_references"),
        default=["ddpm", "segmentation"],
        help="ddpm_references: add the perfect sampler's FIDs to the stored DDPM results without sampling again.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 20])
    parser.add_argument("--device", default="cpu", help="Where the DDPM samples (e.g. cuda).")
    parser.add_argument(
        "--perfect_sampler_draws", type=int, default=100, help="Draws averaged for its expected FID (at least 2)."
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "demo_quality.json")
    parser.add_argument("--grid_folder", type=Path, default=RESULTS, help="Where the first seed's sample grids go.")
    args = parser.parse_args()
    if args.perfect_sampler_draws < 2:
        parser.error("--perfect_sampler_draws must be at least 2 (its standard deviation is reported too).")
    RESULTS.mkdir(exist_ok=True)
    report = json.loads(args.output.read_text()) if args.output.is_file() else {}
    report = {key: value for key, value in report.items() if key in ("ddpm_mnist", "swin_fpn_digit_scenes")}
    if "segmentation" in args.part:
        report["swin_fpn_digit_scenes"] = segmentation_quality(args.models / "swin-fpn-digit-scenes")
        print(json.dumps(report["swin_fpn_digit_scenes"], indent=2), flush=True)
    judges = DDPMJudges.build(args.perfect_sampler_draws) if {"ddpm", "ddpm_references"} & set(args.part) else None
    if "ddpm" in args.part:
        report["ddpm_mnist"] = ddpm_quality(
            args.models / "ddpm-mnist", args.seeds, args.steps, args.device, judges, grid_folder=args.grid_folder
        )
    elif "ddpm_references" in args.part:
        report["ddpm_mnist"] = rejudge_references(report["ddpm_mnist"], judges)
    report["threads"] = torch.get_num_threads()
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
