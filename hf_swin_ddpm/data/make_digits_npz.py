"""Regenerate ``digits.npz`` from the handwritten digits that scikit-learn ships.

Provenance: ``sklearn.datasets.load_digits`` holds the 1,797 8x8 test images of the UCI "Optical Recognition of
Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), pixel values 0..16. They are stored here as
uint8 images scaled to 0..255 with ``round(v * 255 / 16)``, in scikit-learn's order, with their labels and a fixed
held-out test split (stratified by label, 10%, ``random_state=0``).

This script is the only place in the package that imports scikit-learn, which is not a runtime dependency. Run it
once, from the repository root, and commit the result::

    python -m hf_swin_ddpm.data.make_digits_npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGITS_NPZ_PATH = Path(__file__).with_name("digits.npz")
TEST_FRACTION = 0.1
SPLIT_RANDOM_STATE = 0


def scale_to_uint8(images: np.ndarray) -> np.ndarray:
    """Map scikit-learn's 0..16 digit intensities to 0..255 uint8 with ``round(v * 255 / 16)``."""
    return np.round(np.asarray(images, dtype=np.float64) * 255.0 / 16.0).astype(np.uint8)


def build_digits_arrays() -> dict[str, np.ndarray]:
    """Return ``images`` (N, 8, 8) uint8, ``labels`` (N,) uint8 and ``is_test`` (N,) bool in scikit-learn's order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target.astype(np.uint8)
    indices = np.arange(len(labels))
    _, test_indices = train_test_split(
        indices, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_RANDOM_STATE
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_indices] = True
    return {"images": scale_to_uint8(digits.images), "labels": labels, "is_test": is_test}


def main(path: Path = DIGITS_NPZ_PATH) -> None:
    """Write the digits arrays to ``path`` (compressed npz)."""
    arrays = build_digits_arrays()
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(arrays['labels'])} digits, {int(arrays['is_test'].sum())} in the test split")


if __name__ == "__main__":
    main()
