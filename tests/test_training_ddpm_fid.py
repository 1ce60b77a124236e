"""train_ddpm --eval_fid_steps: FID with the EMA weights during training, the final one in all_results.json and card."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard
from test_training_ddpm import TINY, one_thread, train  # noqa: F401  (one_thread: the autouse fixture)
from training_support import flags, same_weights, with_flags

from hf_swin_ddpm import DDPMPaperPipeline
from hf_swin_ddpm.evaluation import SampleMetrics
from hf_swin_ddpm.evaluation.sampling import evaluate_pipeline
from hf_swin_ddpm.training import train_ddpm
from hf_swin_ddpm.training.errors import TrainingError


def test_fid_during_training_is_the_saved_models_fid_and_leaves_training_alone(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "digits-classifier-cache"  # shared with the evaluation tests
    fid_flags = flags(eval_fid_steps=2, eval_fid_samples=6, eval_fid_inference_steps=3, eval_fid_cache_dir=cache)
    fid_flags += flags(eval_batch_size=4)  # the batches of the samples below
    with_fid = train(*with_flags(TINY, output_dir=tmp_path / "fid", max_train_steps=4), *fid_flags)
    plain = train(*with_flags(TINY, output_dir=tmp_path / "plain", max_train_steps=4, eval_batch_size=4))
    assert same_weights(with_fid.training_weights, plain.training_weights)  # sampling leaves the global RNG alone

    results = json.loads((tmp_path / "fid" / "all_results.json").read_text())
    assert results["eval_fid_samples"] == 6 and results["eval_fid_inference_steps"] == 3
    assert results["eval_fid_reference"] == "digits:train" and results["eval_fid"] > 0
    # the final FID is that of the saved (EMA) pipeline, measured again from the folder
    pipeline = DDPMPaperPipeline.from_pretrained(tmp_path / "fid")
    metrics = SampleMetrics("classifier", classifier_dataset="digits", cache_dir=cache)
    again = evaluate_pipeline(pipeline, metrics, "digits:train", 6, 3, batch_size=4, cache_dir=cache, progress=False)
    assert again["fid"] == pytest.approx(results["eval_fid"], rel=1e-5)
    assert again["inception_score_mean"] == pytest.approx(results["eval_inception_score"], rel=1e-5)
    card = ModelCard.load(tmp_path / "fid" / "README.md")
    recorded = {entry.metric_type: entry.metric_value for entry in card.data.eval_results}
    assert recorded["fid"] == pytest.approx(results["eval_fid"], rel=1e-5)
    assert recorded["bits_per_dim"] == pytest.approx(results["eval_total_bpd"], rel=1e-5)  # kept beside it


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (flags(eval_fid_samples=1), "--eval_fid_samples must be at least 2"),
        (flags(eval_fid_inference_steps=0), r"--eval_fid_inference_steps must lie in \[1"),
        (flags(eval_fid_reference="nowhere"), "unknown reference"),
        (flags(dataset_name="shapes"), "needs digit data"),
    ],
)
def test_bad_fid_flags_fail_before_training(tmp_path, extra, match):
    with pytest.raises(TrainingError, match=match):
        train_ddpm.parse_args([*with_flags(TINY, output_dir=tmp_path), *flags(eval_fid_steps=2), *extra])
