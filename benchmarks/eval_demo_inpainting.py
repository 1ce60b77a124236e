"""Does the demo DDPM complete digits? RePaint inpainting of the lower half of real held-out digits, judged by the
project's digit classifier (`hf_swin_ddpm.evaluation.load_classifier`) against the same digits with the lower half
filled with noise, and against the untouched digits.

    python benchmarks/eval_demo_inpainting.py [--model demo_models/ddpm-mnist] [--dataset mnist] [--num_images 200]
        [--num_inference_steps 100] [--jump_length 10] [--jump_n_sample 5]

Writes `benchmarks/results/demo_inpainting.json`: the classifier's accuracy on each of the three sets and the
seconds the inpainting took.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.evaluation import load_classifier
from hf_swin_ddpm.evaluation.extractors import classifier_images

RESULTS = Path(__file__).parent / "results"


def accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, side: int) -> float:
    """Top-1 accuracy of the classifier on images (N, 1, H, W) in [0, 1], resized to its input side."""
    with torch.no_grad():
        logits = classifier(F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False))
    return (logits.argmax(-1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo_models/ddpm-mnist", help="a DDPMPaperPipeline folder")
    parser.add_argument("--dataset", default="mnist", help="the embedded dataset the model was trained on")
    parser.add_argument("--num_images", type=int, default=200, help="held-out digits to inpaint")
    parser.add_argument("--num_inference_steps", type=int, default=100, help="RePaint's respaced chain")
    parser.add_argument("--jump_length", type=int, default=10, help="RePaint's jump length")
    parser.add_argument("--jump_n_sample", type=int, default=5, help="RePaint's resampling count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inpainting and the noise fill")
    args = parser.parse_args()

    pipeline = DDPMPaperPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    side = pipeline.unet.config.sample_size
    classifier, record = load_classifier(args.dataset)
    images, labels = classifier_images(args.dataset, "test", side)
    images, labels = images[: args.num_images], labels[: args.num_images]

    keep = torch.ones(side, side)
    keep[side // 2 :] = 0  # regenerate the lower half
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    inpainted = pipeline.inpaint(
        images,
        keep,
        num_inference_steps=args.num_inference_steps,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        generator=generator,
        output_type="pt",
    ).images
    seconds = time.perf_counter() - start
    noise = torch.rand(images.shape, generator=generator)
    noise_filled = keep * images + (1 - keep) * noise

    input_side = record["input_side"]
    report = {
        "model": args.model,
        "dataset": args.dataset,
        "num_images": len(images),
        "num_inference_steps": args.num_inference_steps,
        "jump_length": args.jump_length,
        "jump_n_sample": args.jump_n_sample,
        "accuracy_real": accuracy(classifier, images, labels, input_side),
        "accuracy_inpainted_lower_half": accuracy(classifier, inpainted, labels, input_side),
        "accuracy_noise_filled_lower_half": accuracy(classifier, noise_filled, labels, input_side),
        "inpainting_seconds": round(seconds, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo_inpainting.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
