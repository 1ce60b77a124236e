"""Writes the Space's example images (small PNGs in ``spaces_app/examples/``), all from held-out data:

- ``digit_scenes_test_<i>.png``: canvases of the embedded ``digit_scenes`` test split (96x96, real MNIST digits that
  the demo segmenter never saw), the first ones with at least two digits, two of each polarity (white on black,
  black on white): the Segment tab's examples;
- ``mnist_test_<digit>.png``: the first digit of a few classes in the embedded ``mnist`` test split (28x28): the
  Forward process, Interpolate and Edit tabs' examples.

python spaces_app/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_swin_ddpm.data import embedded_dataset

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SCENES_PER_POLARITY = 2
MIN_DIGITS_PER_SCENE = 2
SCENES_SEARCHED = 40  # the first canvases of the test split looked at
MNIST_EXAMPLE_DIGITS = (3, 5, 7, 8)  # the Interpolate tab pairs them in this order: 3 with 5, 7 with 8


def scene_indices(count_per_polarity: int = SCENES_PER_POLARITY) -> list[int]:
    """Indices of the first test canvases with at least two digits, `count_per_polarity` of each polarity."""
    dataset = embedded_dataset("digit_scenes", split="test", num_examples=SCENES_SEARCHED)
    chosen: dict[bool, list[int]] = {True: [], False: []}
    for index, example in enumerate(dataset):
        digits = set(np.unique(np.asarray(example["annotation"]))) - {0, 255}
        white_ink = np.asarray(example["image"]).mean() < 128
        if len(digits) >= MIN_DIGITS_PER_SCENE and len(chosen[white_ink]) < count_per_polarity:
            chosen[white_ink].append(index)
    return sorted(chosen[True] + chosen[False])


def write_examples(folder: Path = EXAMPLES_DIR) -> list[Path]:
    """Writes the scene and MNIST examples into `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    scenes = embedded_dataset("digit_scenes", split="test", num_examples=SCENES_SEARCHED)
    for index in scene_indices():
        path = folder / f"digit_scenes_test_{index}.png"
        scenes[index]["image"].convert("L").save(path, optimize=True)  # grey canvases: one channel is enough
        paths.append(path)
    mnist = embedded_dataset("mnist", split="test")
    labels = np.asarray(mnist["label"])
    for digit in MNIST_EXAMPLE_DIGITS:
        path = folder / f"mnist_test_{digit}.png"
        mnist[int(np.flatnonzero(labels == digit)[0])]["image"].convert("L").save(path, optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_examples():
        print(written)
