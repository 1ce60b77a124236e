"""hf_swin_ddpm.evaluation: the Frechet distance, FID / KID / IS on torchmetrics, the digit classifier, the cache."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import linalg
from torchmetrics.image.fid import _compute_fid

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.diffusion import paper_unet
from hf_swin_ddpm.evaluation import (
    EvaluationError,
    ReferenceStatistics,
    SampleMetrics,
    StaleStatisticsError,
    add_pipeline_samples,
    feature_statistics,
    frechet_distance,
    load_statistics,
    reference_statistics,
)
from hf_swin_ddpm.evaluation.extractors import CLASSIFIER_MIN_ACCURACY, load_classifier, load_extractor
from hf_swin_ddpm.evaluation.sampling import sample_seed


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T + 0.1 * np.eye(dim)


# --- frechet_distance ---------------------------------------------------------------------------------------------


def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    # diagonal covariances commute: W2^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # one-dimensional Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == (
        pytest.approx(9.0 + 1.0)
    )


@pytest.mark.parametrize("dim", [2, 9, 40])
def test_frechet_distance_matches_scipy_symmetric_form_and_torchmetrics(dim):
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the symmetric (eigh-based) form, for SPD matrices
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1, sigma2 = random_spd(rng, dim), random_spd(rng, dim)
    root1 = linalg.sqrtm(sigma1).real
    eigenvalues = linalg.eigh(root1 @ sigma2 @ root1, eigvals_only=True)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sum(np.sqrt(eigenvalues))
    value = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert value == pytest.approx(expected, rel=1e-8)
    tensors = [torch.from_numpy(x) for x in (mu1, sigma1, mu2, sigma2)]
    assert value == pytest.approx(_compute_fid(*tensors).item(), rel=1e-8)


def test_frechet_distance_singular_covariances_use_the_offset_and_stay_finite():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 20))  # 5 samples in 20 dimensions: rank-4 covariances
    mean, covariance = feature_statistics(features)
    assert np.linalg.matrix_rank(covariance) == 4
    assert frechet_distance(mean, covariance, mean, covariance) == pytest.approx(0.0, abs=1e-4)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="different lengths"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances must both be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def test_feature_statistics_are_float64_numpy_mean_and_unbiased_covariance():
    features = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    mean, covariance = feature_statistics(features)
    assert mean.dtype == covariance.dtype == np.float64
    as_double = features.double().numpy()
    np.testing.assert_allclose(mean, as_double.mean(0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(as_double, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))


# --- SampleMetrics with a custom extractor ----------------------------------------------------------------------


class FixedFeatures(torch.nn.Module):
    """An extractor whose features and logits are the flattened image itself (known outputs)."""

    extractor_id = "flat-pixels"

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def extract(self, images):
        flat = images.flatten(1).double()
        return flat, flat


def test_sample_metrics_fid_of_a_set_with_itself_is_zero_and_equals_torchmetrics():
    images = torch.rand(64, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    other = (torch.rand(64, 1, 2, 3, generator=torch.Generator().manual_seed(1)) * 0.5).clamp(0, 1)
    metrics = SampleMetrics(FixedFeatures(6), kid_subset_size=64)
    metrics.update(images, real=True)
    metrics.update(images, real=False)
    assert metrics.compute()["fid"] == pytest.approx(0.0, abs=1e-9)
    metrics.reset()
    metrics.update(other, real=False)
    result = metrics.compute()
    assert result["fid"] > 0.01
    assert result["fid"] == pytest.approx(metrics.fid.compute().item(), rel=1e-8)
    assert result["num_real"] == result["num_generated"] == 64


def direct_unbiased_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2_u with the polynomial kernel (x.y / d + 1)^3, written out over the pairs i != j."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_the_direct_unbiased_formula():
    generator = torch.Generator().manual_seed(3)
    real, fake = torch.rand(20, 1, 2, 2, generator=generator), torch.rand(20, 1, 2, 2, generator=generator) ** 2
    metrics = SampleMetrics(FixedFeatures(4), kid_subsets=3)  # subset = all 20: every subset is the whole set
    metrics.update(real, real=True)
    metrics.update(fake, real=False)
    result = metrics.compute()
    expected = direct_unbiased_mmd(real.flatten(1).double().numpy(), fake.flatten(1).double().numpy())
    assert result["kid_mean"] == pytest.approx(expected, rel=1e-9)
    assert result["kid_std"] == pytest.approx(0.0, abs=1e-12)


class KnownLogits(torch.nn.Module):
    """Logits: a large margin on the class given by the image's first pixel * 10 (confident predictions)."""

    extractor_id = "known-logits"
    num_features = 2

    def extract(self, images):
        classes = (images[:, 0, 0, 0] * 10).round().long()
        logits = torch.full((len(images), 10), -50.0, dtype=torch.float64)
        logits[torch.arange(len(images)), classes] = 50.0
        return images.flatten(1)[:, :2].double(), logits


def test_inception_score_of_a_classifier_with_known_outputs():
    # confident predictions with class frequencies p give IS = exp(KL(p(y|x) || p(y))) = exp(H(p)):
    # K equally frequent classes give K, one class gives 1 (one split: independent of torchmetrics' shuffling)
    metrics = SampleMetrics(KnownLogits(), is_splits=1)
    metrics.update(torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.5, real=True)
    images = torch.zeros(40, 1, 2, 2)
    images[:, 0, 0, 0] = torch.arange(40).remainder(5).float() / 10  # classes 0..4, 8 of each
    metrics.update(images, real=False)
    assert metrics.compute()["inception_score_mean"] == pytest.approx(5.0, rel=1e-9)
    metrics.reset()
    images[:, 0, 0, 0] = torch.tensor([0.0] * 20 + [0.1] * 10 + [0.2] * 10)  # p = (1/2, 1/4, 1/4)
    metrics.update(images, real=False)
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert metrics.compute()["inception_score_mean"] == pytest.approx(math.exp(entropy), rel=1e-9)
    metrics.reset()
    metrics.update(torch.zeros(40, 1, 2, 2), real=False)
    assert metrics.compute()["inception_score_mean"] == pytest.approx(1.0, rel=1e-9)


def test_inception_score_splits_give_mean_and_std():
    metrics = SampleMetrics(KnownLogits(), is_splits=4)
    metrics.update(torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.5, real=True)
    images = torch.zeros(400, 1, 2, 2)
    images[:, 0, 0, 0] = torch.arange(400).remainder(5).float() / 10
    metrics.update(images, real=False)
    result = metrics.compute()
    assert 4.0 < result["inception_score_mean"] < 5.0 and result["inception_score_std"] > 0
    assert metrics.compute() == result  # seeded: the same shuffling every time


def test_sample_metrics_rejects_images_outside_unit_range_and_too_few_images():
    metrics = SampleMetrics(FixedFeatures(4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.update(torch.full((2, 1, 2, 2), -1.0), real=False)
    metrics.update(torch.rand(3, 1, 2, 2), real=True)
    metrics.update(torch.rand(1, 1, 2, 2), real=False)
    with pytest.raises(EvaluationError, match="at least 2 generated"):
        metrics.compute()


# --- the classifier extractor on real digits ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "digits-classifier-cache"  # shared with test_cli_evaluate_ddpm
    return load_extractor("classifier", classifier_dataset="digits", cache_dir=cache), cache


def test_classifier_is_accurate_deterministic_and_cached(digits_classifier):
    extractor, cache = digits_classifier
    assert extractor.record["test_accuracy"] >= CLASSIFIER_MIN_ACCURACY
    cached, record = load_classifier("digits", 0, cache)  # loaded from the cache: same weights
    assert record == extractor.record
    for name, tensor in extractor.classifier.state_dict().items():
        assert torch.equal(cached.state_dict()[name], tensor)
    assert (
        cache / "models--hf-swin-ddpm--classifier-digits-seed0" / "snapshots" / "v1" / "model.safetensors"
    ).is_file()


def test_classifier_fid_real_vs_real_is_small_and_real_vs_noise_large(digits_classifier, tmp_path):
    extractor, _ = digits_classifier
    train = reference_statistics("digits:train", extractor, resolution=16, channels=1, cache_dir=tmp_path)
    test = reference_statistics("digits:test", extractor, resolution=16, channels=1, cache_dir=tmp_path)
    assert train.count == 1617 and test.count == 180
    metrics = SampleMetrics(extractor)
    metrics.set_reference(train)
    metrics.update_features(torch.from_numpy(test.features).double(), None, real=False)
    real_vs_real = metrics.compute()["fid"]
    metrics.reset()
    metrics.update(torch.rand(180, 1, 16, 16, generator=torch.Generator().manual_seed(0)), real=False)
    real_vs_noise = metrics.compute()
    assert real_vs_noise["fid"] > 20 * real_vs_real
    assert real_vs_noise["kid_mean"] > 0.1


# --- the statistics cache --------------------------------------------------------------------------------------------


class CountingExtractor(FixedFeatures):
    """Flat pixels at 2x2, counting its calls."""

    def __init__(self) -> None:
        super().__init__(4)
        self.calls = 0

    def extract(self, images):
        self.calls += 1
        return super().extract(torch.nn.functional.adaptive_avg_pool2d(images, 2))


def test_reference_statistics_cache_round_trip(tmp_path):
    extractor = CountingExtractor()
    first = reference_statistics("digits:test", extractor, resolution=8, channels=1, cache_dir=tmp_path)
    calls = extractor.calls
    again = reference_statistics("digits:test", extractor, resolution=8, channels=1, cache_dir=tmp_path)
    assert extractor.calls == calls  # served from the .npz
    np.testing.assert_array_equal(first.mean, again.mean)
    np.testing.assert_array_equal(first.covariance, again.covariance)
    np.testing.assert_array_equal(first.features, again.features)
    assert (again.count, again.extractor, again.dataset) == (180, "flat-pixels", first.dataset)
    # a file passed as the reference is read back with pytorch-fid's keys
    path = first.save(tmp_path / "digits-test.npz")
    with np.load(path) as stored:
        np.testing.assert_array_equal(stored["mu"], first.mean)
        np.testing.assert_array_equal(stored["sigma"], first.covariance)
    loaded = reference_statistics(str(path), extractor, resolution=8, channels=1)
    assert loaded.count == 180 and loaded.dataset == first.dataset
    # other parameters are other statistics
    reference_statistics("digits:test", extractor, resolution=8, channels=1, max_images=50, cache_dir=tmp_path)
    assert extractor.calls > calls


def test_stale_statistics_of_another_extractor_or_dataset_are_rejected(tmp_path):
    stats = ReferenceStatistics.from_features(np.random.default_rng(0).normal(size=(10, 3)), "classifier-a", "mnist")
    path = stats.save(tmp_path / "stats.npz")
    with pytest.raises(StaleStatisticsError, match="classifier-a"):
        load_statistics(path, extractor="classifier-b")
    with pytest.raises(StaleStatisticsError, match="digits"):
        load_statistics(path, extractor="classifier-a", dataset="digits")
    with pytest.raises(StaleStatisticsError, match="classifier-a"):
        reference_statistics(str(path), CountingExtractor(), resolution=8, channels=1)
    metrics = SampleMetrics(CountingExtractor())
    with pytest.raises(StaleStatisticsError, match="same features"):
        metrics.set_reference(stats)


# --- the inception extractor's errors --------------------------------------------------------------------------


def test_inception_without_weights_or_packages_says_what_to_install_and_pass(tmp_path):
    with pytest.raises(EvaluationError, match="--inception_weights PATH_OR_REPO"):
        SampleMetrics("inception")
    with pytest.raises(EvaluationError, match="is not a file"):
        SampleMetrics("inception", inception_weights=str(tmp_path / "missing.pth"))
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"not checked before the packages")
    # torch-fidelity needs torchvision, which does not load beside this CPU torch: the packages are missing here
    with pytest.raises(EvaluationError, match=r"pip install 'hf-swin-ddpm\[eval\]'"):
        SampleMetrics("inception", inception_weights=str(weights))
    with pytest.raises(EvaluationError, match="unknown features"):
        SampleMetrics("lenet")


class ImageRecorder:
    """Stands where `add_pipeline_samples` puts the generated images: keeps them."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def update(self, images: torch.Tensor, real: bool) -> None:
        assert not real
        self.images.append(images)


def test_add_pipeline_samples_draws_the_pipelines_own_samples_in_fp32_and_bf16():
    torch.manual_seed(0)
    unet = paper_unet(
        "tiny", sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), norm_num_groups=4
    )
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=10))
    drawn = {}
    for dtype in (None, torch.bfloat16):
        recorder = ImageRecorder()
        timing = add_pipeline_samples(
            recorder, pipeline, 5, 3, batch_size=3, seed=4, progress=False, autocast_dtype=dtype
        )
        expected = [  # sample i from the generator seeded (4, i)
            pipeline(
                batch_size=len(indices),
                generator=[torch.Generator().manual_seed(sample_seed(4, index)) for index in indices],
                num_inference_steps=3,
                output_type="pt",
                autocast_dtype=dtype,
            ).images
            for indices in (range(3), range(3, 5))
        ]
        assert [tuple(images.shape) for images in recorder.images] == [(3, 1, 8, 8), (2, 1, 8, 8)]
        assert all(torch.equal(got, want) for got, want in zip(recorder.images, expected, strict=True))
        assert timing["autocast_dtype"] == (None if dtype is None else "bfloat16")
        drawn[dtype] = torch.cat(recorder.images)
    assert not torch.equal(drawn[None], drawn[torch.bfloat16])  # the bf16 forward really ran
