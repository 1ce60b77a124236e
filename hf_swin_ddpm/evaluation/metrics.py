"""`SampleMetrics`: FID, KID and Inception Score of generated images against real ones, on torchmetrics' metrics.

The extractor runs once per batch; torchmetrics' `FrechetInceptionDistance`, `KernelInceptionDistance` and
`InceptionScore` then accumulate its outputs (each given a pass-through "feature extractor" module, the custom
extractor path torchmetrics documents), so their states, sums and subset sampling are torchmetrics' own. The FID
value comes from the accumulated mean and covariance through :func:`frechet_distance` (pytorch-fid's sqrtm formula
and safeguards, float64) rather than torchmetrics' eigenvalue formula; the two agree to ~1e-8 on well-conditioned
statistics.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from .extractors import EvaluationError, load_extractor
from .statistics import ReferenceStatistics, StaleStatisticsError, frechet_distance


class _Precomputed(nn.Module):
    """The identity: the torchmetrics metrics receive features the extractor already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class SampleMetrics:
    """
    Accumulates real and generated images and computes FID (Heusel et al. 2017), KID (Binkowski et al. 2018, mean
    and std over subsets) and the Inception Score (Salimans et al. 2016, mean and std over splits).

    Args:
        features (`str` or `nn.Module`, defaults to `"classifier"`):
            `"classifier"` (the digit classifier of `classifier_dataset`, trained and cached on first use),
            `"inception"` (the FID Inception-v3; needs `inception_weights` and torch-fidelity) or an extractor
            module with `extract(images) -> (features, logits)`, `num_features` and `extractor_id`.
        classifier_dataset (`str`, defaults to `"mnist"`): `digits` or `mnist`, for `features="classifier"`.
        seed (`int`, defaults to 0): the classifier's training seed and the seed of KID's subsets and IS's splits.
        inception_weights (`str`, *optional*): the Inception weights file, or a Hub repo (`REPO[:FILENAME]`).
        kid_subsets (`int`, defaults to 100), kid_subset_size (`int`, defaults to 1000): KID's subsets; the size is
            capped at the number of real and of generated images.
        is_splits (`int`, defaults to 10): splits of the generated set for the Inception Score.
        cache_dir (`str`, *optional*): where the classifier is cached (default: the Hugging Face hub cache).
        device (`str` or `torch.device`, *optional*): where the extractor runs.

    Images are float `(N, C, H, W)` tensors in [0, 1] (what `DDPMPaperPipeline(..., output_type="pt")` returns).
    """

    def __init__(
        self,
        features: str | nn.Module = "classifier",
        *,
        classifier_dataset: str = "mnist",
        seed: int = 0,
        inception_weights: str | Path | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        cache_dir: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.extractor = load_extractor(
            features,
            classifier_dataset=classifier_dataset,
            seed=seed,
            inception_weights=inception_weights,
            cache_dir=cache_dir,
            device=device,
        )
        self.extractor_id: str = self.extractor.extractor_id
        self.seed = seed
        self.kid_subset_size = kid_subset_size
        self.is_splits = is_splits
        passthrough = _Precomputed(self.extractor.num_features)
        with warnings.catch_warnings():  # "will save all extracted features in buffer": they are small features
            warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
            # no torchmetrics sync across processes: a SampleMetrics is given every image of the set itself (the
            # main process scores the samples all processes drew, `generate_samples`)
            local = {"sync_on_compute": False}
            self.fid = FrechetInceptionDistance(feature=passthrough, reset_real_features=False, **local)
            self.kid = KernelInceptionDistance(
                feature=passthrough,
                subsets=kid_subsets,
                subset_size=kid_subset_size,
                reset_real_features=False,
                **local,
            )
            self.inception_score = InceptionScore(feature=passthrough, splits=is_splits, **local)
        self.reference: ReferenceStatistics | None = None

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The extractor's (features, logits) of images in [0, 1], float64 on the CPU."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("images must be a float (N, C, H, W) tensor in [0, 1].")
        if images.is_floating_point() and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"images must lie in [0, 1] (a model's [-1, 1] output maps by (x + 1) / 2), got "
                f"[{images.min().item():.3g}, {images.max().item():.3g}]."
            )
        features, logits = self.extractor.extract(images)
        return features.cpu().double(), logits.cpu().double()

    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of real (`real=True`) or generated images."""
        features, logits = self.extract(images)
        self.update_features(features, logits, real)

    def update_features(self, features: torch.Tensor, logits: torch.Tensor | None, real: bool) -> None:
        """Add features (and logits, used for generated images' IS) computed by this metric's extractor."""
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)
        if not real and logits is not None:
            self.inception_score.update(logits)

    def set_reference(self, reference: ReferenceStatistics) -> None:
        """Use precomputed real statistics (e.g. from `reference_statistics`) instead of real images.

        They must come from this metric's extractor; KID needs their `features` (otherwise it is not computed).
        """
        if reference.extractor != self.extractor_id:
            raise StaleStatisticsError(
                f"the reference statistics were computed with {reference.extractor!r}, this metric uses "
                f"{self.extractor_id!r}; compute them with the same features."
            )
        # pytorch-fid's files record no count (0): FID needs only mu and sigma, rebuilt exactly from any count >= 2
        count = max(int(reference.count), 2)
        mean = torch.from_numpy(np.asarray(reference.mean, np.float64))
        covariance = torch.from_numpy(np.asarray(reference.covariance, np.float64))
        # torchmetrics keeps sum(x) and sum(x x^T); rebuild them from the mean and the unbiased covariance
        self.fid.real_features_sum = mean * count
        self.fid.real_features_cov_sum = covariance * (count - 1) + count * torch.outer(mean, mean)
        self.fid.real_features_num_samples = torch.tensor(count, dtype=torch.long)
        self.kid.real_features = []
        if reference.features is not None:
            self.kid.real_features = [torch.from_numpy(np.asarray(reference.features, np.float64))]
        self.reference = reference
        self.kid._computed = None  # torchmetrics caches compute() until the next update

    def statistics(self, real: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """The accumulated mean, covariance and count of the real or generated features (float64)."""
        prefix = "real" if real else "fake"
        count = int(getattr(self.fid, f"{prefix}_features_num_samples"))
        if count < 2:
            raise EvaluationError(
                f"FID needs at least 2 {'real' if real else 'generated'} images, got {count}; add more."
            )
        total = getattr(self.fid, f"{prefix}_features_sum").double()
        mean = total / count
        covariance = (getattr(self.fid, f"{prefix}_features_cov_sum").double() - count * torch.outer(mean, mean)) / (
            count - 1
        )
        return mean.numpy(), covariance.numpy(), count

    def compute(self) -> dict[str, Any]:
        """`fid`, `kid_mean`, `kid_std` (None without real features), `inception_score_mean`,
        `inception_score_std`, `num_real` and `num_generated`. Seeded by `seed` (KID subsets, IS splits)."""
        real_mean, real_covariance, num_real = self.statistics(real=True)
        fake_mean, fake_covariance, num_generated = self.statistics(real=False)
        results: dict[str, Any] = {
            "fid": frechet_distance(fake_mean, fake_covariance, real_mean, real_covariance),
            "kid_mean": None,
            "kid_std": None,
            "inception_score_mean": None,
            "inception_score_std": None,
            "num_real": num_real if self.reference is None or self.reference.count >= 2 else None,
            "num_generated": num_generated,
            "features": self.extractor_id,
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.kid.real_features:
                num_kid_real = sum(len(chunk) for chunk in self.kid.real_features)
                self.kid.subset_size = min(self.kid_subset_size, num_kid_real, num_generated)
                kid_mean, kid_std = self.kid.compute()
                results["kid_mean"], results["kid_std"] = float(kid_mean), float(kid_std)
            if self.inception_score.features:
                self.inception_score.splits = min(self.is_splits, num_generated)
                with warnings.catch_warnings():  # one split has no std (NaN, reported as None)
                    warnings.filterwarnings("ignore", message=".*degrees of freedom", category=UserWarning)
                    is_mean, is_std = self.inception_score.compute()
                results["inception_score_mean"] = float(is_mean)
                results["inception_score_std"] = None if math.isnan(float(is_std)) else float(is_std)
        return results

    def reset(self) -> None:
        """Forget the generated images (the real ones or the reference stay)."""
        self.fid.reset()
        self.kid.reset()
        self.inception_score.reset()
