"""Feature statistics and the Frechet distance (Heusel et al. 2017), and their `.npz` files (pytorch-fid's keys).

FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2)), the Frechet (Wasserstein-2) distance
between the Gaussians fitted to two sets of features.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

STATISTICS_FORMAT_VERSION = 1
# The diagonal offset pytorch-fid adds to both covariances when sqrtm(Sigma_1 Sigma_2) is not finite.
SQRTM_EPS = 1e-6
# pytorch-fid's tolerance on the imaginary part of sqrtm's diagonal (rounding noise of a near-singular product).
IMAGINARY_ATOL = 1e-3


class StaleStatisticsError(ValueError):
    """A statistics file made with another feature extractor or of another dataset than the one asked for."""


def _as_float64_matrix(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(
            f"`features` must be an (N, d) array with N >= 2 (a covariance needs two samples), got shape "
            f"{features.shape}."
        )
    if not np.isfinite(features).all():
        raise ValueError("`features` contains NaN or infinite values; check the feature extractor's input.")
    return features


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and the unbiased covariance (d, d) of (N, d) features, in float64 (pytorch-fid's
    `np.mean(act, axis=0)`, `np.cov(act, rowvar=False)`)."""
    features = _as_float64_matrix(features)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """The Frechet distance between N(mean1, cov1) and N(mean2, cov2), as pytorch-fid's `calculate_frechet_distance`.

    The matrix square root is scipy's `sqrtm` of cov1 @ cov2; when it is not finite (a singular product) both
    covariances get `1e-6 * I` added, and an imaginary part of its diagonal above 1e-3 raises `ValueError` (below,
    the real part is kept), exactly pytorch-fid's safeguards. Everything is float64.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mean1, np.float64)), np.atleast_1d(np.asarray(mean2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two means have different lengths: {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"the covariances must both be ({mu1.size}, {mu1.size}) to match the means, got {sigma1.shape} and "
            f"{sigma2.shape}."
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below, as pytorch-fid does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * SQRTM_EPS
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            largest = np.max(np.abs(covmean.imag))
            raise ValueError(
                f"sqrtm(cov1 @ cov2) has an imaginary component {largest:.3g}: the covariances are too degenerate; "
                "use more samples than feature dimensions."
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@dataclasses.dataclass
class ReferenceStatistics:
    """The statistics of a set of real images under one feature extractor.

    `mean` (d,) and `covariance` (d, d) in float64, `count` images, the `extractor` and `dataset` ids they were
    computed with, and optionally the (count, d) `features` themselves (float32, what KID needs).
    """

    mean: np.ndarray
    covariance: np.ndarray
    count: int
    extractor: str
    dataset: str
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor, extractor: str, dataset: str) -> ReferenceStatistics:
        matrix = _as_float64_matrix(features)
        mean, covariance = feature_statistics(matrix)
        return cls(mean, covariance, matrix.shape[0], extractor, dataset, matrix.astype(np.float32))

    def save(self, path: str | Path) -> Path:
        """Write an `.npz` with pytorch-fid's `mu` and `sigma` keys plus `count`, `extractor`, `dataset`
        (and `features` when present)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "mu": self.mean,
            "sigma": self.covariance,
            "count": np.int64(self.count),
            "extractor": np.str_(self.extractor),
            "dataset": np.str_(self.dataset),
            "version": np.int64(STATISTICS_FORMAT_VERSION),
        }
        if self.features is not None:
            arrays["features"] = self.features
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, **arrays)
        temporary.replace(path)
        return path


def load_statistics(path: str | Path, extractor: str | None = None, dataset: str | None = None) -> ReferenceStatistics:
    """Read a statistics `.npz` (ours, or pytorch-fid's with only `mu` and `sigma`).

    With `extractor` / `dataset` given, a file recorded with other ids raises :class:`StaleStatisticsError` naming
    both (statistics of other features are not comparable); a file without ids (pytorch-fid's) is accepted only when
    `extractor` is None.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"statistics file {path} does not exist; compute it with reference_statistics(...).")
    try:
        with np.load(path, allow_pickle=False) as stored:
            contents = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a statistics .npz file ({error}).") from None
    if "mu" not in contents or "sigma" not in contents:
        raise ValueError(f"{path} has no `mu` and `sigma` arrays; it is not a FID statistics file.")
    recorded_extractor = str(contents["extractor"]) if "extractor" in contents else None
    recorded_dataset = str(contents["dataset"]) if "dataset" in contents else None
    if extractor is not None and recorded_extractor != extractor:
        raise StaleStatisticsError(
            f"{path} holds statistics of extractor {recorded_extractor!r}, not {extractor!r}; delete it or "
            "compute the reference statistics again with this extractor."
        )
    if dataset is not None and recorded_dataset is not None and recorded_dataset != dataset:
        raise StaleStatisticsError(
            f"{path} holds statistics of dataset {recorded_dataset!r}, not {dataset!r}; delete it or compute them "
            "again for this dataset."
        )
    mean = np.asarray(contents["mu"], np.float64)
    return ReferenceStatistics(
        mean=mean,
        covariance=np.atleast_2d(np.asarray(contents["sigma"], np.float64)),
        count=int(contents["count"]) if "count" in contents else 0,
        extractor=recorded_extractor or "unknown",
        dataset=recorded_dataset or "unknown",
        features=contents.get("features"),
    )
