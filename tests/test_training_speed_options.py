"""The training scripts' speed options on a CPU: ``--mixed_precision bf16`` (autocast, fp32 master weights, EMA and
checkpoints, exact resume), ``--torch_compile`` (the training forward only; clean state dicts) and
``--channels_last``, for both scripts on their tiny test runs."""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ModelMixin
from safetensors import safe_open
from test_training_ddpm import TINY as DDPM_TINY
from test_training_segmentation import TINY as SEGMENTATION_TINY
from training_support import (
    assert_one_line_error,
    flags,
    run_cli,
    run_cli_in_process,
    same_weights,
    with_flags,
)
from transformers import PreTrainedModel

from hf_swin_ddpm.training import train_ddpm, train_segmentation

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 4  # optimizer steps of each run; the resumed runs start from checkpoint-2


@dataclasses.dataclass(frozen=True)
class Script:
    """One training script as these tests drive it."""

    name: str
    train: Callable[[list[str]], object]
    tiny: list[str]
    saved_weights: str  # the final model's weights file, relative to --output_dir
    bf16_gap: float  # bound on |bf16 - fp32| / |fp32 - start| of the weights after STEPS steps (see the bf16 test)
    layout_independent: list[str]  # flags that make the draws independent of the memory layout (see channels_last)

    def run(self, output_dir: Path, *extra: str, resume_from: Path | None = None) -> dict[str, torch.Tensor]:
        """The training weights after ``STEPS`` steps (a checkpoint every 2), optionally resumed."""
        argv = with_flags(self.tiny, output_dir=output_dir, max_train_steps=STEPS, checkpointing_steps=2)
        if resume_from is not None:
            argv += flags(resume_from_checkpoint=resume_from)
        result = self.train([*argv, *extra])
        if isinstance(result, train_ddpm.DDPMTrainingResult):
            return result.training_weights
        return {name: tensor.detach().clone() for name, tensor in result.model.state_dict().items()}


SCRIPTS = [
    Script(
        "ddpm",
        lambda argv: train_ddpm.train(train_ddpm.parse_args(argv)),
        with_flags(DDPM_TINY, eval_bpd_timesteps=0),
        "unet/diffusion_pytorch_model.safetensors",
        bf16_gap=0.1,  # measured 0.035 (0.038 with --dropout 0)
        # torch's dropout draws its mask in memory order, so an NHWC run drops other activations than an NCHW one:
        # measured weight gap 1.06x the run's movement with the default 0.1, 2.7e-5x with 0
        layout_independent=flags(dropout=0),
    ),
    Script(
        "segmentation",
        lambda argv: train_segmentation.train(train_segmentation.parse_args(argv)),
        with_flags(SEGMENTATION_TINY, max_eval_samples=2),
        "model.safetensors",
        bf16_gap=0.4,  # measured 0.21 (bf16 autocast through the Swin attention)
        layout_independent=[],  # drop path draws one value per sample
    ),
]


def file_dtypes(path: Path) -> dict[str, str]:
    """Tensor name -> dtype as stored in a safetensors file ("F32", "BF16", ...)."""
    with safe_open(str(path), framework="pt") as stored:
        return {name: stored.get_slice(name).get_dtype() for name in stored.keys()}  # noqa: SIM118


@pytest.fixture(params=SCRIPTS, ids=[script.name for script in SCRIPTS])
def script(request) -> Script:
    return request.param


def nhwc(tensor: torch.Tensor) -> bool | None:
    """Whether a 4-d tensor is laid out channels-last; None when both layouts coincide (one channel or one pixel,
    e.g. a 1x1 kernel), so that neither layout can be told from the strides."""
    if tensor.size(1) == 1 or tensor.size(2) * tensor.size(3) == 1:
        return None
    return tensor.stride(1) == 1


@pytest.fixture
def start_weights() -> Iterator[dict[str, torch.Tensor]]:
    """The weights training starts from: the model's state dict (fp32) at the first training forward of a diffusers
    or transformers model while the fixture is active. Every run of a test starts from the same weights (the seed)."""
    start: dict[str, torch.Tensor] = {}

    def record(module: torch.nn.Module, inputs: tuple) -> None:
        if not start and isinstance(module, ModelMixin | PreTrainedModel) and torch.is_grad_enabled():
            start.update({name: tensor.detach().float().clone() for name, tensor in module.state_dict().items()})

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield start
    handle.remove()


def norm_of_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    """The Euclidean norm of ``first - second`` over every tensor of two state dicts."""
    assert first.keys() == second.keys()
    return sum((first[name].double() - second[name].double()).square().sum() for name in first).sqrt().item()


@pytest.fixture
def conv_calls() -> Iterator[list[tuple[torch.dtype, bool | None, bool | None]]]:
    """Every training-time ``Conv2d`` call while the fixture is active: (output dtype, weight NHWC, input NHWC)."""
    calls: list[tuple[torch.dtype, bool | None, bool | None]] = []

    def record(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(module, torch.nn.Conv2d) and torch.is_grad_enabled():  # training forwards only
            calls.append((output.dtype, nhwc(module.weight), nhwc(inputs[0])))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    yield calls
    handle.remove()


def test_bf16_autocasts_keeps_fp32_weights_and_resumes_exactly(script, tmp_path, conv_calls, start_weights):
    bf16 = flags(mixed_precision="bf16")
    uninterrupted = script.run(tmp_path / "bf16", *bf16)
    assert conv_calls and {dtype for dtype, _, _ in conv_calls} == {torch.bfloat16}  # the forward ran in bf16
    resumed = script.run(tmp_path / "resumed", *bf16, resume_from=tmp_path / "bf16" / "checkpoint-2")
    assert same_weights(resumed, uninterrupted)

    # master weights, checkpoints, the EMA and the saved model in fp32
    assert {tensor.dtype for tensor in uninterrupted.values()} == {torch.float32}
    stored = [tmp_path / "bf16" / script.saved_weights, tmp_path / "bf16" / "checkpoint-2" / "model.safetensors"]
    if script.name == "ddpm":
        stored.append(tmp_path / "bf16" / "checkpoint-2" / "ema_weights.safetensors")
    for path in stored:
        assert set(file_dtypes(path).values()) == {"F32"}, path

    # a later run in the same process with the default precision is fp32 again, and trains other weights
    conv_calls.clear()
    fp32 = script.run(tmp_path / "fp32")
    assert conv_calls and {dtype for dtype, _, _ in conv_calls} == {torch.float32}
    assert not same_weights(fp32, uninterrupted)
    # the same training: the bf16 run ends close to the fp32 run relative to how far the fp32 run moved. Adam's first
    # steps move each weight by about the learning rate whatever its gradient, so a run with twice the learning rate
    # lands about 1x the movement away, one with 10x about 9x. (Elementwise bounds say little: a weight whose
    # gradient is near zero may move either way, so the largest single gap is as large as the largest movement.)
    movement = norm_of_difference(fp32, start_weights)
    assert movement > 0
    assert norm_of_difference(uninterrupted, fp32) < script.bf16_gap * movement


COUNTING_BACKEND = "hf_swin_ddpm_test_counting"
GRAPH_CALLS: list[int] = []  # per graph the counting backend compiled: how often it ran


def counting_backend(graph_module: torch.fx.GraphModule, example_inputs: list) -> Callable:
    """A torch.compile backend that runs each captured graph as it is and counts its calls in ``GRAPH_CALLS``."""
    index = len(GRAPH_CALLS)
    GRAPH_CALLS.append(0)

    def run(*args):
        GRAPH_CALLS[index] += 1
        return graph_module.forward(*args)

    return run


if COUNTING_BACKEND not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(counting_backend, name=COUNTING_BACKEND)


def test_torch_compile_compiles_the_training_forward_and_saves_clean_weights(script, tmp_path, monkeypatch):
    # Inductor needs minutes per graph on this CPU (407 s for the tiny UNet's forward and backward): torch.compile is
    # wrapped here to compile with a backend that runs the captured graphs as they are and counts their calls.
    torch._dynamo.reset()
    GRAPH_CALLS.clear()
    graphs = GRAPH_CALLS
    compile_with_inductor = torch.compile

    def compile_with_counting_backend(model: torch.nn.Module, **options) -> Callable:
        return compile_with_inductor(model, **{**options, "backend": COUNTING_BACKEND})

    monkeypatch.setattr(torch, "compile", compile_with_counting_backend)
    eager = script.run(tmp_path / "eager")
    assert not graphs
    compiled = script.run(tmp_path / "compiled", "--torch_compile")
    assert graphs and sum(graphs) >= STEPS  # the training forward ran through the compiled module
    resumed = script.run(tmp_path / "resumed", "--torch_compile", resume_from=tmp_path / "compiled" / "checkpoint-2")
    assert same_weights(resumed, compiled)
    assert same_weights(compiled, eager)  # the graphs ran eagerly: exactly the eager run's weights
    for name in (script.saved_weights, "checkpoint-2/model.safetensors"):
        assert file_dtypes(tmp_path / "compiled" / name) == file_dtypes(tmp_path / "eager" / name)
        assert not any("_orig_mod" in key for key in file_dtypes(tmp_path / "compiled" / name))
    torch._dynamo.reset()


def test_channels_last_trains_nhwc_and_resumes_exactly(script, tmp_path, conv_calls, start_weights):
    uninterrupted = script.run(tmp_path / "nhwc", "--channels_last")
    weights = [layout for _, layout, _ in conv_calls if layout is not None]
    assert weights and all(weights)  # every convolution's weight NHWC
    nhwc_inputs = sum(bool(layout) for _, _, layout in conv_calls)
    resumed = script.run(tmp_path / "resumed", "--channels_last", resume_from=tmp_path / "nhwc" / "checkpoint-2")
    assert same_weights(resumed, uninterrupted)
    conv_calls.clear()
    nchw = script.run(tmp_path / "nchw", *script.layout_independent)
    assert not any(weight for _, weight, _ in conv_calls)  # without the flag no weight is NHWC
    assert nhwc_inputs > sum(bool(layout) for _, _, layout in conv_calls)  # and fewer feature maps are
    # the same computation in another memory layout: equal up to the convolutions' rounding, measured at most
    # 1.5e-5 per weight and 2.7e-5x the run's movement (a transposed or shuffled input moves the weights ~1x)
    if script.layout_independent:
        uninterrupted = script.run(tmp_path / "nhwc-same-draws", "--channels_last", *script.layout_independent)
    for name in nchw:
        torch.testing.assert_close(uninterrupted[name], nchw[name], atol=1e-4, rtol=0)
    assert norm_of_difference(uninterrupted, nchw) < 1e-3 * norm_of_difference(nchw, start_weights)
    assert file_dtypes(tmp_path / "nhwc" / script.saved_weights) == file_dtypes(
        tmp_path / "nchw" / script.saved_weights
    )


def test_bad_speed_flags_are_one_line_errors(tmp_path, capsys):
    cases = [
        (flags(torch_compile=True, torch_compile_mode="fastest"), ["--torch_compile_mode", "invalid choice"]),
        (flags(torch_compile_mode="max-autotune"), ["--torch_compile_mode max-autotune needs --torch_compile"]),
    ]
    for number, (argv, fragments) in enumerate(cases):  # the console script once, then the same main in-process
        run = run_cli if number == 0 else functools.partial(run_cli_in_process, capsys=capsys)
        result = run("train-ddpm", *flags(dataset_name="digits", output_dir="out"), *argv, cwd=tmp_path)
        assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_clipping_with_the_guards_norm_is_accelerates_clipping_bit_for_bit(tmp_path):
    from accelerate import Accelerator

    from hf_swin_ddpm.diffusion import paper_unet
    from hf_swin_ddpm.training.checkpoints import TrainingProgress
    from hf_swin_ddpm.training.loop import NonFiniteGuard, clip_gradients

    accelerator = Accelerator()
    torch.manual_seed(0)
    models = [paper_unet("tiny", sample_size=8), None]
    models[1] = copy.deepcopy(models[0])
    images, timesteps = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 100, 999])
    for model in models:
        (model(images, timesteps).sample.square().sum() * 100).backward()  # a norm well above the limit
    guard = NonFiniteGuard(TrainingProgress(), str(tmp_path))
    guard.see_loss(torch.tensor(1.0))
    assert not guard.skip_update(accelerator, models[0].parameters())
    assert guard.gradient_norm > 1.0
    clip_gradients(accelerator, models[0], 1.0, guard)
    accelerator.clip_grad_norm_(models[1].parameters(), 1.0)
    for ours, theirs in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad)
