"""Bad input everywhere a user can give it: every error names the argument, what was expected and what was given.

Configs (every field of SwinFPNConfig and every DDPMPaperScheduler argument), tensors (rank, channels, dtype, tiny and
huge sizes, NaN), label maps, scheduler and pipeline arguments, the variational bound's inputs, CLI flags and files.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from factories import TINY_SWIN_FPN

from hf_swin_ddpm import (
    DDPMPaperPipeline,
    DDPMPaperScheduler,
    SwinFPNConfig,
    SwinFPNForSegmentation,
    paper_unet,
    variational_bound,
)
from hf_swin_ddpm.cli import main as cli_main
from hf_swin_ddpm.swin_fpn.configuration_swin_fpn import DEFAULT_MAX_INPUT_PIXELS
from hf_swin_ddpm.training import train_ddpm, train_segmentation


@pytest.fixture(scope="module")
def scheduler() -> DDPMPaperScheduler:
    scheduler = DDPMPaperScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    return scheduler


@pytest.fixture(scope="module")
def unet(one_thread):
    torch.manual_seed(0)
    return paper_unet("tiny").eval()


@pytest.fixture(scope="module")
def pipeline(unet) -> DDPMPaperPipeline:
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=10))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------------ SwinFPNConfig

# (field, bad value, what the message says was expected): every field of SwinFPNConfig, wrong types and bad values.
BAD_SWIN_FPN_FIELDS = [
    ("image_size", 0, "an integer >= 1"),
    ("image_size", True, "expected int"),
    ("patch_size", 0, "an integer >= 1"),
    ("patch_size", 4.0, "expected int"),
    ("num_channels", -1, "an integer >= 1"),
    ("num_channels", "3", "expected int"),
    ("embed_dim", 0, "an integer >= 1"),
    ("embed_dim", "96", "expected int"),
    ("depths", "abc", "expected list[int] | tuple[int, ...]"),
    ("depths", [2, 2, "x", 2], "expected list[int] | tuple[int, ...]"),
    ("depths", [], "at least one stage"),
    ("depths", [2, 0, 6, 2], "every stage depth >= 1"),
    ("num_heads", 3, "expected list[int] | tuple[int, ...]"),
    ("num_heads", [3, 6, 12], "one entry per stage"),
    ("num_heads", [3, 6, 12, 0], "every head count >= 1"),
    ("num_heads", [5, 6, 12, 24], "divisible by its head count"),
    ("window_size", 2.5, "expected int"),
    ("window_size", 0, "an integer >= 1"),
    ("mlp_ratio", "4", "expected float | int"),
    ("mlp_ratio", 0.0, "a finite ratio > 0"),
    ("mlp_ratio", math.inf, "a finite ratio > 0"),
    ("qkv_bias", "yes", "expected bool"),
    ("hidden_dropout_prob", 1.0, "a probability in [0, 1)"),
    ("hidden_dropout_prob", math.nan, "a probability in [0, 1)"),
    ("attention_probs_dropout_prob", -0.1, "a probability in [0, 1)"),
    ("drop_path_rate", "0.1", "expected float | int"),
    ("hidden_act", "no_such_activation", "an activation name"),
    ("hidden_act", 3, "expected str"),
    ("layer_norm_eps", 0.0, "a finite value > 0"),
    ("layer_norm_eps", 1, "expected float"),
    ("initializer_range", math.nan, "a finite std >= 0"),
    ("initializer_range", -0.02, "a finite std >= 0"),
    ("patch_embedding_type", "conv", "'linear' or 'convolutional'"),
    ("patch_embedding_type", 3, "expected str"),
    ("fpn_hidden_size", 0, "an integer >= 1"),
    ("head_hidden_size", 0, "an integer >= 1"),
    ("head_num_groups", 0, "a divisor of head_hidden_size"),
    ("head_num_groups", 3, "a divisor of head_hidden_size"),
    ("semantic_loss_ignore_index", "255", "expected int"),
    ("backbone_checkpoint", 3, "expected str | None"),
    ("max_input_pixels", 0, "None or an integer >= 1"),
    ("max_input_pixels", 1.5, "expected int | None"),
    ("num_labels", 0, "an integer >= 1"),
    ("num_labels", -3, "an integer >= 1"),
    ("num_labels", "3", "an integer >= 1"),
    ("id2label", {}, "at least one class"),
    ("decode_head_type", "segformer", "'semantic_fpn' or 'upernet'"),
    ("decode_head_type", 1, "expected str"),
    ("upernet_hidden_size", 0, "an integer >= 1"),
    ("pool_scales", [], "one or more pooled sizes >= 1"),
    ("pool_scales", [1, 0, 3], "one or more pooled sizes >= 1"),
    ("pool_scales", "1236", "expected list[int] | tuple[int, ...]"),
    ("use_auxiliary_head", "yes", "expected bool"),
    ("auxiliary_loss_weight", -0.4, "a finite weight >= 0"),
    ("auxiliary_loss_weight", math.inf, "a finite weight >= 0"),
    ("auxiliary_channels", 0, "an integer >= 1"),
    ("auxiliary_num_convs", -1, "an integer >= 0"),
    ("auxiliary_concat_input", 1, "expected bool"),
    ("auxiliary_in_index", 4, "a stage index in [0, 3]"),
    ("auxiliary_in_index", -1, "a stage index in [0, 3]"),
    ("loss_types", 5, "expected list[dict] | str | None"),
]

# Fields checked only together with another one (the auxiliary head's stage only when there is an auxiliary head).
CONTEXT = {"auxiliary_in_index": {"use_auxiliary_head": True}}
# Where the message reports the offending part rather than the whole value.
GIVEN_IN_MESSAGE = {("num_heads", "[5, 6, 12, 24]"): "5", ("id2label", "{}"): "0"}


@pytest.mark.parametrize(("field", "value", "expected"), BAD_SWIN_FPN_FIELDS)
def test_swin_fpn_config_errors_name_the_field_the_expectation_and_the_value(field, value, expected):
    reported_field = "num_labels" if field == "id2label" else field  # an empty id2label means no classes
    with pytest.raises(ValueError, match=rf"SwinFPNConfig\.{reported_field}: expected") as error:
        SwinFPNConfig(**CONTEXT.get(field, {}), **{field: value})
    assert expected in str(error.value)
    given = GIVEN_IN_MESSAGE.get((field, repr(value)), repr(value))
    assert f"got {given}" in str(error.value)


def test_every_swin_fpn_config_field_has_a_bad_input_case():
    own_fields = set(SwinFPNConfig.__annotations__)
    assert own_fields <= {field for field, _, _ in BAD_SWIN_FPN_FIELDS}


def test_swin_fpn_config_rejects_a_bad_value_set_after_construction():
    config = SwinFPNConfig()
    with pytest.raises(ValueError, match=r"SwinFPNConfig\.window_size: expected int, got 2\.5 \(float\)"):
        config.window_size = 2.5


def test_swin_fpn_config_json_with_wrong_types_is_a_value_error_naming_the_field(tmp_path):
    SwinFPNConfig(**TINY_SWIN_FPN).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "depths": "1111"}))
    with pytest.raises(ValueError, match=r"SwinFPNConfig\.depths: expected .*got '1111'"):
        SwinFPNConfig.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------ DDPMPaperScheduler

BAD_SCHEDULER_ARGUMENTS = [
    ({"num_train_timesteps": 0}, "`num_train_timesteps` must be at least 1, got 0"),
    ({"num_train_timesteps": 2.0}, "`num_train_timesteps` must be an integer, got 2.0"),
    ({"num_train_timesteps": True}, "`num_train_timesteps` must be an integer, got True"),
    ({"num_train_timesteps": 10**10}, "`num_train_timesteps` must be at most 100000"),
    ({"beta_start": "a"}, "`beta_start` must be a real number, got 'a'"),
    ({"beta_start": None}, "`beta_start` must be a real number, got None"),
    ({"beta_start": math.nan}, "`beta_start` must be finite, got nan"),
    ({"beta_start": 0.0}, "`beta_start` must lie in (0, 1), got 0.0"),
    ({"beta_end": 1.5}, "`beta_end` must lie in (0, 1), got 1.5"),
    ({"beta_end": 1e-5}, "`beta_end` must be at least `beta_start`"),
    ({"beta_schedule": "cosine"}, "`beta_schedule` must be one of"),
    ({"beta_schedule": None}, "`beta_schedule` must be one of"),
    ({"trained_betas": "abc"}, "`trained_betas` must be a list of numbers, got 'abc'"),
    ({"trained_betas": [0.1, 0.2]}, "`trained_betas` must have shape (1000,)"),
    ({"num_train_timesteps": 2, "trained_betas": [0.1, math.nan]}, "`trained_betas` must give betas in"),
    ({"num_train_timesteps": 2, "trained_betas": [0.2, 0.1]}, "`trained_betas` must give non-decreasing betas"),
    ({"variance_type": "other"}, "`variance_type` must be one of ['fixed_large', 'fixed_large_log', 'fixed_small', "),
    ({"variance_type": ["fixed_large"]}, "`variance_type` must be one of"),
    ({"clip_sample": "yes"}, "`clip_sample` must be True or False, got 'yes'"),
    ({"clip_sample_range": "a"}, "`clip_sample_range` must be a real number, got 'a'"),
    ({"clip_sample_range": math.inf}, "`clip_sample_range` must be finite"),
    ({"clip_sample_range": 0.0}, "`clip_sample_range` must be positive"),
    ({"prediction_type": 1}, "`prediction_type` must be one of"),
    ({"timestep_spacing": None}, "`timestep_spacing` must be one of"),
    ({"thresholding": None}, "`thresholding` must be True or False, got None"),
    ({"dynamic_thresholding_ratio": 1.5}, "`dynamic_thresholding_ratio` must lie in (0, 1], got 1.5"),
    ({"sample_max_value": "a"}, "`sample_max_value` must be a real number, got 'a'"),
    ({"steps_offset": 0.5}, "`steps_offset` must be a non-negative integer, got 0.5"),
    ({"rescale_betas_zero_snr": "no"}, "`rescale_betas_zero_snr` must be True or False, got 'no'"),
    ({"num_train_timesteps": 1, "rescale_betas_zero_snr": True}, "`rescale_betas_zero_snr=True` needs"),
    ({"last_step_noise": 1}, "`last_step_noise` must be True or False, got 1"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_SCHEDULER_ARGUMENTS)
def test_scheduler_constructor_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DDPMPaperScheduler(**kwargs)


def test_every_scheduler_argument_has_a_bad_input_case():
    import inspect

    arguments = set(inspect.signature(DDPMPaperScheduler.__init__).parameters) - {"self"}
    assert arguments <= {name for kwargs, _ in BAD_SCHEDULER_ARGUMENTS for name in kwargs}


# ------------------------------------------------------------------------------------------------ SwinFPN forward


@pytest.mark.parametrize(
    ("pixel_values", "message"),
    [
        (np.zeros((1, 3, 8, 8), dtype=np.float32), "expected a torch.Tensor"),
        (torch.zeros(3, 8, 8), r"expected shape \(batch, 3, height, width\), got \(3, 8, 8\)"),
        (torch.zeros(1, 1, 3, 8, 8), r"got \(1, 1, 3, 8, 8\)"),
        (torch.zeros(1, 1, 8, 8), r"expected shape \(batch, 3, height, width\), got \(1, 1, 8, 8\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "expected a floating-point tensor .*got torch.uint8"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.bool), "got torch.bool"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.complex64), "got torch.complex64"),
        (torch.zeros(0, 3, 8, 8), r"every dimension must be >= 1, got \(0, 3, 8, 8\)"),
        (torch.zeros(1, 3, 0, 8), r"every dimension must be >= 1"),
        (torch.full((1, 3, 8, 8), math.nan), "expected finite values, got NaN or infinity"),
        (torch.zeros(1, 3, 8, 8).index_fill(2, torch.tensor([3]), math.inf), "expected finite values"),
    ],
)
def test_bad_pixel_values_raise_naming_the_problem(tiny_swin_fpn, pixel_values, message):
    with pytest.raises(ValueError, match=f"pixel_values: .*{message}"):
        tiny_swin_fpn(pixel_values=pixel_values)


@pytest.mark.parametrize(
    ("dtype", "rounding_effect"),
    # the largest logit change that rounding the pixels to `dtype` causes (logits of std 1.1): measured 7.8e-4 for
    # float16, 3.8e-3 for bfloat16, 0 for float64 (float32 pixels are exact in it); bounds 2.5x that. Running the
    # whole model in bfloat16 moves the logits by 3.2e-2.
    [(torch.float16, 2e-3), (torch.bfloat16, 1e-2), (torch.float64, 0.0)],
)
def test_half_and_double_pixel_values_work(tiny_swin_fpn, dtype, rounding_effect):
    pixel_values = torch.randn(1, 3, 20, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = tiny_swin_fpn(pixel_values=pixel_values).logits
        logits = tiny_swin_fpn(pixel_values=pixel_values.to(dtype)).logits
        # the pixels meet the float32 weights in float32: exactly the float32 model on the rounded pixels
        rounded = tiny_swin_fpn(pixel_values=pixel_values.to(dtype).to(torch.float32)).logits
    assert logits.shape == (1, 3, 20, 12) and logits.dtype == torch.float32
    assert torch.equal(logits, rounded)
    assert (logits - reference).abs().max() <= rounding_effect


def test_huge_inputs_are_refused_before_any_memory_is_spent(tiny_swin_fpn):
    side = math.isqrt(DEFAULT_MAX_INPUT_PIXELS) + 1
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, side, side)  # a view: no memory behind it
    with pytest.raises(ValueError, match=r"pixel_values: batch \* height \* width = 1 \* 8193 \* 8193 .* exceeds"):
        tiny_swin_fpn(pixel_values=huge)
    many = torch.zeros(1, 3, 1, 1).expand(1025, 3, 256, 256)
    with pytest.raises(ValueError, match="config.max_input_pixels = 67,108,864"):
        tiny_swin_fpn(pixel_values=many)


def test_the_pixel_bound_is_configurable_and_can_be_removed():
    torch.manual_seed(0)
    bounded = SwinFPNForSegmentation(SwinFPNConfig(**TINY_SWIN_FPN, max_input_pixels=1000)).eval()
    with pytest.raises(ValueError, match="exceeds config.max_input_pixels = 1,000"):
        bounded(pixel_values=torch.zeros(1, 3, 32, 32))
    assert bounded(pixel_values=torch.zeros(1, 3, 31, 32)).logits.shape == (1, 3, 31, 32)
    unbounded = SwinFPNConfig(**TINY_SWIN_FPN, max_input_pixels=None)
    assert SwinFPNConfig.from_dict(unbounded.to_dict()).max_input_pixels is None


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((1, 8, 8), dtype=np.int64), "expected a torch.Tensor"),
        (torch.zeros(1, 8, 7, dtype=torch.long), r"expected shape \(batch, height, width\) = \(1, 8, 8\)"),
        (torch.zeros(1, 8, 8), "expected an integer tensor of class ids, got torch.float32"),
        (torch.zeros(1, 8, 8, dtype=torch.bool), "got torch.bool"),
        (torch.full((1, 8, 8), 7), r"expected class ids in \[0, 2\] or the ignore index 255, got \[7\] \(64 pixels\)"),
        (torch.full((1, 8, 8), -1), r"got \[-1\]"),
        (torch.tensor([[[0, 1, 2, 3] * 2] * 8]), r"got \[3\] \(16 pixels\)"),
    ],
)
def test_bad_labels_raise_naming_the_problem(tiny_swin_fpn, labels, message):
    with pytest.raises(ValueError, match=f"labels: .*{message}"):
        tiny_swin_fpn(pixel_values=torch.zeros(1, 3, 8, 8), labels=labels)


def test_labels_may_hold_the_ignore_index(tiny_swin_fpn):
    labels = torch.tensor([[[0, 1, 2, 255] * 2] * 8])
    loss = tiny_swin_fpn(pixel_values=torch.randn(1, 3, 8, 8), labels=labels).loss
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------------------------------ scheduler tensors


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_scheduler_rejects_non_floating_tensors_naming_them(scheduler, dtype):
    bad = torch.zeros(2, 1, 4, 4, dtype=dtype)
    good = torch.zeros(2, 1, 4, 4)
    t = int(scheduler.timesteps[0])
    with pytest.raises(ValueError, match=f"`model_output` must be a floating-point tensor .*got {dtype}"):
        scheduler.step(bad, t, good)
    with pytest.raises(ValueError, match=f"`sample` must be a floating-point tensor .*got {dtype}"):
        scheduler.step(good, t, bad)
    with pytest.raises(ValueError, match=f"`original_samples` must be a floating-point tensor .*got {dtype}"):
        scheduler.add_noise(bad, good, 3)
    with pytest.raises(ValueError, match=f"`noise` must be a floating-point tensor .*got {dtype}"):
        scheduler.add_noise(good, bad, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_scheduler_works_in_every_floating_dtype(dtype):
    """step (Algorithm 2) and add_noise (Eq. 4) in `dtype` against a float64 hand computation from the same (rounded)
    inputs, z drawn in `dtype` from the generator as diffusers' DDPMScheduler draws it. Measured: within 1.2 units of
    the dtype's epsilon (times the values' scale) over 20 seeds; allowed 4."""
    scheduler = DDPMPaperScheduler(num_train_timesteps=1000)  # the full chain: beta_t is the step's beta
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 1, 4, 4, generator=generator).to(dtype)
    model_output = torch.randn(2, 1, 4, 4, generator=generator).to(dtype)
    x, eps = sample.double().numpy(), model_output.double().numpy()

    def assert_rounding_of(result: torch.Tensor, expected: np.ndarray) -> None:
        assert result.dtype == dtype and result.shape == sample.shape
        tolerance = max(4 * torch.finfo(dtype).eps * max(1.0, np.abs(expected).max()), 1e-12)
        np.testing.assert_allclose(result.double().numpy(), expected, rtol=0, atol=tolerance)

    for t in (999, 500, 1, 0):
        prev = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(7), dtype=dtype).double().numpy()
        sigma = math.sqrt(betas[t]) if t > 0 else 0.0  # sigma_t^2 = beta_t, no noise at the last step
        mean = (x - betas[t] / math.sqrt(1.0 - alphas_cumprod[t]) * eps) / math.sqrt(1.0 - betas[t])
        assert_rounding_of(prev, mean + sigma * z)
    for t in (0, 500, 999):
        noisy = scheduler.add_noise(sample, model_output, torch.tensor([t, t]))
        assert_rounding_of(noisy, math.sqrt(alphas_cumprod[t]) * x + math.sqrt(1.0 - alphas_cumprod[t]) * eps)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, x: s.step(x.numpy(), 999, x), "`model_output` must be a torch.Tensor, got ndarray"),
        (lambda s, x: s.step([0.0], 999, x), "`model_output` must be a torch.Tensor, got list"),
        (lambda s, x: s.step(x[0, 0, 0, 0], 999, x[0, 0, 0, 0]), "`model_output` must have a batch dimension"),
        (lambda s, x: s.step(x, 999, x[:1]), r"`model_output` must have the shape of `sample` \(1, 1, 4, 4\)"),
        (lambda s, x: s.step(x, 998.5, x), "`timestep` must be an integer timestep of the current chain, got 998.5"),
        (lambda s, x: s.step(x, "999", x), "`timestep` must be an integer timestep of the current chain, got '999'"),
        (lambda s, x: s.step(x, None, x), "`timestep` must be an integer timestep of the current chain, got None"),
        (lambda s, x: s.step(x, torch.tensor([999, 888]), x), r"`timestep` must be one timestep .*shape \(2,\)"),
        (lambda s, x: s.step(x, 5, x), "`timestep` 5 is not in the current chain"),
        (lambda s, x: s.step(x, 999, x, generator=[torch.Generator()]), "`generator` is a list of 1 generators"),
        (lambda s, x: s.add_noise(x.numpy(), x, 3), "`original_samples` must be a torch.Tensor, got ndarray"),
        (lambda s, x: s.add_noise(x, x[:1], 3), "`noise` must have the shape of `original_samples`"),
        (lambda s, x: s.add_noise(x, x, 3.0), r"`timesteps` must be an int or an integer tensor, got 3\.0"),
        (lambda s, x: s.add_noise(x, x, "3"), "`timesteps` must be an int or an integer tensor, got '3'"),
        (lambda s, x: s.add_noise(x, x, True), "`timesteps` must be an int or an integer tensor, got True"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([1.0, 2.0])), "`timesteps` must be integers"),
        (lambda s, x: s.add_noise(x, x, 1000), r"`timesteps` must lie in \[0, 999\], got values in \[1000, 1000\]"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([-1, 3])), r"got values in \[-1, 3\]"),
        (lambda s, x: s.add_noise(x, x, torch.tensor([1, 2, 3])), "one timestep or one per sample"),
        (lambda s, x: s.get_velocity(x, x.long(), 3), "`noise` must be a floating-point tensor"),
    ],
)
def test_scheduler_call_errors_name_the_argument(scheduler, call, message):
    with pytest.raises(ValueError, match=message):
        call(scheduler, torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_inference_steps": 0}, r"`num_inference_steps` must lie in \[1, 1000\]"),
        ({"num_inference_steps": 1001}, r"`num_inference_steps` must lie in \[1, 1000\]"),
        ({"num_inference_steps": 2.5}, "`num_inference_steps` must be an integer, got 2.5"),
        ({"num_inference_steps": "5"}, "`num_inference_steps` must be an integer, got '5'"),
        ({}, "Pass one of `num_inference_steps` or `timesteps`"),
        ({"num_inference_steps": 5, "timesteps": [5, 1]}, "Pass only one of"),
        ({"timesteps": 5}, "`timesteps` must be a non-empty list of integers, got 5"),
        ({"timesteps": "abc"}, "`timesteps` must be a non-empty list of integers, got 'abc'"),
        ({"timesteps": []}, "`timesteps` must be a non-empty list of integers"),
        ({"timesteps": [5.5, 2.2]}, r"`timesteps` must be a non-empty list of integers, got \[5\.5, 2\.2\]"),
        ({"timesteps": [[5], [2]]}, "`timesteps` must be a non-empty list of integers"),
        ({"timesteps": [2, 5]}, "`timesteps` must be strictly decreasing"),
        ({"timesteps": [1000, 5]}, r"`timesteps` must lie in \[0, 999\]"),
    ],
)
def test_set_timesteps_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDPMPaperScheduler().set_timesteps(**kwargs)


def test_nan_propagates_through_the_scheduler_elementwise_without_an_error(scheduler):
    """Values are not inspected (it would synchronise an accelerator every step): NaN in gives NaN there only."""
    sample = torch.zeros(2, 1, 4, 4)
    sample[0, 0, 0, 0] = math.nan
    noisy = scheduler.add_noise(sample, torch.zeros_like(sample), 3)
    assert noisy.isnan().sum() == 1 and noisy[0, 0, 0, 0].isnan()
    last = int(scheduler.timesteps[-1])
    prev = scheduler.step(torch.zeros_like(sample), last, sample).prev_sample
    assert prev.isnan().sum() == 1 and prev[0, 0, 0, 0].isnan()


# ------------------------------------------------------------------------------------------------ pipeline


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generator": 3}, "`generator` must be a torch.Generator or a list of them, got int 3"),
        ({"generator": [torch.Generator(), "a"]}, "got str 'a'"),
        ({"batch_size": 0}, r"`batch_size` must be an integer in \[1, 1024\], got 0"),
        ({"batch_size": 10**6}, r"`batch_size` must be an integer in \[1, 1024\], got 1000000"),
        ({"batch_size": 2.0}, "got 2.0"),
        ({"num_inference_steps": 0}, r"`num_inference_steps` must be an integer in \[1, 10\]"),
        ({"num_inference_steps": "2"}, "got '2'"),
        ({"output_type": None}, r"`output_type` must be one of \['pil', 'np', 'pt', 'latent'\], got None"),
        ({"callback_on_step_end": 3}, "`callback_on_step_end` must be callable, got int"),
        ({"callback_on_step_end_tensor_inputs": "image"}, "must be a list of names, got the string 'image'"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, r"may only name .*got \[.noise.\]"),
        ({"return_trajectory": True, "trajectory_timesteps": 0}, "`trajectory_timesteps` must be at least 1 frame"),
        ({"return_trajectory": True, "trajectory_timesteps": "ab"}, "a list of integer timesteps, got 'ab'"),
        ({"return_trajectory": True, "trajectory_timesteps": [9.0]}, r"got \[9\.0\]"),
        ({"return_trajectory": True, "trajectory_timesteps": [9, 1000]}, r"\[1000\] are not in the sampling chain"),
    ],
)
def test_pipeline_errors_name_the_argument(pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipeline(**{"num_inference_steps": 2, "output_type": "pt", **kwargs})


def test_pipeline_refuses_a_trajectory_that_would_exhaust_memory(unet):
    pipeline = DDPMPaperPipeline(unet=unet, scheduler=DDPMPaperScheduler(num_train_timesteps=10))
    pipeline.set_progress_bar_config(disable=True)
    pipeline.max_trajectory_bytes = 2 * 4 * 16 * 16 * 4  # two frames of four 16x16 images
    kwargs = {"num_inference_steps": 3, "output_type": "pt", "return_trajectory": True, "batch_size": 4}
    assert pipeline(**kwargs, trajectory_timesteps=1).trajectory_samples.shape == (1, 4, 1, 16, 16)
    with pytest.raises(ValueError, match="3 frames of a \\(4, 1, 16, 16\\) batch would take 24,576 bytes"):
        pipeline(**kwargs, trajectory_timesteps=3)


# ------------------------------------------------------------------------------------------------ variational bound


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x0": np.zeros((1, 1, 16, 16))}, r"`x0` must be a \(batch, channels, height, width\) tensor, got ndarray"),
        ({"x0": torch.zeros(1, 16, 16)}, r"got \(1, 16, 16\)"),
        ({"x0": torch.zeros(1, 1, 16, 16, dtype=torch.uint8)}, "`x0` must be a floating-point tensor .*torch.uint8"),
        ({"x0": torch.zeros(1, 1, 16, 16, dtype=torch.complex64)}, "got dtype torch.complex64"),
        ({"x0": torch.zeros(0, 1, 16, 16)}, "`x0` must hold at least one image"),
        ({"x0": torch.full((1, 1, 16, 16), 2.0)}, r"`x0` must lie in \[-1, 1\] .*got values in \[2.0, 2.0\]"),
        ({"x0": torch.full((1, 1, 16, 16), math.nan)}, r"`x0` must lie in \[-1, 1\]"),
        ({"x0": torch.zeros(1, 3, 16, 16)}, "`x0` has 3 channels but the unet expects 1"),
        ({"x0": torch.zeros(1, 1, 1, 1)}, "`x0` height and width must be multiples of 4 .*got 1x1"),
        ({"x0": torch.zeros(1, 1, 15, 16)}, "got 15x16; the unet was trained at 16"),
        ({"unet": None}, r"`unet` must be a model called as unet\(x_t, t\), got NoneType"),
        ({"scheduler": None}, "`scheduler` must be a DDPMPaperScheduler .*got NoneType"),
        ({"scheduler": DDPMPaperScheduler(num_train_timesteps=1)}, "`scheduler` must have at least 2 training"),
        ({"generator": "seed"}, "`generator` must be a torch.Generator or None, got str"),
        ({"num_timesteps": 0}, r"`num_timesteps` must lie in \[1, 9\]"),
        ({"num_timesteps": 2.5}, "`num_timesteps` must be an integer or None, got 2.5"),
        ({"batch_timesteps": 0}, "`batch_timesteps` must be a positive integer, got 0"),
    ],
)
def test_variational_bound_errors_name_the_argument(unet, change, message):
    arguments = {
        "unet": unet,
        "scheduler": DDPMPaperScheduler(num_train_timesteps=10),
        "x0": torch.zeros(1, 1, 16, 16),
        **change,
    }
    with pytest.raises(ValueError, match=message):
        variational_bound(**arguments)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_variational_bound_takes_any_floating_dtype(unet, dtype):
    """Images in any floating dtype give the bound of their values: exactly the terms of the same values in float64
    (same generator), and only the rounding of the pixels away from the float32 ones (the closed-form check of the
    dtypes is in test_ddpm_bound.py)."""
    x0 = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def bound(images: torch.Tensor) -> dict[str, torch.Tensor]:
        scheduler = DDPMPaperScheduler(num_train_timesteps=10)
        return variational_bound(unet, scheduler, images, num_timesteps=2, generator=torch.Generator().manual_seed(1))

    terms, same_values, float32 = bound(x0.to(dtype)), bound(x0.to(dtype).double()), bound(x0)
    assert terms.keys() == same_values.keys()
    for key, value in terms.items():
        assert value.dtype == torch.float64 and torch.equal(value, same_values[key]), key
    # measured |total - float32 total|: 1.2e-4 (float16), 4.7e-4 (bfloat16), 0 (float64: the float32 pixels are
    # exact in it) of a total of 11.3 bits/dim; bounds about 3x that. Another generator moves the total by 2.5.
    allowed = {torch.float16: 4e-4, torch.bfloat16: 1.5e-3, torch.float64: 1e-9}[dtype]
    assert (terms["total_bpd"] - float32["total_bpd"]).abs().max() <= allowed


# ------------------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str], capsys) -> tuple[int | str, str]:
    """`hf-swin-ddpm ARGV` in-process: (exit status, stderr)."""
    try:
        status = cli_main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_error_line(status: int | str, stderr: str, *fragments: str) -> None:
    assert status not in (0, None), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, pipeline):
    folder = tmp_path_factory.mktemp("cli") / "pipeline"
    pipeline.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["sample", "{missing}", "{out}/o.png"], ["MODEL:", "is neither an existing folder nor a Hub repo id"]),
        (
            ["sample", "{pipe}", "{out}/o.png", "--num_inference_steps", "0"],
            ["--num_inference_steps: expected an integer >= 1, got 0"],
        ),
        (
            ["sample", "{pipe}", "{out}/o.png", "--num_inference_steps", "99999"],
            ["--num_inference_steps: expected at most the model's T", "got 99999"],
        ),
        (
            ["sample", "{pipe}", "{out}/o.png", "--num_inference_steps", "abc"],
            ["--num_inference_steps", "invalid int value: 'abc'"],
        ),
        (["sample", "{pipe}", "{out}/o.png", "--num_samples", "0"], ["--num_samples: expected 1..256, got 0"]),
        (["sample", "{pipe}", "{out}/o.xyz", "--num_inference_steps", "1"], ["o.xyz has no image extension"]),
        (["sample", "{pipe}", "{out}", "--num_inference_steps", "1"], ["is a folder; give an image file name"]),
        (["convert-swin", "{missing}", "{out}/x"], ["checkpoint:", "is neither an existing folder nor a Hub repo id"]),
        (["convert-swin", "{pipe}/model_index.json", "{out}/x"], ["is a file, not a folder"]),
        (["convert-swin", "{pipe}", "{out}/x", "--num_labels", "0"], ["--num_labels: expected an integer >= 1"]),
        (["convert-swin", "{pipe}", "{out}/x", "--image_size", "-5"], ["--image_size: expected an integer >= 1"]),
        (["convert-swin", "{pipe}", "{out}/x", "--id2label", "{out}/missing.json"], ["--id2label", "does not exist"]),
        (["convert-swin", "{pipe}", "{out}/x", "--id2label", "{out}/list.json"], ["--id2label", "not a JSON object"]),
        (["push", "{missing}", "me/model"], ["is not a folder"]),
        (["no-such-command"], ["invalid choice: 'no-such-command'"]),
    ],
)
def test_cli_errors_are_one_line_naming_the_flag_or_file(capsys, tmp_path, saved_pipeline, arguments, fragments):
    (tmp_path / "list.json").write_text("[1, 2]")
    names = {"missing": str(tmp_path / "missing"), "out": str(tmp_path), "pipe": str(saved_pipeline)}
    argv = [argument.format(**names) for argument in arguments]
    status, stderr = run_cli(argv, capsys)
    assert_one_error_line(status, stderr, *fragments)


@pytest.mark.parametrize(
    ("script", "arguments", "fragments"),
    [
        (train_ddpm, ["--resolution", "100000"], ["--resolution must be at most 4096, got 100000"]),
        (train_ddpm, ["--resolution", "0"], ["--resolution must be > 0, got 0"]),
        (train_ddpm, ["--ddpm_num_steps", "10000000000"], ["--ddpm_num_steps must be at most 100000"]),
        (train_ddpm, ["--dropout", "1.5"], ["--dropout must lie in [0, 1), got 1.5"]),
        (train_ddpm, ["--train_batch_size", "-1"], ["--train_batch_size must be > 0, got -1"]),
        (train_ddpm, ["--model_config", "{bad_unet}"], ["--model_config", "not a valid UNet2DModel config"]),
        (train_ddpm, ["--model_config", "{not_json}"], ["--model_config", "is not a readable JSON file"]),
        (train_ddpm, ["--resume_from_checkpoint", "{missing}"], ["--resume_from_checkpoint", "not a checkpoint"]),
        (train_segmentation, ["--model_config", "{bad_swin}"], ["SwinFPNConfig.window_size: expected int, got 2.5"]),
        (train_segmentation, ["--report_to", "nobody"], ["--report_to: unknown tracker 'nobody'"]),
    ],
)
def test_training_flag_and_file_errors_are_one_line(capsys, tmp_path, script, arguments, fragments):
    (tmp_path / "bad_unet.json").write_text(json.dumps({"block_out_channels": "abc"}))
    (tmp_path / "not_json.json").write_text("{nope")
    (tmp_path / "bad_swin.json").write_text(json.dumps({**TINY_SWIN_FPN, "window_size": 2.5}))
    names = {name: str(tmp_path / f"{name}.json") for name in ("bad_unet", "not_json", "bad_swin")}
    names["missing"] = str(tmp_path / "missing")
    base = ["--dataset_name", "digits" if script is train_ddpm else "shapes", "--output_dir", str(tmp_path / "out")]
    base += ["--model_config", "tiny", "--report_to", "none", "--max_train_steps", "1"]
    argv = base + [argument.format(**names) for argument in arguments]
    status, stderr = run_cli_script(script, argv, capsys)
    assert_one_error_line(status, stderr, *fragments)


def run_cli_script(script, argv: list[str], capsys) -> tuple[int | str, str]:
    try:
        status = script.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def test_the_auxiliary_stage_is_checked_only_with_an_auxiliary_head():
    two_stages = {"depths": (2, 2), "num_heads": (2, 4)}
    assert SwinFPNConfig(**two_stages).auxiliary_in_index == 2  # the default, unused without the head
    with pytest.raises(ValueError, match=r"auxiliary_in_index: expected a stage index in \[0, 1\], got 2"):
        SwinFPNConfig(**two_stages, use_auxiliary_head=True)
