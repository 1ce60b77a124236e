"""The DDPM paper's released checkpoints (diffusers' `DDPMPipeline` conversions) through the real `huggingface_hub`
client: loaded from a Hub cache laid out as the real repositories, sampled with the paper's sampler on request."""

import logging

import pytest
import torch
from diffusers import DDPMScheduler
from released_checkpoints import add_released_ddpm

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler

STEPS = 8


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub_cache")
    unets = {
        "google/ddpm-cifar10-32": add_released_ddpm(cache, "google/ddpm-cifar10-32", "fixed_large", weights="bin"),
        "google/ddpm-ema-church-256": add_released_ddpm(
            cache, "google/ddpm-ema-church-256", "fixed_small", weights="safetensors", seed=1
        ),
        "google/ddpm-cat-256": add_released_ddpm(cache, "google/ddpm-cat-256", "fixed_small", weights="both", seed=2),
    }
    return cache, unets


def load(hub_cache, repo_id, **kwargs):
    cache, _ = hub_cache
    pipe = DDPMPaperPipeline.from_pretrained(repo_id, cache_dir=cache, local_files_only=True, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, seed=0):
    return pipe(
        batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=STEPS, output_type="pt"
    )


@pytest.mark.parametrize(
    "repo_id, variance_type, use_safetensors",
    [("google/ddpm-cifar10-32", "fixed_large", False), ("google/ddpm-ema-church-256", "fixed_small", True)],
)
def test_paper_sampler_is_a_hand_built_algorithm_2_chain(hub_cache, repo_id, variance_type, use_safetensors):
    """The official code sampled CIFAR-10 with sigma^2 = beta and the 256x256 models with beta_tilde; no clipping."""
    pipe = load(hub_cache, repo_id, paper_sampler=True, use_safetensors=use_safetensors)
    assert type(pipe.scheduler) is DDPMPaperScheduler
    assert pipe.scheduler.config.variance_type == variance_type and pipe.scheduler.config.clip_sample is False

    unet = hub_cache[1][repo_id]
    by_hand = DDPMPaperPipeline(
        unet=unet, scheduler=DDPMPaperScheduler(variance_type=variance_type, clip_sample=False)
    )
    by_hand.set_progress_bar_config(disable=True)
    torch.testing.assert_close(draw(pipe).images, draw(by_hand).images, rtol=0, atol=0)
    # and it differs from the repository's own sampler (clipping x_0 at every step)
    assert not torch.equal(draw(load(hub_cache, repo_id, use_safetensors=use_safetensors)).images, draw(pipe).images)


def test_without_the_keyword_the_repository_sampler_runs_and_one_line_says_so(hub_cache, capfd, caplog):
    pipe = load(hub_cache, "google/ddpm-cat-256")
    again = load(hub_cache, "google/ddpm-cat-256")
    assert type(pipe.scheduler) is DDPMScheduler and type(again.scheduler) is DDPMScheduler
    assert pipe.scheduler.config.clip_sample is True and pipe.scheduler.config.variance_type == "fixed_small"
    reference = DDPMPaperPipeline(
        unet=hub_cache[1]["google/ddpm-cat-256"], scheduler=DDPMScheduler.from_config(pipe.scheduler.config)
    )
    reference.set_progress_bar_config(disable=True)
    torch.testing.assert_close(draw(pipe).images, draw(reference).images, rtol=0, atol=0)

    line = (
        "google/ddpm-cat-256: sampling with the repository's DDPMScheduler (variance_type='fixed_small', "
        "clip_sample=True), not Algorithm 2 as the paper runs it; pass `paper_sampler=True`"
    )
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert sum(message.startswith(line) for message in warnings) == 1, warnings
    # the old configs (diffusers 0.1.1 keys, the legacy root files) load without other warnings, logged or printed
    assert [message for message in warnings if not message.startswith(line)] == []
    printed = [text for text in capfd.readouterr().err.splitlines() if text.strip() and "Loading pipeline" not in text]
    assert printed == [], printed


def test_pickled_weights_only_with_allow_pickle(hub_cache):
    from hf_swin_ddpm.hub import load_saved

    cache, _ = hub_cache
    folder = next((cache / "models--google--ddpm-cifar10-32" / "snapshots").iterdir())
    with pytest.raises(ValueError, match="allow_pickle"):
        load_saved(folder)
    pipe, _ = load_saved(folder, allow_pickle=True)
    assert isinstance(pipe, DDPMPaperPipeline)
