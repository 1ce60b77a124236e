"""How good the demo models are: DDPM digits judged by a digit classifier, SwinFPN mean IoU on the shapes test split.

DDPM: a small CNN is trained on the real `digits` train split (at the DDPM's resolution, the same resize as the
training transform), then applied to held-out real digits and to DDPM samples (the paper's 1000-step Algorithm 2).
Recognisable samples get about the confidence of real held-out digits, and every class appears among them.
SwinFPN: mean IoU, per-class IoU and pixel accuracy on the `shapes` test split (torchmetrics), through the saved
image processor. Writes `benchmarks/results/demo_quality.json`.

    python benchmarks/eval_demo_quality.py [--models demo_models] [--samples 200] [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from hf_swin_ddpm import DDPMPaperPipeline, SwinFPNForSegmentation, SwinFPNImageProcessor
from hf_swin_ddpm.data import DDPMTransform, embedded_dataset

RESULTS = Path(__file__).parent / "results"


def digit_tensors(split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits of `split` as (N, 1, R, R) in [-1, 1], resized exactly as the DDPM training transform does."""
    dataset = embedded_dataset("digits", split=split)
    transform = DDPMTransform(resolution, channels=1, random_flip=False)
    images = torch.stack([transform.transform_image(example["image"], None) for example in dataset])
    return images, torch.tensor(dataset["label"])


def train_digit_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 40) -> nn.Module:
    torch.manual_seed(0)
    classifier = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for batch in order.split(64):
            loss = F.cross_entropy(classifier(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return classifier.eval()


def ddpm_quality(folder: Path, samples: int, steps: int) -> dict:
    pipeline = DDPMPaperPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    resolution = pipeline.unet.config.sample_size
    train_images, train_labels = digit_tensors("train", resolution)
    test_images, test_labels = digit_tensors("test", resolution)
    classifier = train_digit_classifier(train_images, train_labels)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        generated = pipeline(batch_size=samples, generator=generator, num_inference_steps=steps, output_type="pt")
        generated = generated.images * 2 - 1
        real_probabilities = classifier(test_images).softmax(-1)
        sample_probabilities = classifier(generated).softmax(-1)
    sample_classes = sample_probabilities.argmax(-1)
    return {
        "resolution": resolution,
        "samples": samples,
        "steps": steps,
        "classifier_test_accuracy": (real_probabilities.argmax(-1) == test_labels).float().mean().item(),
        "real_test_mean_confidence": real_probabilities.max(-1).values.mean().item(),
        "samples_mean_confidence": sample_probabilities.max(-1).values.mean().item(),
        "samples_per_class": np.bincount(sample_classes.numpy(), minlength=10).tolist(),
        "classes_present": int((np.bincount(sample_classes.numpy(), minlength=10) > 0).sum()),
    }


def segmentation_quality(folder: Path) -> dict:
    model = SwinFPNForSegmentation.from_pretrained(folder).eval()
    processor = SwinFPNImageProcessor.from_pretrained(folder)
    num_labels = model.config.num_labels
    jaccard = MulticlassJaccardIndex(num_labels, average=None, ignore_index=255)
    accuracy = MulticlassAccuracy(num_labels, average="micro", ignore_index=255)
    dataset = embedded_dataset("shapes", split="test")
    for start in range(0, len(dataset), 32):
        batch = dataset[start : start + 32]
        labels = torch.from_numpy(np.stack([np.asarray(a, dtype=np.int64) for a in batch["annotation"]]))
        with torch.no_grad():
            outputs = model(**processor(batch["image"], return_tensors="pt"))
        predictions = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[labels.shape[-2:]] * len(labels)
        )
        jaccard.update(torch.stack(predictions), labels)
        accuracy.update(torch.stack(predictions), labels)
    per_class = jaccard.compute()
    return {
        "test_images": len(dataset),
        "mean_iou": per_class.mean().item(),
        "per_class_iou": {model.config.id2label[i]: value.item() for i, value in enumerate(per_class)},
        "pixel_accuracy": accuracy.compute().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo_models")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    root = Path(args.models)
    report = {
        "ddpm_digits": ddpm_quality(root / "ddpm-digits", args.samples, args.steps),
        "swin_fpn_shapes": segmentation_quality(root / "swin-fpn-shapes"),
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_quality.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
