"""`evaluate-ddpm --samples_dir / --from_samples` and `sweep-ddpm`: samples that do not depend on the batch size or the
number of processes, resumed and repaired runs, refused contradictions, other tools' files (guided-diffusion's
sample batch .npz, pytorch-fid's statistics .npz)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_support import CONSOLE_SCRIPT, run_cli_in_process

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler
from hf_swin_ddpm.diffusion import paper_unet
from hf_swin_ddpm.diffusion.samplers import SAMPLERS, sampler_scheduler
from hf_swin_ddpm.evaluation import SampleMetrics
from hf_swin_ddpm.evaluation.extractors import load_classifier
from hf_swin_ddpm.evaluation.reference import reference_statistics
from hf_swin_ddpm.evaluation.sample_folder import load_sample_images, save_sample_batch
from hf_swin_ddpm.evaluation.sampling import draw_samples
from hf_swin_ddpm.evaluation.statistics import ReferenceStatistics

ACCELERATE = CONSOLE_SCRIPT.with_name("accelerate")
N, STEPS = 6, 3
METRICS = ("fid", "kid_mean", "inception_score_mean")


@pytest.fixture(scope="module")
def root(tmp_path_factory, one_thread):
    """A tiny 8x8 grayscale DDPM (random weights, T = 40) and the digits classifier cache."""
    root = tmp_path_factory.mktemp("samples")
    torch.manual_seed(0)
    unet = paper_unet(
        "tiny", sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), norm_num_groups=4
    )
    DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=40)).save_pretrained(root / "model")
    cache = tmp_path_factory.getbasetemp() / "digits-classifier-cache"  # shared with the other evaluation tests
    load_classifier("digits", 0, cache)
    (root / "cache").symlink_to(cache, target_is_directory=True)
    return root


def evaluate(root: Path, capsys, *extra: str, output: str = "eval.json") -> tuple[int, str, str]:
    args = ["--reference", "digits:test", "--num_samples", str(N), "--num_inference_steps", str(STEPS)]
    args += ["--cache_dir", "cache", "--bpd_images", "0", "--output", output, *extra]
    result = run_cli_in_process("evaluate-ddpm", *args, cwd=root, capsys=capsys)
    return result.returncode, result.stdout, result.stderr


def sample_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("[0-9]*.png"))}


def scores(path: Path) -> dict[str, float]:
    results = json.loads(path.read_text())
    return {name: results[name] for name in METRICS}


def test_samples_and_metrics_do_not_depend_on_batch_size_or_processes(root, capsys):
    # one process, batches of 2 and of 3
    for batch in (2, 3):
        status, out, err = evaluate(root, capsys, "model", "--batch_size", str(batch), "--samples_dir", f"b{batch}")
        assert status == 0, err
        assert f"{N} samples made (0 of them repaired" in out
    assert len(sample_bytes(root / "b2")) == N and sample_bytes(root / "b2") == sample_bytes(root / "b3")
    one = scores(root / "eval.json")
    # sample i is the pipeline's sample under the generator seeded (seed, i), whatever else is in its batch
    pipeline = DDPMPaperPipeline.from_pretrained(root / "model")
    pipeline.set_progress_bar_config(disable=True)
    alone = draw_samples(pipeline, [4], STEPS, seed=0)[0, 0].numpy()
    assert np.array_equal(np.asarray(Image.open(root / "b2" / "000004.png")), alone)

    # two CPU processes (gloo) under accelerate launch, batches of 2: the same files and the same metrics
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    argv = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    argv += ["--main_process_port", str(29500 + os.getpid() % 1000), "--mixed_precision", "no"]
    argv += ["--dynamo_backend", "no", "-m", "hf_swin_ddpm.cli", "evaluate-ddpm", "model", "--reference"]
    argv += ["digits:test", "--num_samples", str(N), "--num_inference_steps", str(STEPS), "--batch_size", "2"]
    argv += ["--cache_dir", "cache", "--bpd_images", "0", "--samples_dir", "p2", "--output", "p2.json"]
    result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((root / "p2.json").read_text())["num_processes"] == 2
    assert sample_bytes(root / "p2") == sample_bytes(root / "b2")
    assert scores(root / "p2.json") == one


def test_a_rerun_makes_only_the_missing_and_broken_samples(root, capsys):
    status, _, err = evaluate(root, capsys, "model", "--batch_size", "4", "--samples_dir", "resume")
    assert status == 0, err
    folder = root / "resume"
    original, first = sample_bytes(folder), scores(root / "eval.json")
    (folder / "000001.png").unlink()  # never written
    (folder / "000003.png").write_bytes(original["000003.png"][:40])  # killed mid-write, without the atomic rename
    (folder / "000005.png").write_bytes(b"not a png")  # a stray file
    before = {name: (folder / name).stat().st_mtime_ns for name in ("000000.png", "000002.png", "000004.png")}
    status, out, err = evaluate(root, capsys, "model", "--batch_size", "4", "--samples_dir", "resume")
    assert status == 0, err
    assert "3 samples made (2 of them repaired: truncated or unreadable files), 3 already there" in out
    assert sample_bytes(folder) == original and scores(root / "eval.json") == first
    assert {name: (folder / name).stat().st_mtime_ns for name in before} == before  # the others were not redrawn
    # a larger N extends the folder
    status, out, err = evaluate(root, capsys, "model", "--samples_dir", "resume", "--num_samples", str(N + 2))
    assert status == 0, err
    assert "2 samples made (0 of them repaired: truncated or unreadable files), 6 already there" in out


def test_arguments_contradicting_the_samples_are_refused_unless_overwrite(root, capsys):
    status, _, err = evaluate(root, capsys, "model", "--samples_dir", "fixed")
    assert status == 0, err
    kept = sample_bytes(root / "fixed")
    for flags, named in [
        (["--seed", "1"], "seed 0, not 1"),
        (["--num_inference_steps", "2"], "num_inference_steps 3, not 2"),
        (["--sampler", "ddim"], "sampler"),
    ]:
        status, _, err = evaluate(root, capsys, "model", "--samples_dir", "fixed", *flags)
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert status == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert named in errors[0] and "--overwrite" in errors[0], errors[0]
        assert sample_bytes(root / "fixed") == kept  # nothing written was lost
    status, _, err = evaluate(root, capsys, "model", "--samples_dir", "fixed", "--seed", "1", "--overwrite")
    assert status == 0, err
    replaced = sample_bytes(root / "fixed")
    assert len(replaced) == N and replaced != kept
    assert json.loads((root / "fixed" / "manifest.json").read_text())["seed"] == 1


def test_from_samples_scores_a_folder_and_a_guided_diffusion_npz_as_the_run_did(root, capsys):
    status, _, err = evaluate(root, capsys, "model", "--samples_dir", "made", output="made.json")
    assert status == 0, err
    expected = scores(root / "made.json")
    images = load_sample_images(root / "made")
    assert images.dtype == torch.uint8 and tuple(images.shape) == (N, 1, 8, 8)
    # guided-diffusion's evaluator reads arr_0, uint8 (N, H, W, C)
    batch = save_sample_batch(root / "made.npz", images)
    with np.load(batch) as stored:
        assert stored.files == ["arr_0"]
        assert stored["arr_0"].dtype == np.uint8 and stored["arr_0"].shape == (N, 8, 8, 1)
        assert np.array_equal(stored["arr_0"][..., 0], images[:, 0].numpy())
    for source in ("made", "made.npz"):
        status, out, err = evaluate(root, capsys, "--from_samples", source, output=f"{source}-scored.json")
        assert status == 0, err
        assert scores(root / f"{source}-scored.json") == expected
    status, _, err = evaluate(root, capsys, "model", "--from_samples", "made")
    assert status == 2 and "MODEL" in err and "--from_samples" in err
    # bad folders: one line each, naming the file or the fix
    (root / "broken").mkdir()
    (root / "broken" / "a.png").write_bytes((root / "made" / "000000.png").read_bytes()[:30])
    (root / "unmanaged").mkdir()
    (root / "unmanaged" / "000000.png").write_bytes((root / "made" / "000000.png").read_bytes())
    for args, fragment in [
        (["--from_samples", "broken"], "a.png"),
        (["--from_samples", "nowhere"], "no such folder or .npz"),
        (["model", "--samples_dir", "unmanaged"], "no manifest.json"),
    ]:
        status, _, err = evaluate(root, capsys, *args)
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert status == 2 and len(errors) == 1 and fragment in errors[0] and "Traceback" not in err, err


def test_pytorch_fid_statistics_are_read_and_written_with_its_keys(root, capsys, tmp_path):
    """pytorch-fid's `fid_score.py` saves `np.savez(path, mu=mu, sigma=sigma)` and reads `f["mu"][:], f["sigma"][:]`
    (pytorch_fid is not installed here, so its documented keys and shapes are checked)."""
    features = np.random.default_rng(0).normal(size=(20, 5))
    ours = ReferenceStatistics.from_features(features, "extractor-x", "data").save(tmp_path / "ours.npz")
    with np.load(ours) as stored:  # what pytorch-fid's loader takes from it
        mu, sigma = stored["mu"][:], stored["sigma"][:]
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-12)
    # a reference written by pytorch-fid (mu and sigma only) gives the FID of the reference it summarises
    metrics = SampleMetrics("classifier", classifier_dataset="digits", cache_dir=root / "cache")
    digits = reference_statistics("digits:test", metrics.extractor, resolution=8, channels=1, cache_dir=root / "cache")
    np.savez(root / "theirs.npz", mu=digits.mean, sigma=digits.covariance)
    status, _, err = evaluate(root, capsys, "model", "--samples_dir", "vs-dataset", output="vs-dataset.json")
    assert status == 0, err
    status, _, err = evaluate(
        root, capsys, "--from_samples", "vs-dataset", "--reference", "theirs.npz", "--classifier_dataset", "digits"
    )
    assert status == 0, err
    against_file = json.loads((root / "eval.json").read_text())
    # measured 2.2e-9 apart: the sums torchmetrics keeps rebuilt from mu and sigma, then sqrtm of a singular product
    assert against_file["fid"] == pytest.approx(scores(root / "vs-dataset.json")["fid"], rel=1e-7)
    assert against_file["kid_mean"] is None and against_file["num_real"] is None  # no features, no count


def test_sweep_ddpm_writes_the_table_and_the_plot(root, capsys):
    args = ["model", "--reference", "digits:test", "--num_samples", "4", "--num_inference_steps", "2", "3"]
    args += ["--sampler", "paper", "ddim", "--cache_dir", "cache", "--batch_size", "4", "--output_dir", "sweep"]
    result = run_cli_in_process("sweep-ddpm", *args, cwd=root, capsys=capsys)
    assert result.returncode == 0, result.stderr
    with (root / "sweep" / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["sampler"], int(row["steps"])) for row in rows] == [
        ("paper", 2),
        ("paper", 3),
        ("ddim", 2),
        ("ddim", 3),
    ]
    assert list(rows[0]) == ["sampler", "steps", "seconds", "samples_per_second", "fid", "kid", "inception_score"]
    assert all(float(row["fid"]) > 0 and float(row["seconds"]) > 0 for row in rows)
    with Image.open(root / "sweep" / "sweep.png") as plot:
        assert plot.size[0] > 500
    # a cell is evaluate-ddpm's result for that sampler and step count
    status, _, err = evaluate(
        root, capsys, "model", "--num_samples", "4", "--sampler", "ddim", "--num_inference_steps", "2", output="c.json"
    )
    assert status == 0, err
    assert float(rows[2]["fid"]) == pytest.approx(json.loads((root / "c.json").read_text())["fid"], rel=1e-12)


def test_a_sigterm_keeps_the_samples_written_and_the_rerun_finishes_them(root, capsys):
    num, steps = 24, 20
    args = ["evaluate-ddpm", "model", "--reference", "digits:test", "--num_samples", str(num), "--batch_size", "2"]
    args += [
        "--num_inference_steps",
        str(steps),
        "--cache_dir",
        "cache",
        "--bpd_images",
        "0",
        "--samples_dir",
        "killed",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([str(CONSOLE_SCRIPT), *args], cwd=root, env=env, stderr=subprocess.DEVNULL)
    folder = root / "killed"
    deadline = time.monotonic() + 120
    while len(list(folder.glob("[0-9]*.png"))) < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0  # killed before the end
    written = sample_bytes(folder)
    assert 4 <= len(written) < num
    pipeline = DDPMPaperPipeline.from_pretrained(root / "model")
    pipeline.set_progress_bar_config(disable=True)
    for name in written:  # every file there is a whole, correct sample
        index = int(name.removesuffix(".png"))
        with Image.open(folder / name) as image:
            assert np.array_equal(np.asarray(image), draw_samples(pipeline, [index], steps, seed=0)[0, 0].numpy())
    result = run_cli_in_process(*args, "--output", "k.json", cwd=root, capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert f"{num - len(written)} samples made (0 of them repaired" in result.stdout
    assert f"{len(written)} already there" in result.stdout
    assert {name: data for name, data in sample_bytes(folder).items() if name in written} == written


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_draws_sample_i_from_its_own_generator_whatever_the_batch(root, sampler):
    """diffusers' schedulers take the list of generators too (initial noise and each step's noise per sample)."""
    pipeline = DDPMPaperPipeline.from_pretrained(root / "model")
    pipeline.scheduler = sampler_scheduler(sampler, pipeline.scheduler)
    pipeline.set_progress_bar_config(disable=True)
    together = draw_samples(pipeline, [0, 1, 2], STEPS, seed=3)
    apart = torch.cat([draw_samples(pipeline, [0], STEPS, seed=3), draw_samples(pipeline, [1, 2], STEPS, seed=3)])
    assert torch.equal(together, apart)
    assert not torch.equal(together, draw_samples(pipeline, [0, 1, 2], STEPS, seed=4))
