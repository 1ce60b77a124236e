# Copyright 2025 The hf-swin-ddpm authors. Licensed under the Apache License, Version 2.0.
"""Unconditional image generation with a DDPM (Ho et al. 2020, Algorithm 2) as a diffusers pipeline.

Self-contained (diffusers, torch and numpy only) so that it can be shipped as remote code next to a checkpoint.
"""

import contextlib
import functools
import importlib
import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, SchedulerMixin, UNet2DModel
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# `callback_on_step_end_tensor_inputs` names: diffusers' "latents" (x_{t-1}), its alias "image" (this pipeline's first
# name for it), and two read-only outputs of the step
LATENT_NAMES = ("latents", "image")
DEFAULT_TRAJECTORY_FRAMES = 10
# The recorded trajectory (x_t and the x_0 estimate per frame, float32 on the CPU) may take at most this many bytes.
MAX_TRAJECTORY_BYTES = 2**31
# `from_pretrained` arguments that choose what to download rather than how to build the model
_DOWNLOAD_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "token", "revision")
_COMPONENT_LIBRARIES = ("diffusers", "transformers")
# What `paper_scheduler` takes from a repository's scheduler config: the forward process and the model's parameterization
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
# `autocast_dtype` values: the UNet's forward under torch.autocast in one of these (the scheduler stays float32)
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass
class DDPMPaperPipelineOutput(BaseOutput):
    """
    Output of [`DDPMPaperPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The samples x_0 mapped to [0, 1] (`"np"`: `(batch, height, width, channels)`, `"pt"`:
            `(batch, channels, height, width)`), PIL images, or with `output_type="latent"` x_0 itself as the chain
            left it (NCHW, the model's [-1, 1] scale, not clamped), as diffusers' pipelines return their latents.
        trajectory_timesteps (`list[int]`, *optional*):
            With `return_trajectory=True`: the timesteps t (0-based, decreasing) at which the chain was recorded.
        trajectory_samples (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: x_t at those timesteps, `(num_frames, batch, channels, height, width)`,
            float32 on the CPU, in the model's [-1, 1] scale (the input of the step at t).
        trajectory_x0 (`torch.Tensor`, *optional*):
            With `return_trajectory=True`: the model's x_0 estimates at those timesteps (the paper's progressive
            generation, Fig. 6), same layout as `trajectory_samples`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    trajectory_timesteps: list[int] | None = None
    trajectory_samples: torch.Tensor | None = None
    trajectory_x0: torch.Tensor | None = None


def _check_autocast_dtype(autocast_dtype: Any) -> None:
    """Raises `ValueError` unless `autocast_dtype` is None or one of `AUTOCAST_DTYPES`."""
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(
            f"`autocast_dtype` must be None (float32), torch.bfloat16 or torch.float16, got {autocast_dtype!r:.80}."
        )


def _autocast(device: torch.device, autocast_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` on `device` in `autocast_dtype`, or nothing when it is None."""
    if autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_generator(generator: Any) -> None:
    """`generator` is None, a `torch.Generator` or a list of them; a seed is not (use `manual_seed`)."""
    generators = generator if isinstance(generator, list) else [generator]
    bad = [g for g in generators if g is not None and not isinstance(g, torch.Generator)]
    if bad:
        raise ValueError(
            f"`generator` must be a torch.Generator or a list of them, got {type(bad[0]).__name__} {bad[0]!r:.40}; "
            "for a seed pass torch.Generator().manual_seed(seed)."
        )


class DDPMPaperPipeline(DiffusionPipeline):
    """
    Samples images with the reverse process of "Denoising Diffusion Probabilistic Models" (Algorithm 2).

    With a [`DDPMPaperScheduler`] (or diffusers' `DDPMScheduler`) it draws the initial noise and every step's noise
    exactly as diffusers' `DDPMPipeline` does, so the same generator gives the same images (within float32
    rounding) for the same schedule.

    Args:
        unet ([`UNet2DModel`]):
            The noise predictor eps_theta(x_t, t).
        scheduler ([`SchedulerMixin`]):
            The sampler, normally a [`DDPMPaperScheduler`].
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "image", "model_output", "pred_original_sample"]
    max_batch_size = 1024
    max_trajectory_bytes = MAX_TRAJECTORY_BYTES

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, paper_sampler: bool = False, **kwargs: Any
    ) -> DiffusionPipeline:
        """
        Loads a pipeline from a folder or Hub repository, as `DiffusionPipeline.from_pretrained` does.

        Any `DDPMPipeline` repository loads too, such as the paper's released models converted by diffusers
        (`google/ddpm-cifar10-32`, `google/ddpm-ema-celebahq-256`, ...). With `paper_sampler=True` its scheduler is
        replaced by a [`DDPMPaperScheduler`] built from the repository's scheduler config with the paper's sampling
        choices (Algorithm 2 without clipping x_0; the variance the official code used for that model, see
        [`paper_scheduler`]). Without it the repository's own scheduler runs, and a one-time log line says so when
        it is not a `DDPMPaperScheduler`.

        A repository laid out as remote code (`model_index.json` naming this pipeline and its scheduler as
        `[file, class]` pairs, with the files beside it, as `hf_swin_ddpm.hub.save_for_hub` writes) is loaded with
        this class and the installed scheduler class of the same module name, without running the repository's copies
        of the code. Pass `trust_remote_code=True` to run those copies instead.

        A truncated or damaged safetensors file of any component raises an `OSError` naming the file and the fix
        (re-download, or re-save with `save_pretrained`).
        """
        try:
            pipeline = cls._load_pipeline(pretrained_model_name_or_path, **kwargs)
        except Exception as error:
            download_kwargs = {name: kwargs[name] for name in _DOWNLOAD_ARGUMENTS if name in kwargs}
            damaged = _damaged_safetensors(pretrained_model_name_or_path, download_kwargs)
            if damaged is None:
                raise
            raise OSError(
                f"{damaged}: truncated or damaged safetensors file ({' '.join(str(error).split())[:300]}). "
                "Re-download it (`from_pretrained(..., force_download=True)` for a Hub repository) or re-save the "
                "pipeline with `save_pretrained`."
            ) from error
        if paper_sampler:
            pipeline.scheduler = cls.paper_scheduler(pipeline.scheduler)
        elif type(pipeline.scheduler).__name__ != "DDPMPaperScheduler":
            _log_once(
                f"{pretrained_model_name_or_path}: sampling with the repository's {type(pipeline.scheduler).__name__} "
                f"({_sampler_summary(pipeline.scheduler.config)}), not Algorithm 2 as the paper runs it; pass "
                "`paper_sampler=True` for DDPMPaperScheduler with the paper's choices."
            )
        return pipeline

    @classmethod
    def paper_scheduler(cls, scheduler: SchedulerMixin) -> SchedulerMixin:
        """A [`DDPMPaperScheduler`] with the paper's sampling choices, built from `scheduler`'s betas (the config's
        `_SCHEDULE_KEYS`; everything else at the paper scheduler's defaults): Algorithm 2 with no clipping of the x_0 estimate, and the variance the official code
        used for the model. The official code sampled its CIFAR-10 model with sigma_t^2 = beta_t (`run_cifar.py`,
        `model_var_type='fixedlarge'`) and its CelebA-HQ and LSUN models with sigma_t^2 = beta_tilde_t
        (`run_celebahq.py`, `run_lsun.py`: the posterior variance), and diffusers' conversions record exactly that
        as `variance_type` (`fixed_large` / `fixed_small`); that choice is kept, and any other falls back to the
        paper's sigma_t^2 = beta_t."""
        scheduler_class = cls._component_class("scheduler", "scheduling_ddpm_paper", "DDPMPaperScheduler")
        variance_type = scheduler.config.get("variance_type")
        if variance_type not in ("fixed_large", "fixed_small"):
            variance_type = "fixed_large"
        schedule = {key: scheduler.config[key] for key in _SCHEDULE_KEYS if key in scheduler.config}
        return scheduler_class(**schedule, variance_type=variance_type, clip_sample=False)

    @classmethod
    def _load_pipeline(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> DiffusionPipeline:
        """`from_pretrained` without the damaged-file diagnosis."""
        if kwargs.get("trust_remote_code") or kwargs.get("custom_pipeline") is not None:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        download_kwargs = {name: kwargs[name] for name in _DOWNLOAD_ARGUMENTS if name in kwargs}
        model_index = _read_model_index(pretrained_model_name_or_path, download_kwargs)
        package_root = cls.__module__.partition(".")[0]
        names_own_module = any(
            isinstance(model_index.get(name), (list, tuple))
            and str(model_index[name][0]).startswith(package_root + ".")
            for name in ("unet", "scheduler")
        )
        if not isinstance(model_index.get("_class_name"), (list, tuple)) and not names_own_module:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

        folder = _local_folder(pretrained_model_name_or_path, download_kwargs)
        model_kwargs = {name: value for name, value in kwargs.items() if name not in _DOWNLOAD_ARGUMENTS}
        components = {}
        for name in ("unet", "scheduler"):
            if name in model_kwargs:
                components[name] = model_kwargs.pop(name)
                continue
            component_class = cls._component_class(name, *model_index[name])
            if issubclass(component_class, SchedulerMixin):
                components[name] = component_class.from_pretrained(folder, subfolder=name)
            else:
                components[name] = component_class.from_pretrained(folder, subfolder=name, **model_kwargs)
        pipeline = cls(**components)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline

    @classmethod
    def _component_class(cls, name: str, library: str, class_name: str) -> type:
        """The class of a `model_index.json` entry: from diffusers/transformers, or this package's module of that name.

        A remote-code entry `[file, class]` and an entry naming a module of this package by its full path (also the
        path of an earlier layout, such as `hf_swin_ddpm.ddpm.scheduling_ddpm_paper`) are looked up by file name
        only among modules already imported beside this pipeline's own module, so nothing the repository names gets
        imported or run.
        """
        if library in _COMPONENT_LIBRARIES:
            return getattr(importlib.import_module(library), class_name)
        package = cls.__module__.rpartition(".")[0]
        file_name = library.rpartition(".")[2]
        module = sys.modules.get(f"{package}.{file_name}" if package else file_name)
        component_class = getattr(module, class_name, None)
        if component_class is None:
            raise ValueError(
                f"`model_index.json` names the {name} as remote code {[library, class_name]}, which this package does "
                f"not provide; pass `trust_remote_code=True` to run the repository's copy, or pass `{name}=` yourself."
            )
        return component_class

    @property
    def num_timesteps(self) -> int:
        """Steps of the current (or last) call's chain, as in diffusers' pipelines."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (e.g. from `callback_on_step_end`) to skip the remaining steps."""
        return self._interrupt

    def _image_shape(self, batch_size: int) -> tuple[int, ...]:
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            return (batch_size, self.unet.config.in_channels, sample_size, sample_size)
        return (batch_size, self.unet.config.in_channels, *sample_size)

    def check_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        num_inference_steps: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> None:
        """Raises `ValueError` naming the first bad argument."""
        _check_generator(generator)
        if not _is_int(batch_size) or not 1 <= batch_size <= self.max_batch_size:
            raise ValueError(
                f"`batch_size` must be an integer in [1, {self.max_batch_size}], got {batch_size!r}; "
                "generate larger sets in several calls."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but `batch_size` is {batch_size}; "
                "pass one generator per sample."
            )
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if not _is_int(num_inference_steps) or not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` must be an integer in [1, {num_train_timesteps}] (the scheduler's "
                f"`num_train_timesteps`), got {num_inference_steps!r}."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        if isinstance(callback_on_step_end_tensor_inputs, str):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a list of names, got the string "
                f"{callback_on_step_end_tensor_inputs!r}; write [{callback_on_step_end_tensor_inputs!r}]."
            )
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {unknown}."
            )

    def _trajectory_indices(self, trajectory_timesteps: int | Sequence[int] | None) -> list[int]:
        """The step indices at which to record the chain: `int` frames evenly spaced, or explicit timesteps."""
        timesteps = [int(t) for t in self.scheduler.timesteps]
        if trajectory_timesteps is None:
            trajectory_timesteps = DEFAULT_TRAJECTORY_FRAMES
        if _is_int(trajectory_timesteps):
            if trajectory_timesteps < 1:
                raise ValueError(f"`trajectory_timesteps` must be at least 1 frame, got {trajectory_timesteps}.")
            count = min(int(trajectory_timesteps), len(timesteps))
            return sorted({int(i) for i in np.linspace(0, len(timesteps) - 1, count).round()})
        if isinstance(trajectory_timesteps, (str, bytes)) or not all(_is_int(t) for t in trajectory_timesteps):
            raise ValueError(
                f"`trajectory_timesteps` must be a number of frames or a list of integer timesteps, got "
                f"{trajectory_timesteps!r:.80}."
            )
        index_of = {t: i for i, t in enumerate(timesteps)}
        missing = [int(t) for t in trajectory_timesteps if int(t) not in index_of]
        if missing:
            raise ValueError(
                f"`trajectory_timesteps` {missing} are not in the sampling chain ({timesteps[0]} ... {timesteps[-1]}, "
                f"{len(timesteps)} steps)."
            )
        return sorted({index_of[int(t)] for t in trajectory_timesteps})

    def _check_trajectory_size(self, num_frames: int, image_shape: tuple[int, ...]) -> None:
        """Refuses a trajectory whose frames (x_t and the x_0 estimate, float32) would exceed `max_trajectory_bytes`."""
        size = 2 * num_frames * math.prod(image_shape) * 4
        if size > self.max_trajectory_bytes:
            raise ValueError(
                f"`trajectory_timesteps`: {num_frames} frames of a {tuple(image_shape)} batch would take "
                f"{size:,} bytes, more than `max_trajectory_bytes` = {self.max_trajectory_bytes:,}; record fewer "
                "frames or fewer images."
            )

    def _postprocess(self, image: torch.Tensor, output_type: str) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        """Maps x_0 from [-1, 1] to [0, 1] and converts it like diffusers' `DDPMPipeline`."""
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return image
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(image) if output_type == "pil" else image

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict[str, torch.Tensor]], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        trajectory_timesteps: int | Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> DDPMPaperPipelineOutput | tuple:
        """
        Generates `batch_size` images by running the reverse chain from x_T ~ N(0, I).

        Any diffusers scheduler with the usual `set_timesteps(n, device)`, `scale_model_input(x, t)` and
        `step(model_output, t, x, [generator=...])` works (DDPM, DDIM, DPM-Solver++, Euler, ...): the initial noise is
        scaled by its `init_noise_sigma` and the generator goes to `step` when it takes one, as diffusers' pipelines
        do.

        Args:
            batch_size (`int`, defaults to 1):
                Number of images, 1 to `max_batch_size` (1024); larger requests raise a `ValueError` instead of
                exhausting memory. With `return_trajectory=True` the recorded frames may take at most
                `max_trajectory_bytes` (2 GiB).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes sampling deterministic. A list (one per image) makes each image depend only on its own
                generator, whatever the batch size.
            num_inference_steps (`int`, defaults to 1000):
                Steps of the chain; fewer than the scheduler's `num_train_timesteps` respaces it.
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"` (float in [0, 1], NHWC), `"pt"` (float in [0, 1], NCHW) or `"latent"` (x_0 as the
                chain left it, NCHW in [-1, 1], unclamped; what diffusers' pipelines return for their latents).
            return_dict (`bool`, defaults to `True`):
                Return a [`DDPMPaperPipelineOutput`] rather than a tuple.
            return_trajectory (`bool`, defaults to `False`):
                Also return x_t and the x_0 estimates at a few steps (see `trajectory_timesteps`); needs a scheduler
                whose `step` returns `pred_original_sample`.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)` at the end of every
                step, as in diffusers' pipelines, with `callback_kwargs` holding the tensors named in
                `callback_on_step_end_tensor_inputs`. It returns a dict (or None): a `"latents"` (or `"image"`)
                entry replaces x_{t-1}, the input of the next step. `"model_output"` and `"pred_original_sample"`
                are this step's results, passed for reading. `pipe.num_timesteps` is the chain's length and setting
                `pipe._interrupt = True` skips the remaining steps.
            callback_on_step_end_tensor_inputs (`Sequence[str]`, defaults to `("latents",)`):
                Which of `"latents"` (x_{t-1}), `"image"` (the same tensor under this pipeline's earlier name),
                `"model_output"`, `"pred_original_sample"` the callback receives.
            trajectory_timesteps (`int` or `Sequence[int]`, *optional*):
                With `return_trajectory=True`: the number of evenly spaced frames (default 10, first and last step
                included) or the explicit timesteps to record.
            latents (`torch.Tensor`, *optional*):
                x_T to start from, `(batch_size, channels, height, width)` (before `init_noise_sigma` scaling, as
                diffusers' pipelines take it); drawn from `generator` when omitted.
            autocast_dtype (`torch.dtype`, *optional*):
                `torch.bfloat16` (or `torch.float16`): run the UNet's forward under `torch.autocast` in that dtype,
                about 1.5x faster on a CPU with bf16 instructions (AVX-512 BF16, AMX) and on GPUs, but several times
                slower on a CPU without them (AVX2 only), where torch's convolutions fall back to a slow path. Only
                eps_theta is computed in low precision; it is cast back to the chain's float32 before the
                scheduler's step, so x_t and the noise draws stay float32 (the same generator gives samples close
                to the float32 ones). Default: float32 throughout.

        Returns:
            [`DDPMPaperPipelineOutput`] or `tuple`: `(images,)`, or with `return_trajectory=True`
            `(images, trajectory_timesteps, trajectory_samples, trajectory_x0)`.
        """
        # 1. Check the arguments before any work.
        self.check_inputs(batch_size, generator, num_inference_steps, output_type, callback_on_step_end_tensor_inputs)
        _check_autocast_dtype(autocast_dtype)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"`callback_on_step_end` must be callable, got {type(callback_on_step_end).__name__}.")

        # 2. The chain's timesteps and x_T ~ N(0, I) (Algorithm 2, line 1).
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)  # first: some set `init_noise_sigma` here
        timesteps = self.scheduler.timesteps
        image = self._initial_noise(batch_size, generator, latents, device)
        self._num_timesteps = len(timesteps)
        self._interrupt = False
        trajectory = _Trajectory(self._trajectory_indices(trajectory_timesteps) if return_trajectory else ())
        self._check_trajectory_size(len(trajectory.indices), tuple(image.shape))
        step_kwargs = self._step_kwargs(generator)

        # 3. The reverse process: x_{t-1} from x_t for t = T, ..., 1 (Algorithm 2, lines 2-5).
        image = self._reverse_process(
            image, step_kwargs, autocast_dtype, trajectory, callback_on_step_end, callback_on_step_end_tensor_inputs
        )

        # 4. x_0 as images (Algorithm 2, line 6), with the recorded frames.
        return self._chain_output(image, output_type, return_dict, trajectory if return_trajectory else None)

    def _reverse_process(
        self,
        image: torch.Tensor,
        step_kwargs: dict[str, Any],
        autocast_dtype: torch.dtype | None = None,
        trajectory: "_Trajectory | None" = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = (),
    ) -> torch.Tensor:
        """Runs the scheduler's chain (`scheduler.timesteps`) from x_t = `image` down to x_0: each step computes
        eps_theta(x_t, t) and lets the scheduler draw x_{t-1} (Algorithm 2, lines 3-4)."""
        device = image.device
        for step_index, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self.interrupt:
                continue
            model_input = self.scheduler.scale_model_input(image, t)
            with _autocast(device, autocast_dtype):
                model_output = self.unet(model_input, t).sample  # eps_theta(x_t, t)
            model_output = model_output.to(image.dtype)
            step_output = self.scheduler.step(model_output, t, image, **step_kwargs)
            pred_original_sample = getattr(step_output, "pred_original_sample", None)
            if trajectory is not None:
                trajectory.record(step_index, int(t), image, pred_original_sample, self.scheduler)
            image = step_output.prev_sample
            if callback_on_step_end is not None:
                available = {"model_output": model_output, "pred_original_sample": pred_original_sample}
                available.update(dict.fromkeys(LATENT_NAMES, image))
                callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                image = _replaced_latents(image, callback_on_step_end(self, step_index, t, callback_kwargs))
        return image

    def _initial_noise(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        device: torch.device,
    ) -> torch.Tensor:
        """x_T: `latents` if given (checked), else drawn as diffusers' `DDPMPipeline` draws it; times the scheduler's
        `init_noise_sigma` (1 for DDPM)."""
        image_shape = self._image_shape(batch_size)
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != image_shape:
                shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"`latents` must be a tensor of shape {image_shape} (x_T), got {shape}.")
            image = latents.to(device=device, dtype=self.unet.dtype)
        elif device.type == "mps":  # randn is not reproducible on mps
            image = randn_tensor(image_shape, generator=generator, dtype=self.unet.dtype).to(device)
        else:
            image = randn_tensor(image_shape, generator=generator, device=device, dtype=self.unet.dtype)
        return image * self.scheduler.init_noise_sigma

    def _step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict[str, Any]:
        """`generator=` for schedulers whose `step` takes one (DDPM, DDIM, Euler, ...), nothing for the others."""
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if accepts_generator else {}

    # --- the paper's sample figures: interpolation (Fig. 8) and shared latents (Fig. 7) -------------------------

    def preprocess(self, images: Any) -> torch.Tensor:
        """PIL images (or one), float tensors (N, C, H, W) / (C, H, W) in [0, 1] (this pipeline's `"pt"` output) or
        float arrays (N, H, W, C) / (H, W, C) in [0, 1] (its `"np"` output) -> x_0, (N, C, H, W) in [-1, 1] at the
        unet's size and channels (PIL images are converted to L or RGB and resized bilinearly)."""
        channels = self.unet.config.in_channels
        height, width = self._image_shape(1)[2:]
        if isinstance(images, np.ndarray):  # the `"np"` output's layout: (H, W, C) or (N, H, W, C)
            batch = images[None] if images.ndim == 3 else images
            if batch.ndim != 4:
                raise ValueError(
                    f"image arrays must be ({height}, {width}, {channels}) or (N, {height}, {width}, {channels}) in "
                    f"[0, 1], got {images.shape}."
                )
            images = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            if batch.ndim != 4 or batch.shape[1:] != (channels, height, width):
                raise ValueError(
                    f"image tensors must be ({channels}, {height}, {width}) or (N, {channels}, {height}, {width}) "
                    f"in [0, 1], got {tuple(images.shape)}."
                )
            if not batch.is_floating_point() or batch.min() < 0 or batch.max() > 1:
                raise ValueError("image tensors must be floating point in [0, 1] (the pipeline's `pt` output).")
            return (batch * 2 - 1).to(self._execution_device, self.unet.dtype)
        pil_images = [images] if isinstance(images, PIL.Image.Image) else list(images)
        if not pil_images or not all(isinstance(image, PIL.Image.Image) for image in pil_images):
            raise ValueError("images must be PIL images or float tensors in [0, 1].")
        arrays = []
        for image in pil_images:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), PIL.Image.BILINEAR)
            arrays.append(np.asarray(image, dtype=np.float32).reshape(height, width, channels) / 127.5 - 1.0)
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch.to(self._execution_device, self.unet.dtype)

    def _start_timestep(self, t: int, num_inference_steps: int | None) -> int:
        """Sets the chain (T steps, or `num_inference_steps` respaced) and returns its largest timestep <= t."""
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if not _is_int(t) or not 0 <= t < num_train_timesteps:
            raise ValueError(f"`t` must be an integer timestep in [0, {num_train_timesteps - 1}], got {t!r}.")
        steps = num_train_timesteps if num_inference_steps is None else num_inference_steps
        if not _is_int(steps) or not 1 <= steps <= num_train_timesteps:
            raise ValueError(f"`num_inference_steps` must be an integer in [1, {num_train_timesteps}], got {steps!r}.")
        self.scheduler.set_timesteps(steps)
        chain = [int(step) for step in self.scheduler.timesteps if int(step) <= t]
        if not chain:
            raise ValueError(f"no step of the {steps}-step chain is at or below t = {t}; use a larger t.")
        return chain[0]

    def encode(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Eq. 4) with the given standard normal `noise`."""
        timesteps = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
        return self.scheduler.add_noise(x0, noise, timesteps)

    @torch.no_grad()
    def decode(
        self, x_t: torch.Tensor, t: int, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Runs the reverse process (Algorithm 2) from `x_t` at timestep `t` of the chain set by
        `scheduler.set_timesteps` down to x_0; returns x_0 in [-1, 1]."""
        _check_generator(generator)
        image = x_t
        for step in self.scheduler.timesteps:
            if int(step) > t:
                continue
            model_output = self.unet(image, step).sample
            image = self.scheduler.step(model_output, step, image, generator=generator).prev_sample
        return image

    def _reverse_generators(self, generator: torch.Generator | None, count: int, same: bool) -> list[torch.Generator]:
        """Per-image generators for the reverse process, seeded from `generator`: all with one seed (`same`, so
        that each image's chain noise does not depend on the others), or one seed each."""
        device = self._execution_device
        seeds = torch.randint(
            0,
            2**62,
            (1 if same else count,),
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        )
        seeds = seeds.tolist() * (count if same else 1)
        return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    @torch.no_grad()
    def interpolate(
        self,
        image_a: Any,
        image_b: Any,
        t: int = 500,
        num_points: int = 8,
        shared_noise: bool = True,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMPaperPipelineOutput | tuple:
        """
        Interpolates two images in the diffusion latent space (Ho et al. 2020, Sec. 4.3, Fig. 8).

        Both images are encoded with the forward process, x_t = q(x_t | x_0) (Eq. 4), the latents are mixed linearly,
        x_t(lambda) = (1 - lambda) x_t^a + lambda x_t^b for `num_points` values of lambda from 0 to 1, and each mix
        is decoded with the reverse process from t. All points share the reverse-process noise, so the end points
        are exactly the reverse-process decodings of each image (`decode(encode(x_0, t, noise), t, ...)`) and the
        points differ only by their latent.

        Args:
            image_a, image_b (`PIL.Image.Image` or `torch.Tensor`): the two images (tensors (C, H, W) in [0, 1]).
            t (`int`, defaults to 500): the timestep (0-based) of the latents; the paper shows t = 500 of T = 1000.
                With `num_inference_steps` the largest step of the respaced chain at or below t is used.
            num_points (`int`, defaults to 8): points on the line, both ends included (at least 2).
            shared_noise (`bool`, defaults to `True`): encode both images with the same noise (the paper's
                choice); otherwise each gets its own.
            generator (`torch.Generator`, *optional*): the source of all noise.
            num_inference_steps (`int`, *optional*): respace the reverse chain (default: all T steps).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.

        Returns:
            [`DDPMPaperPipelineOutput`] with the `num_points` decoded images, lambda = 0 first; `trajectory_timesteps`
            holds `[t]` as used, `trajectory_samples` the interpolated latents (num_points, C, H, W) (float32, CPU).
        """
        _check_generator(generator)
        if not _is_int(num_points) or not 2 <= num_points <= self.max_batch_size:
            raise ValueError(f"`num_points` must be an integer in [2, {self.max_batch_size}], got {num_points!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        x0 = torch.cat([self.preprocess(image_a), self.preprocess(image_b)])
        if x0.shape[0] != 2:
            raise ValueError("`image_a` and `image_b` must be one image each.")
        start = self._start_timestep(t, num_inference_steps)
        noise_shape = (1 if shared_noise else 2, *x0.shape[1:])
        noise = randn_tensor(noise_shape, generator=generator, device=x0.device, dtype=x0.dtype).expand_as(x0)
        latents = self.encode(x0, start, noise)
        weights = torch.linspace(0, 1, num_points, device=x0.device, dtype=x0.dtype).reshape(-1, 1, 1, 1)
        mixed = (1 - weights) * latents[:1] + weights * latents[1:]
        images = self.decode(mixed, start, self._reverse_generators(generator, num_points, same=True))
        return self._figure_output(images, [start], mixed, output_type, return_dict)

    @torch.no_grad()
    def shared_latent_samples(
        self,
        image: Any,
        timesteps: Sequence[int] = (250, 500, 750, 999),
        num_samples: int = 4,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> DDPMPaperPipelineOutput | tuple:
        """
        Samples that share one latent x_t of an image (Ho et al. 2020, Sec. 4.3, Fig. 7): for each t in `timesteps`,
        one x_t ~ q(x_t | x_0) is decoded `num_samples` times with independent reverse-process noise. What the
        samples share shows what x_t still holds of the image (at large t, only coarse attributes).

        Returns:
            [`DDPMPaperPipelineOutput`] with `len(timesteps) * num_samples` images, one row of `num_samples` per t in
            the given order; `trajectory_timesteps` holds the t used and `trajectory_samples` the x_t, one per t.
        """
        _check_generator(generator)
        if not _is_int(num_samples) or not 1 <= num_samples <= self.max_batch_size:
            raise ValueError(f"`num_samples` must be an integer in [1, {self.max_batch_size}], got {num_samples!r}.")
        if isinstance(timesteps, (str, bytes)) or not len(timesteps) or not all(_is_int(t) for t in timesteps):
            raise ValueError(f"`timesteps` must be a non-empty list of integer timesteps, got {timesteps!r:.60}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        x0 = self.preprocess(image)[:1]
        used, latents, rows = [], [], []
        for t in timesteps:
            start = self._start_timestep(int(t), num_inference_steps)
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            latent = self.encode(x0, start, noise)
            generators = self._reverse_generators(generator, num_samples, same=False)
            rows.append(self.decode(latent.expand(num_samples, -1, -1, -1), start, generators))
            used.append(start)
            latents.append(latent[0])
        return self._figure_output(torch.cat(rows), used, torch.stack(latents), output_type, return_dict)

    # --- editing with the unconditional model: RePaint inpainting and SDEdit image-to-image ----------------------

    def preprocess_mask(self, mask: Any, x0: torch.Tensor) -> torch.Tensor:
        """A keep-mask (1 = keep, 0 = regenerate) as a float tensor (N, 1, H, W) of zeros and ones for the images
        `x0` (N, C, H, W): a PIL image (grayscale, white = keep; thresholded at 128), a boolean-like array (H, W),
        (N, H, W) or (N, H, W, 1), or a tensor (H, W), (1, H, W) or (N, 1, H, W). One mask is used for every image."""
        height, width = x0.shape[2:]
        if isinstance(mask, PIL.Image.Image):
            if mask.size != (width, height):
                raise ValueError(
                    f"`mask` is {mask.size[0]}x{mask.size[1]} but the image is {width}x{height}; give a mask of the "
                    "image's size."
                )
            mask = torch.from_numpy(np.asarray(mask.convert("L")) >= 128)
        elif isinstance(mask, np.ndarray):
            array = mask[..., 0] if mask.ndim in (3, 4) and mask.shape[-1] == 1 else mask
            mask = torch.from_numpy(np.ascontiguousarray(array))
            mask = mask.unsqueeze(-3) if mask.ndim == 3 else mask
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"`mask` must be a PIL image, a numpy array or a tensor, got {type(mask).__name__}.")
        batch = mask.reshape(1, 1, *mask.shape) if mask.ndim == 2 else mask.unsqueeze(0) if mask.ndim == 3 else mask
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise ValueError(
                f"`mask` must be single-channel, (H, W), (1, H, W) or (N, 1, H, W), got shape {tuple(mask.shape)}."
            )
        if tuple(batch.shape[2:]) != (height, width) or batch.shape[0] not in (1, x0.shape[0]):
            raise ValueError(
                f"`mask` has shape {tuple(mask.shape)} but the images are {tuple(x0.shape)}; give one mask of the "
                f"image's size {height}x{width} (or one per image)."
            )
        values = batch.float()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError("`mask` must be boolean-like: only 0 (regenerate) and 1 (keep), or False and True.")
        return values.expand(x0.shape[0], 1, height, width).to(x0.device, x0.dtype)

    @torch.no_grad()
    def inpaint(
        self,
        image: Any,
        mask: Any,
        num_inference_steps: int = 250,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
    ) -> DDPMPaperPipelineOutput | tuple:
        """
        Fills the masked region of images with the unconditional model: RePaint (Lugmayr et al. 2022, Algorithm 1).

        Each reverse step draws the unknown region with Algorithm 2 of Ho et al. and replaces the known region with
        a fresh forward-noised copy of the original, x_{t-1}^known ~ q(x_{t-1} | x_0) (Eq. 4):
        x_{t-1} = m * x_{t-1}^known + (1 - m) * x_{t-1}^unknown. RePaint's resampling schedule then goes back up
        `jump_length` steps with q(x_t | x_{t-1}) (Eq. 2), `jump_n_sample - 1` times at every `jump_length`-th step,
        so that the regenerated region harmonises with the known one ([`repaint_schedule`]).

        Args:
            image: the images: PIL images (or one), float tensors (N, C, H, W) / (C, H, W) or arrays (N, H, W, C) /
                (H, W, C) in [0, 1].
            mask: 1 (white) = keep, 0 (black) = regenerate; see [`preprocess_mask`].
            num_inference_steps (`int`, defaults to 250): steps of the respaced chain (RePaint's T = 250).
            jump_length (`int`, defaults to 10), jump_n_sample (`int`, defaults to 10): RePaint's resampling
                schedule; `jump_n_sample=1` is plain replacement without resampling.
            generator: the source of all noise (one, or one per image).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_trajectory (`bool`, defaults to `False`): also return the input x_t and the x_0 estimate of
                every reverse step (`trajectory_timesteps` holds each step's t, with repeats where the schedule
                jumps); the known region of every frame but the first (pure noise) is a draw of q(x_t | x_0).

        Returns:
            [`DDPMPaperPipelineOutput`] or a tuple, as `__call__`.
        """
        _check_generator(generator)
        x0 = self._preprocess_image_argument(image)
        keep = self.preprocess_mask(mask, x0)
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.check_inputs(x0.shape[0], generator, num_inference_steps, output_type, ())
        self.scheduler.set_timesteps(num_inference_steps, device=x0.device)
        chain = [int(t) for t in self.scheduler.timesteps.flip(0)]  # chain[i]: the i-th timestep from the bottom
        alphas_cumprod = self.scheduler.alphas_cumprod.to(x0.device, torch.float64)
        schedule = repaint_schedule(len(chain), jump_length, jump_n_sample)
        self._num_timesteps = len(schedule) - 1
        self._interrupt = False
        step_kwargs = self._step_kwargs(generator)
        x_t = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        trajectory = _Trajectory(range(len(schedule)) if return_trajectory else ())
        self._check_trajectory_size(len(trajectory.indices), tuple(x0.shape))
        for index, (current, following) in enumerate(self.progress_bar(list(zip(schedule[:-1], schedule[1:])))):
            if following > current:  # resampling: x_t ~ q(x_t | x_{t'}) = N(sqrt(abar_t / abar_t') x_t', ...) (Eq. 2)
                ratio = alphas_cumprod[chain[following]] / alphas_cumprod[chain[current]]
                noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                x_t = (ratio.sqrt() * x_t + (1 - ratio).sqrt() * noise).to(x0.dtype)
                continue
            t = chain[current]
            model_output = self.unet(self.scheduler.scale_model_input(x_t, t), t).sample.to(x0.dtype)
            step_output = self.scheduler.step(model_output, t, x_t, **step_kwargs)
            trajectory.record(index, t, x_t, getattr(step_output, "pred_original_sample", None), self.scheduler)
            unknown = step_output.prev_sample
            if following < 0:
                known = x0
            else:
                noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                known = self.encode(x0, chain[following], noise)  # q(x_{t-1} | x_0), Eq. 4
            x_t = keep * known + (1 - keep) * unknown
        return self._chain_output(x_t, output_type, return_dict, trajectory if return_trajectory else None)

    @torch.no_grad()
    def img2img(
        self,
        image: Any,
        strength: float = 0.5,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_trajectory: bool = False,
    ) -> DDPMPaperPipelineOutput | tuple:
        """
        Image-to-image with the unconditional model: SDEdit (Meng et al. 2021, Algorithm 1 with the DDPM sampler).

        The images are noised to the paper's t_0 = `strength` * T with q(x_t | x_0) (Eq. 4) and the reverse process
        (Algorithm 2) runs from there on a chain of round(`strength` * `num_inference_steps`) steps, t_0 - 1 (0-based)
        down to 0. Small strengths keep the input's layout and details; strength 1 ignores the input.

        Args:
            image: as [`inpaint`].
            strength (`float`, defaults to 0.5): t_0 / T, in [0, 1]; 0 returns the input.
            num_inference_steps (`int`, defaults to 50): the steps of a full (strength 1) chain.
            generator, output_type, return_dict: as `__call__`.
            return_trajectory (`bool`, defaults to `False`): also return x_t and the x_0 estimate at every step.

        Returns:
            [`DDPMPaperPipelineOutput`] or a tuple, as `__call__`; `num_timesteps` is the number of steps run.
        """
        _check_generator(generator)
        x0 = self._preprocess_image_argument(image)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise ValueError(f"`strength` must be a number in [0, 1], got {strength!r}.")
        self.check_inputs(x0.shape[0], generator, num_inference_steps, output_type, ())
        if "timesteps" not in inspect.signature(self.scheduler.set_timesteps).parameters:
            raise ValueError(
                f"img2img needs a scheduler whose `set_timesteps` takes explicit `timesteps`; "
                f"{type(self.scheduler).__name__} does not (use DDPMPaperScheduler or DDPMScheduler)."
            )
        num_steps = round(strength * num_inference_steps)
        self._num_timesteps = num_steps
        self._interrupt = False
        trajectory = _Trajectory(range(num_steps) if return_trajectory else ())
        self._check_trajectory_size(len(trajectory.indices), tuple(x0.shape))
        if num_steps == 0:
            return self._chain_output(x0, output_type, return_dict, trajectory if return_trajectory else None)
        start = round(strength * self.scheduler.config.num_train_timesteps) - 1  # t_0 = strength * T, 0-based
        timesteps = np.linspace(start, 0, num_steps).round().astype(np.int64).tolist()
        self.scheduler.set_timesteps(timesteps=timesteps, device=x0.device)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.encode(x0, start, noise)
        x_t = self._reverse_process(x_t, self._step_kwargs(generator), trajectory=trajectory)
        return self._chain_output(x_t, output_type, return_dict, trajectory if return_trajectory else None)

    def _preprocess_image_argument(self, image: Any) -> torch.Tensor:
        """[`preprocess`] with errors that name the `image` argument."""
        try:
            return self.preprocess(image)
        except ValueError as error:
            raise ValueError(f"`image`: {error}") from None

    def _chain_output(
        self, x0: torch.Tensor, output_type: str, return_dict: bool, trajectory: "_Trajectory | None"
    ) -> DDPMPaperPipelineOutput | tuple:
        """The output of a chain (`__call__`, `inpaint`, `img2img`): x_0 as `output_type`, and the recorded frames
        when `trajectory` is given."""
        images = x0 if output_type == "latent" else self._postprocess(x0, output_type)
        self.maybe_free_model_hooks()
        frames = trajectory.stacked() if trajectory is not None else (None, None, None)
        if not return_dict:
            return (images, *frames) if trajectory is not None else (images,)
        return DDPMPaperPipelineOutput(
            images=images, trajectory_timesteps=frames[0], trajectory_samples=frames[1], trajectory_x0=frames[2]
        )

    def _figure_output(
        self, images: torch.Tensor, timesteps: list[int], latents: torch.Tensor, output_type: str, return_dict: bool
    ) -> DDPMPaperPipelineOutput | tuple:
        images = self._postprocess(images, output_type)
        self.maybe_free_model_hooks()
        latents = latents.detach().float().cpu()
        if not return_dict:
            return (images, timesteps, latents)
        return DDPMPaperPipelineOutput(images=images, trajectory_timesteps=timesteps, trajectory_samples=latents)


def repaint_schedule(num_inference_steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """RePaint's resampling schedule (Lugmayr et al. 2022, Sec. 4.2; `get_schedule_jump` in the official code): the
    sequence of chain indices (num_inference_steps - 1 down to -1, the end) that the sampler visits. Going down by
    one is a reverse step; at every `jump_length`-th index below the top the sequence goes back up `jump_length`
    indices, `jump_n_sample - 1` times, and comes down again."""
    jumps = {j: jump_n_sample - 1 for j in range(0, num_inference_steps - jump_length, jump_length)}
    t = num_inference_steps
    schedule = []
    while t >= 1:
        t -= 1
        schedule.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                schedule.append(t)
    schedule.append(-1)
    return schedule


class _Trajectory:
    """The frames `return_trajectory=True` records: x_t and the x_0 estimate at the chosen step indices."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = set(indices)
        self.timesteps: list[int] = []
        self.samples: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []

    def record(
        self, step_index: int, t: int, x_t: torch.Tensor, x0: torch.Tensor | None, scheduler: SchedulerMixin
    ) -> None:
        if step_index not in self.indices:
            return
        if x0 is None:
            raise ValueError(
                f"`return_trajectory=True` needs the x_0 estimate, which {type(scheduler).__name__}.step does not "
                "return (`pred_original_sample`); use DDPMPaperScheduler, DDPMScheduler, DDIMScheduler or "
                "EulerDiscreteScheduler."
            )
        self.timesteps.append(t)
        self.samples.append(x_t.detach().float().cpu())
        self.x0.append(x0.detach().float().cpu())

    def stacked(self) -> tuple[list[int], torch.Tensor | None, torch.Tensor | None]:
        """(timesteps, x_t frames, x_0 frames); the frames may be missing only when a callback interrupted the
        chain before the first recorded step."""
        if not self.samples:
            return self.timesteps, None, None
        return self.timesteps, torch.stack(self.samples), torch.stack(self.x0)


@functools.cache
def _log_once(message: str) -> None:
    """Logs `message` at warning level the first time it is seen in this process."""
    logger.warning(message)


def _sampler_summary(config: Any) -> str:
    """`variance_type=..., clip_sample=...` of a scheduler config, as far as it has them."""
    keys = ("variance_type", "clip_sample")
    return ", ".join(f"{key}={config[key]!r}" for key in keys if key in config) or "its own update rule"


def _replaced_latents(latents: torch.Tensor, callback_outputs: dict[str, Any] | None) -> torch.Tensor:
    """x_{t-1} after `callback_on_step_end`: its `"latents"` or `"image"` entry, whichever it replaced."""
    if not callback_outputs:
        return latents
    replaced = [callback_outputs[name] for name in LATENT_NAMES if callback_outputs.get(name, latents) is not latents]
    if len(replaced) == 2 and replaced[0] is not replaced[1]:
        raise ValueError(
            "`callback_on_step_end` returned different tensors under `latents` and `image`; they name the same "
            "x_{t-1}, return one of them."
        )
    return replaced[0] if replaced else latents


def _read_model_index(pretrained_model_name_or_path: str | os.PathLike, download_kwargs: dict[str, Any]) -> dict:
    """`model_index.json` of a local folder, or of a Hub repository (downloaded into the cache)."""
    if os.path.isdir(pretrained_model_name_or_path):
        path = Path(pretrained_model_name_or_path) / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(str(pretrained_model_name_or_path), "model_index.json", **download_kwargs)
    return json.loads(Path(path).read_text())


def _local_folder(pretrained_model_name_or_path: str | os.PathLike, download_kwargs: dict[str, Any]) -> str:
    """The folder itself, or the cached snapshot of a Hub repository's configs and safetensors weights."""
    if os.path.isdir(pretrained_model_name_or_path):
        return str(pretrained_model_name_or_path)
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "*/*.json", "*/*.safetensors"]
    return snapshot_download(str(pretrained_model_name_or_path), allow_patterns=patterns, **download_kwargs)


def _damaged_safetensors(
    pretrained_model_name_or_path: str | os.PathLike, download_kwargs: dict[str, Any]
) -> Path | None:
    """The first safetensors file, in the folder or the cached Hub snapshot, whose header safetensors cannot read."""
    from safetensors import SafetensorError, safe_open

    try:
        folder = Path(_local_folder(pretrained_model_name_or_path, {**download_kwargs, "local_files_only": True}))
    except Exception:  # nothing cached to inspect
        return None
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            safe_open(str(path), framework="pt").metadata()
        except (SafetensorError, OSError):
            return path
    return None
