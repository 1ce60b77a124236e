"""Writes the Space's example images: the first few images of the embedded ``shapes`` test split, as PNG.

python spaces_app/make_examples.py
"""

from __future__ import annotations

from pathlib import Path

from hf_swin_ddpm.data import embedded_dataset

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
NUM_EXAMPLES = 4


def write_examples(folder: Path = EXAMPLES_DIR, count: int = NUM_EXAMPLES) -> list[Path]:
    """Saves images 0..count-1 of the shapes test split as ``shapes_test_<i>.png``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = embedded_dataset("shapes", split="test", num_examples=count)
    paths = []
    for index, example in enumerate(dataset):
        path = folder / f"shapes_test_{index}.png"
        example["image"].convert("RGB").save(path, optimize=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_examples():
        print(written)
