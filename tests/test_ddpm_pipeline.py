"""DDPMPaperPipeline: draw-for-draw parity with diffusers' DDPMPipeline, respacing, trajectories, save/load."""

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput

from hf_swin_ddpm import DDPMPaperPipeline, DDPMPaperScheduler, paper_unet
from hf_swin_ddpm.diffusion import PAPER_UNET_PRESETS

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 8


class TameUNet(UNet2DModel):
    """A real (tiny, untrained) UNet2DModel whose noise prediction is x_t + 0.1 * its output.

    An untrained UNet predicts roughly constant noise, and Algorithm 2 then amplifies x_T by 1 / sqrt(abar_T) ~ 156;
    predicting eps ~ x_t keeps the chain in [-1.5, 1.5], so images are not saturated and comparisons are informative.
    """

    def forward(self, sample, timestep, return_dict=True, **kwargs):
        return UNet2DOutput(sample=sample + 0.1 * super().forward(sample, timestep).sample)


def tame_unet(seed: int = 0) -> TameUNet:
    torch.manual_seed(seed)
    unet = TameUNet(
        sample_size=SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8,),
        layers_per_block=1,
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        mid_block_type=None,
        norm_num_groups=4,
    )
    return unet.eval()


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def unet() -> TameUNet:
    return tame_unet()


@pytest.fixture
def pipe(unet) -> DDPMPaperPipeline:
    return quiet(DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler()))


def generate(pipe, seed: int = 0, **kwargs):
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("output_type", "pt")
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs)


def test_reproduces_diffusers_ddpm_pipeline_over_1000_steps(pipe, unet):
    reference = quiet(DDPMPipeline(unet=unet, scheduler=DDPMScheduler(variance_type="fixed_large", clip_sample=False)))
    ours = generate(pipe).images
    theirs = generate(reference).images
    assert ours.shape == (2, 1, SIZE, SIZE)
    assert ((ours > 0.01) & (ours < 0.99)).float().mean() > 0.95  # hardly saturated: the comparison sees the pixels
    # Measured max difference ~1e-5 (x scale [-1, 1] -> images /2): float32 rounding accumulated over 1000 steps,
    # half of it from diffusers' float32 schedule (its effective beta_t has a relative error up to 5e-4).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    assert (generate(pipe, seed=1).images - theirs).abs().max() > 0.1  # another seed is another sample


def test_respaced_50_steps_runs_and_differs_from_1000(pipe, unet):
    respaced = generate(pipe, num_inference_steps=50).images
    full = generate(pipe).images
    assert respaced.shape == full.shape and torch.isfinite(respaced).all()
    assert (respaced - full).abs().max() > 1e-2
    # same draws as diffusers on the same (linspace) chain
    reference_scheduler = DDPMScheduler(variance_type="fixed_large", clip_sample=False, timestep_spacing="linspace")
    reference = quiet(DDPMPipeline(unet=unet, scheduler=reference_scheduler))
    torch.testing.assert_close(respaced, generate(reference, num_inference_steps=50).images, rtol=0, atol=1e-4)


def test_list_of_generators_makes_samples_independent_of_batch_size(pipe):
    batch = pipe(
        batch_size=3,
        generator=[torch.Generator().manual_seed(s) for s in (10, 11, 12)],
        num_inference_steps=20,
        output_type="pt",
    ).images
    alone = pipe(
        batch_size=1, generator=[torch.Generator().manual_seed(11)], num_inference_steps=20, output_type="pt"
    ).images
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-5)
    assert (batch[0] - batch[1]).abs().max() > 0.05


def test_output_types(pipe):
    pil = generate(pipe, num_inference_steps=5, output_type="pil").images
    assert len(pil) == 2 and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (SIZE, SIZE)
    array = generate(pipe, num_inference_steps=5, output_type="np").images
    tensor = generate(pipe, num_inference_steps=5, output_type="pt").images
    assert isinstance(array, np.ndarray) and array.shape == (2, SIZE, SIZE, 1)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 1, SIZE, SIZE)
    assert 0.0 <= array.min() and array.max() <= 1.0
    np.testing.assert_allclose(array, tensor.permute(0, 2, 3, 1).numpy())
    assert generate(pipe, num_inference_steps=5, return_dict=False)[0].shape == (2, 1, SIZE, SIZE)


def test_trajectory_records_xt_and_x0_estimates(pipe):
    out = generate(pipe, num_inference_steps=50, return_trajectory=True)
    assert out.trajectory_timesteps[0] == 999 and out.trajectory_timesteps[-1] == 0
    assert len(out.trajectory_timesteps) == 10 and out.trajectory_timesteps == sorted(out.trajectory_timesteps)[::-1]
    assert out.trajectory_samples.shape == out.trajectory_x0.shape == (10, 2, 1, SIZE, SIZE)
    # the first frame is x_T, the initial noise
    torch.testing.assert_close(
        out.trajectory_samples[0], torch.randn((2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    )
    # the last step is noiseless and its mean equals the x_0 estimate at t = 0, so the last x0 frame is the sample
    torch.testing.assert_close((out.trajectory_x0[-1] / 2 + 0.5).clamp(0, 1), out.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.images, generate(pipe, num_inference_steps=50).images)  # recording changes nothing

    chosen = generate(pipe, num_inference_steps=50, return_trajectory=True, trajectory_timesteps=[999, 0])
    assert chosen.trajectory_timesteps == [999, 0] and chosen.trajectory_x0.shape[0] == 2
    images, timesteps, samples, x0 = generate(pipe, num_inference_steps=5, return_trajectory=True, return_dict=False)
    assert len(timesteps) == samples.shape[0] == x0.shape[0] == 5
    with pytest.raises(ValueError, match=r"`trajectory_timesteps` \[500\] are not in the sampling chain"):
        generate(pipe, num_inference_steps=50, return_trajectory=True, trajectory_timesteps=[500])


def test_callback_on_step_end(pipe):
    seen = []

    def callback(pipeline, step_index, timestep, callback_kwargs):
        seen.append((step_index, int(timestep), tuple(callback_kwargs)))
        if step_index == 4:
            return {"image": torch.zeros_like(callback_kwargs["image"])}
        return {}

    out = generate(
        pipe, num_inference_steps=5, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["image"]
    )
    assert [s[0] for s in seen] == list(range(5)) and seen[0][1] == 999 and seen[-1][1] == 0
    assert all(s[2] == ("image",) for s in seen)
    torch.testing.assert_close(out.images, torch.full_like(out.images, 0.5))  # the replaced x_0 = 0 maps to 0.5

    kinds = []
    generate(
        pipe,
        num_inference_steps=2,
        callback_on_step_end=lambda p, i, t, kw: kinds.append(sorted(kw)),
        callback_on_step_end_tensor_inputs=["model_output", "pred_original_sample"],
    )
    assert kinds == [["model_output", "pred_original_sample"]] * 2
    with pytest.raises(ValueError, match="`callback_on_step_end_tensor_inputs` may only name"):
        generate(pipe, num_inference_steps=2, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["x"])


def test_save_load_round_trip(tmp_path):
    pipe = quiet(DDPMPaperPipeline(unet=paper_unet("tiny", sample_size=SIZE), scheduler=DDPMPaperScheduler()))
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["scheduler"] == ["hf_swin_ddpm.diffusion.scheduling_ddpm_paper", "DDPMPaperScheduler"]
    loaded = quiet(DDPMPaperPipeline.from_pretrained(tmp_path))
    saved = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}  # not written to disk
    assert isinstance(loaded.scheduler, DDPMPaperScheduler) and dict(loaded.scheduler.config) == saved
    torch.testing.assert_close(
        generate(loaded, num_inference_steps=10).images, generate(pipe, num_inference_steps=10).images, rtol=0, atol=0
    )

    pipe.scheduler = DDPMPaperScheduler(variance_type="fixed_small")  # replacing a component keeps it loadable
    pipe.save_pretrained(tmp_path / "again")
    assert DDPMPaperPipeline.from_pretrained(tmp_path / "again").scheduler.config.variance_type == "fixed_small"


def test_pipeline_saved_before_the_diffusion_folder_rename_still_loads():
    """A folder saved when the package's DDPM modules lived in `hf_swin_ddpm/ddpm/` (its `model_index.json` names
    `hf_swin_ddpm.ddpm.scheduling_ddpm_paper`, a module that no longer exists) loads with its scheduler config."""
    folder = Path(__file__).parent / "fixtures" / "pipeline_saved_with_ddpm_folder"
    model_index = json.loads((folder / "model_index.json").read_text())
    assert model_index["scheduler"][0] == "hf_swin_ddpm.ddpm.scheduling_ddpm_paper"
    loaded = quiet(DDPMPaperPipeline.from_pretrained(folder))
    assert isinstance(loaded.scheduler, DDPMPaperScheduler)
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert {k: loaded.scheduler.config[k] for k in saved if not k.startswith("_")} == {
        k: v for k, v in saved.items() if not k.startswith("_")
    }
    rebuilt = quiet(
        DDPMPaperPipeline(
            unet=UNet2DModel.from_pretrained(folder / "unet"),
            scheduler=DDPMPaperScheduler(**{k: v for k, v in saved.items() if not k.startswith("_")}),
        )
    )
    torch.testing.assert_close(
        generate(loaded, num_inference_steps=5).images, generate(rebuilt, num_inference_steps=5).images, rtol=0, atol=0
    )


def test_works_with_diffusers_scheduler(unet):
    def scheduler() -> DDPMScheduler:  # diffusers' defaults otherwise: "leading" spacing, timesteps 900, 800, ..., 0
        return DDPMScheduler(variance_type="fixed_large", clip_sample=False)

    pipe = quiet(DDPMPaperPipeline(unet=unet, scheduler=scheduler()))
    out = generate(pipe, num_inference_steps=10, return_trajectory=True, trajectory_timesteps=3)
    assert out.trajectory_x0.shape == (3, 2, 1, SIZE, SIZE)
    assert out.trajectory_timesteps == [900, 500, 0]  # steps 0, 4 and 9 of 10 (np.linspace(0, 9, 3) rounded)
    assert ((out.images > 0.01) & (out.images < 0.99)).float().mean() > 0.8  # 90% unsaturated: the pixels are seen

    # the samples are diffusers' DDPMPipeline's with that scheduler and seed (measured: bit for bit; another seed: 0.98)
    reference = quiet(DDPMPipeline(unet=unet, scheduler=scheduler()))
    torch.testing.assert_close(out.images, generate(reference, num_inference_steps=10).images, rtol=0, atol=1e-6)

    # the trajectory is x_t and diffusers' x_0 estimate at those steps, by a hand loop over diffusers' step()
    reference_scheduler = scheduler()
    reference_scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((2, 1, SIZE, SIZE), generator=generator)
    frames, estimates = [], []
    with torch.no_grad():
        for t in reference_scheduler.timesteps:
            step = reference_scheduler.step(unet(sample, t).sample, t, sample, generator=generator)
            if int(t) in (900, 500, 0):
                frames.append(sample)
                estimates.append(step.pred_original_sample)
            sample = step.prev_sample
    torch.testing.assert_close(out.trajectory_samples, torch.stack(frames), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.trajectory_x0, torch.stack(estimates), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.images, (sample / 2 + 0.5).clamp(0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "`batch_size` must be an integer in"),
        ({"batch_size": -1}, "`batch_size` must be an integer in"),
        ({"batch_size": 1025}, r"`batch_size` must be an integer in \[1, 1024\]"),
        ({"batch_size": 2.0}, "`batch_size` must be an integer in"),
        ({"num_inference_steps": 0}, r"`num_inference_steps` must be an integer in \[1, 1000\]"),
        ({"num_inference_steps": 1001}, r"`num_inference_steps` must be an integer in \[1, 1000\]"),
        ({"output_type": "jpeg"}, "`output_type` must be one of"),
        ({"latents": torch.zeros(1, 1, 4, 4)}, r"`latents` must be a tensor of shape \(1, 1, 8, 8\)"),
        ({"batch_size": 3, "generator": [torch.Generator()] * 2}, "`generator` is a list of 2 generators"),
        ({"return_trajectory": True, "trajectory_timesteps": 0}, "`trajectory_timesteps` must be at least 1"),
    ],
)
def test_bad_arguments_raise(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(**{"num_inference_steps": 2, **kwargs})


def test_preset_parameter_counts():
    with torch.device("meta"):  # counting needs no memory or initialisation
        counts = {name: sum(p.numel() for p in paper_unet(name).parameters()) for name in PAPER_UNET_PRESETS}
    assert counts["cifar10"] == 35_746_307  # the paper's 35.7M
    assert abs(counts["celebahq256"] - 114e6) < 0.5e6 and counts["lsun256"] == counts["celebahq256"]  # 114M
    assert counts["tiny"] < 2e6 and counts["small"] < 10e6


def test_presets_follow_the_paper():
    config = paper_unet("cifar10").config
    assert config.attention_head_dim is None and config.dropout == 0.1 and config.norm_num_groups == 32
    assert (config.flip_sin_to_cos, config.freq_shift, config.downsample_padding) == (False, 1, 0)
    assert config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert config.up_block_types == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    with torch.device("meta"):
        big = paper_unet("celebahq256").config
    assert big.block_out_channels == (128, 128, 256, 256, 512, 512) and big.dropout == 0.0
    assert big.down_block_types.index("AttnDownBlock2D") == 4  # 256 / 2**4 = 16x16
    tiny = paper_unet("tiny", sample_size=32, in_channels=3, out_channels=3)
    assert tiny.config.sample_size == 32 and tiny(torch.zeros(1, 3, 32, 32), 5).sample.shape == (1, 3, 32, 32)


def test_unknown_preset_raises_with_the_list():
    with pytest.raises(
        ValueError, match=r"`name` must be one of \['celebahq256', 'cifar10', 'lsun256', 'small', 'tiny'\]"
    ):
        paper_unet("imagenet64")


# ------------------------------------------------------------------------------------- diffusers' pipeline contract


def test_callback_follows_diffusers_contract(pipe):
    """`latents` by default, `num_timesteps` set, the returned `latents` replace x_{t-1}, `output_type="latent"`."""
    seen = []

    def zero_at_last_step(pipeline, step_index, timestep, callback_kwargs):
        seen.append((pipeline.num_timesteps, sorted(callback_kwargs)))
        if step_index == pipeline.num_timesteps - 1:
            callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
        return callback_kwargs

    out = generate(pipe, num_inference_steps=4, output_type="latent", callback_on_step_end=zero_at_last_step)
    assert seen == [(4, ["latents"])] * 4 and out.images.abs().sum() == 0
    everything = generate(
        pipe,
        num_inference_steps=4,
        output_type="latent",
        callback_on_step_end=zero_at_last_step,
        callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs,
    )
    assert everything.images.abs().sum() == 0  # `image` came back unchanged beside the replaced `latents`
    with pytest.raises(ValueError, match="returned different tensors under `latents` and `image`"):
        generate(
            pipe,
            num_inference_steps=2,
            callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"] * 0, "image": kw["image"] * 2},
            callback_on_step_end_tensor_inputs=["latents", "image"],
        )


def test_latent_output_is_the_unclamped_x0(pipe):
    latent = generate(pipe, num_inference_steps=5, output_type="latent").images
    pt = generate(pipe, num_inference_steps=5, output_type="pt").images
    assert latent.shape == pt.shape and (latent.abs() > 1).any()  # not clamped
    torch.testing.assert_close((latent / 2 + 0.5).clamp(0, 1), pt, rtol=0, atol=0)


def test_interrupt_skips_the_remaining_steps(pipe):
    captured = {}

    def stop_after_step_2(pipeline, step_index, timestep, callback_kwargs):
        if step_index == 2:
            captured["latents"] = callback_kwargs["latents"].clone()
            pipeline._interrupt = True
        return {}

    calls = []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        out = generate(pipe, num_inference_steps=6, output_type="latent", callback_on_step_end=stop_after_step_2)
    finally:
        hook.remove()
    assert len(calls) == 3 and pipe.interrupt
    torch.testing.assert_close(out.images, captured["latents"], rtol=0, atol=0)
    assert not generate(pipe, num_inference_steps=2).images.isnan().any() and not pipe.interrupt  # reset per call


def test_ddim_scheduler_reproduces_diffusers_ddim_pipeline(unet):
    scheduler = DDIMScheduler.from_config(DDPMPaperScheduler().config)
    ours = generate(quiet(DDPMPaperPipeline(unet=unet, scheduler=scheduler)), num_inference_steps=10).images
    reference = quiet(DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config)))
    theirs = reference(
        batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, eta=0.0, output_type="np"
    ).images
    torch.testing.assert_close(ours.permute(0, 2, 3, 1).numpy(), theirs, rtol=0, atol=0, check_dtype=False)

    # DDIM with eta = 0 is deterministic given x_T: passing `latents` gives the same images as drawing them
    x_T = torch.randn((2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    pipe = quiet(DDPMPaperPipeline(unet=unet, scheduler=scheduler))
    from_latents = pipe(batch_size=2, latents=x_T, num_inference_steps=10, output_type="pt").images
    torch.testing.assert_close(from_latents, ours, rtol=0, atol=0)


def diffusers_sampling_loop(unet, scheduler, steps: int, seed: int) -> torch.Tensor:
    """The loop diffusers' pipelines run: x_T * init_noise_sigma, scale_model_input before the model, step()."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    sample = torch.randn((2, 1, SIZE, SIZE), generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        with torch.no_grad():
            model_output = unet(scheduler.scale_model_input(sample, t), t).sample
        sample = scheduler.step(model_output, t, sample, generator=generator).prev_sample
    return (sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("scheduler_class", [EulerDiscreteScheduler, DPMSolverMultistepScheduler])
def test_other_diffusers_schedulers_run_their_loop(unet, scheduler_class):
    config = DDPMPaperScheduler().config
    pipe = quiet(DDPMPaperPipeline(unet=unet, scheduler=scheduler_class.from_config(config)))
    ours = generate(pipe, num_inference_steps=8).images
    expected = diffusers_sampling_loop(unet, scheduler_class.from_config(config), steps=8, seed=0)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    if scheduler_class is EulerDiscreteScheduler:  # the noise scaling is not a no-op there
        assert pipe.scheduler.init_noise_sigma > 10
    with (
        pytest.raises(ValueError, match="`return_trajectory=True` needs the x_0 estimate")
        if (scheduler_class is DPMSolverMultistepScheduler)
        else contextlib.nullcontext()
    ):
        generate(pipe, num_inference_steps=3, return_trajectory=True, trajectory_timesteps=2)


def test_truncated_weights_name_the_file_and_the_fix(tmp_path):
    pipe = DDPMPaperPipeline(unet=paper_unet("tiny", sample_size=SIZE), scheduler=DDPMPaperScheduler())
    pipe.save_pretrained(tmp_path)
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    for damaged in (data[:5], data[: len(data) // 2]):
        weights.write_bytes(damaged)
        with pytest.raises(OSError, match=re.escape(f"{weights}: truncated or damaged safetensors file")) as error:
            DDPMPaperPipeline.from_pretrained(tmp_path)
        assert "Re-download it" in str(error.value) and "save_pretrained" in str(error.value)
    weights.write_bytes(data)
    assert isinstance(DDPMPaperPipeline.from_pretrained(tmp_path).unet, UNet2DModel)


def test_bf16_autocast_samples_are_close_to_float32_ones(pipe):
    conv_outputs: list[torch.dtype] = []

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            conv_outputs.append(output.dtype)

    float32 = generate(pipe, num_inference_steps=50, batch_size=4, output_type="latent").images
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16 = generate(
            pipe, num_inference_steps=50, batch_size=4, output_type="latent", autocast_dtype=torch.bfloat16
        )
    finally:
        handle.remove()
    assert conv_outputs and set(conv_outputs) == {torch.bfloat16}  # the UNet ran in bf16 ...
    assert bf16.images.dtype == torch.float32  # ... the chain in float32
    assert not torch.equal(bf16.images, float32)
    # The same generator draws the same noise: bf16 moves the samples by at most 5e-4 here (0.4 mean absolute
    # difference between two seeds); 5e-3 fails any change of the noise, the steps or the scheduler's precision.
    torch.testing.assert_close(bf16.images, float32, atol=5e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, "bfloat16"])
def test_autocast_dtype_must_be_bf16_or_fp16(pipe, dtype):
    with pytest.raises(ValueError, match="`autocast_dtype` must be None"):
        pipe(num_inference_steps=2, autocast_dtype=dtype)
