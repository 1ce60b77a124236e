"""`hf-swin-ddpm evaluate-ddpm` and `rate-distortion`, run as real subprocesses on a tiny saved pipeline."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.special
import torch
from huggingface_hub import ModelCard
from training_support import assert_one_line_error, run_cli

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.cli import main
from hf_swin_ddpm.data import embedded_dataset
from hf_swin_ddpm.data.transforms import DDPMTransform
from hf_swin_ddpm.diffusion import paper_unet
from hf_swin_ddpm.evaluation.extractors import load_classifier, load_extractor
from hf_swin_ddpm.evaluation.sampling import sample_seed
from hf_swin_ddpm.hub import save_for_hub, update_card_results

T = 40


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    """A tiny 8x8 grayscale DDPM (random weights, T = 40) saved with save_pretrained, and a classifier cache."""
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    unet = paper_unet(
        "tiny", sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), norm_num_groups=4
    )
    DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=T)).save_pretrained(root / "model")
    cache = tmp_path_factory.getbasetemp() / "digits-classifier-cache"  # shared with test_evaluation
    load_classifier("digits", 0, cache)  # trained once, read from the cache by the subprocesses
    (root / "cache").symlink_to(cache, target_is_directory=True)
    return root


def independent_metrics(root, num_samples: int, steps: int, batch_size: int, seed: int = 0) -> dict[str, float]:
    """FID, KID and IS of the CLI's samples, written out in float64 numpy/scipy from the same features: the samples
    redrawn (sample i with a generator seeded `sample_seed(seed, i)`, in uint8), the classifier features of them and of the
    180 digits test images; FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 sum_i sqrt(eig_i(S1 S2)) (Heusel et al. 2017); KID = the
    unbiased MMD^2 with kernel (x.y / d + 1)^3 over 100 subsets of min(N, real) images (Binkowski et al. 2018); IS =
    exp(E KL(p(y|x) || p(y))) over splits (Salimans et al. 2016). Subsets, the IS permutation and the chunking follow
    torchmetrics' conventions (torch.randperm after torch.manual_seed(seed), KID's draws first)."""
    extractor = load_extractor("classifier", classifier_dataset="digits", seed=0, cache_dir=root / "cache")
    pipeline = DDPMPaperPipeline.from_pretrained(root / "model")
    pipeline.set_progress_bar_config(disable=True)
    fake, logits = [], []
    for offset in range(0, num_samples, batch_size):
        indices = range(offset, min(offset + batch_size, num_samples))
        images = pipeline(
            batch_size=len(indices),
            generator=[torch.Generator().manual_seed(sample_seed(seed, index)) for index in indices],
            num_inference_steps=steps,
            output_type="pt",
        ).images
        images = (images * 255).round() / 255  # the uint8 samples a PNG holds
        features, class_logits = extractor.extract(images)
        fake.append(features.double().numpy())
        logits.append(class_logits.double().numpy())
    fake, logits = np.concatenate(fake), np.concatenate(logits)
    transform = DDPMTransform(8, 1, random_flip=False)
    real_images = torch.stack([transform.transform_image(e["image"]) for e in embedded_dataset("digits", "test")])
    real = extractor.extract((real_images + 1) / 2)[0].double().numpy()

    mu1, mu2 = fake.mean(0), real.mean(0)
    s1, s2 = np.cov(fake, rowvar=False), np.cov(real, rowvar=False)
    # tr sqrtm(S1 S2) from the eigenvalues of S1 S2 (real, >= 0 for covariances), not pytorch-fid's sqrtm
    trace_root = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    fid = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root)

    def mmd(x: np.ndarray, y: np.ndarray) -> float:
        kernel = lambda a, b: (a @ b.T / a.shape[1] + 1.0) ** 3  # noqa: E731
        m = len(x)
        k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        return within - 2 * k_xy.sum() / m**2

    subset = min(1000, len(real), len(fake))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = [
            (torch.randperm(len(real))[:subset].numpy(), torch.randperm(len(fake))[:subset].numpy())
            for _ in range(100)
        ]
        order = torch.randperm(len(logits)).numpy()
    kid = [mmd(real[r], fake[f]) for r, f in draws]
    probabilities = scipy.special.softmax(logits[order], axis=1)
    chunk = math.ceil(len(probabilities) / min(10, len(probabilities)))  # torch.chunk's sizes
    scores = []
    for start in range(0, len(probabilities), chunk):
        p = probabilities[start : start + chunk]
        scores.append(math.exp((p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1).mean()))
    return {"fid": fid, "kid_mean": float(np.mean(kid)), "inception_score_mean": float(np.mean(scores))}


def test_evaluate_ddpm_writes_results_prints_the_table_and_updates_the_card(saved_pipeline):
    root = saved_pipeline
    args = ["--reference", "digits:test", "--num_samples", "12", "--num_inference_steps", "4", "--batch_size", "6"]
    args += ["--bpd_images", "6", "--bpd_timesteps", "5", "--cache_dir", "cache", "--output", "out/eval.json"]
    result = run_cli("evaluate-ddpm", "model", *args, "--update_card", cwd=root)
    assert result.returncode == 0, result.stderr
    results = json.loads((root / "out" / "eval.json").read_text())
    assert (results["num_generated"], results["num_real"], results["num_inference_steps"]) == (12, 180, 4)
    assert results["features"] == "classifier-digits-seed0-v1" and results["autocast_dtype"] is None
    expected = independent_metrics(root, num_samples=12, steps=4, batch_size=6)
    # measured relative gaps 2.7e-8 (FID: eigenvalues against scipy's sqrtm of a singular product, 12 samples in
    # 128 dimensions), 2.7e-9 (KID), 0 (IS); unseeded subsets or the IS on features instead of logits move them by >1%
    assert results["fid"] == pytest.approx(expected["fid"], rel=1e-6)
    assert results["kid_mean"] == pytest.approx(expected["kid_mean"], rel=1e-6)
    assert results["inception_score_mean"] == pytest.approx(expected["inception_score_mean"], rel=1e-6)
    assert results["bits_per_dim"] > 0 and results["bits_per_dim_images"] == 6
    for name in ("FID", "KID", "Inception Score", "bits/dim (reference)", "samples N", "steps S"):
        assert name in result.stdout
    assert f"{results['fid']:.4f}" in result.stdout
    card = ModelCard.load(root / "model" / "README.md")
    recorded = {entry.metric_type: entry for entry in card.data.eval_results}
    assert recorded["fid"].metric_value == pytest.approx(results["fid"], rel=1e-6)
    assert recorded["kid"].metric_value == pytest.approx(results["kid_mean"], rel=1e-5)
    assert recorded["inception_score"].metric_value == pytest.approx(results["inception_score_mean"], rel=1e-6)
    assert recorded["bits_per_dim"].metric_value == pytest.approx(results["bits_per_dim"], rel=1e-6)
    assert (recorded["fid"].dataset_name, recorded["fid"].dataset_split) == ("digits", "test")
    assert "N=12, 4 steps" in recorded["fid"].metric_config

    # a push renders the card again from its fields: it keeps these results, the fields' own bits/dim replacing
    pipeline = DDPMPaperPipeline.from_pretrained(root / "model")
    pushed = save_for_hub(
        pipeline, root / "pushed", results_from=root / "model", datasets=["digits"], bits_per_dim=9.5, sample_steps=2
    )
    carried = {
        entry.metric_type: entry.metric_value for entry in ModelCard.load(pushed / "README.md").data.eval_results
    }
    assert carried == {
        "bits_per_dim": 9.5,
        "fid": recorded["fid"].metric_value,
        "kid": recorded["kid"].metric_value,
        "inception_score": recorded["inception_score"].metric_value,
    }


def test_update_card_results_replaces_the_same_metric_and_keeps_the_rest(tmp_path):
    first = {"fid": 12.5, "kid_mean": 0.01, "num_generated": 100, "num_inference_steps": 250, "features": "f"}
    update_card_results(tmp_path, first, dataset="mnist", split="train")
    update_card_results(tmp_path, {**first, "fid": 10.0}, dataset="mnist", split="train")
    update_card_results(tmp_path, {**first, "fid": 30.0}, dataset="mnist", split="test")
    card = ModelCard.load(tmp_path / "README.md")
    values = sorted((entry.metric_type, entry.dataset_split, entry.metric_value) for entry in card.data.eval_results)
    assert values == [("fid", "test", 30.0), ("fid", "train", 10.0), ("kid", "test", 0.01), ("kid", "train", 0.01)]
    assert card.data.model_name == tmp_path.name and card.data.library_name == "diffusers"
    with pytest.raises(ValueError, match="no fid"):
        update_card_results(tmp_path, {"num_generated": 3}, dataset="mnist")


def test_evaluate_ddpm_errors_are_one_line(saved_pipeline, monkeypatch, capsys):
    root = saved_pipeline
    monkeypatch.chdir(root)
    (root / "no-weights" / "unet").mkdir(parents=True, exist_ok=True)
    for name in ("model_index.json", "unet/config.json"):
        (root / "no-weights" / name).write_text((root / "model" / name).read_text())
    base = ["--reference", "digits:test", "--cache_dir", "cache", "--num_inference_steps", "4"]
    # the console script itself: one line on stderr, status 2, no traceback
    assert_one_line_error(
        run_cli("evaluate-ddpm", "model", *base, "--features", "inception", cwd=root),
        "--inception_weights PATH_OR_REPO",
    )
    cases = {  # the same `main` in this process
        "unet weights": (["no-weights", *base], "no safetensors weights"),
        "unknown reference": (["model", "--reference", "no_such_set", "--num_samples", "4"], "unknown reference"),
        "missing statistics": (["model", "--reference", "missing.npz"], "no such statistics file"),
        "N < 2": (["model", *base, "--num_samples", "1"], "--num_samples: expected an integer >= 2"),
        "steps < 1": (["model", "--reference", "digits", "--num_inference_steps", "0"], "--num_inference_steps"),
        "steps > T": (["model", *base[:4], "--num_inference_steps", str(T + 1)], f"the model's T = {T}"),
        "classifier": (["model", "--reference", root.as_posix(), "--num_samples", "4"], "--classifier_dataset"),
    }
    for name, (args, fragment) in cases.items():
        assert main(["evaluate-ddpm", *args]) == 2, name
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if ": error: " in line]
        assert "Traceback" not in stderr and len(errors) == 1, (name, stderr)
        assert errors[0].startswith("hf-swin-ddpm evaluate-ddpm: error: "), (name, errors)
        assert fragment in errors[0], (name, errors[0])
    assert not (root / "eval_results.json").exists()


def test_rate_distortion_writes_the_curve_whose_end_is_the_bound(saved_pipeline):
    root = saved_pipeline
    args = ["--dataset", "digits:test", "--max_eval_samples", "4", "--batch_size", "2", "--output_dir", "rd"]
    result = run_cli("rate-distortion", "model", *args, cwd=root)
    assert result.returncode == 0, result.stderr
    with (root / "rd" / "rate_distortion.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["timestep"]) for row in rows] == list(range(T))
    rate = np.array([float(row["rate_bpd"]) for row in rows])
    assert np.all(np.diff(rate) <= 1e-9)  # the rate only grows as t goes down to 0
    total = float(result.stdout.split(" bits/dim in all")[0].rsplit(" ", 1)[-1])
    assert rate[0] == pytest.approx(total, abs=2e-3)  # printed with 3 decimals
    distortion = np.array([float(row["distortion_rmse"]) for row in rows])
    assert np.all((distortion >= 0) & (distortion <= 255))
    assert (root / "rd" / "rate_distortion.png").stat().st_size > 1000
