"""Samplers by name, as the CLI and the Space offer them: the paper's Algorithm 2, or one of diffusers' schedulers built
from a model's scheduler config (its betas and parameterization).

    pipeline.scheduler = sampler_scheduler("ddim", pipeline.scheduler)
"""

from __future__ import annotations

import inspect

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerMixin,
)

from .pipeline_ddpm_paper import DDPMPaperPipeline

SAMPLERS = ("paper", "ddpm", "ddim", "dpmsolver++", "euler")
# sigma_t^2 = beta_t (the paper's Algorithm 2) or beta_tilde_t (the posterior variance, Eq. 7)
VARIANCE_TYPES = ("fixed_large", "fixed_small")
_DIFFUSERS_SCHEDULERS = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}


def sampler_scheduler(name: str, scheduler: SchedulerMixin, variance_type: str | None = None) -> SchedulerMixin:
    """The scheduler of sampler `name` for a model whose current scheduler is `scheduler`.

    - `"paper"`: [`DDPMPaperScheduler`] with the paper's choices ([`DDPMPaperPipeline.paper_scheduler`]);
    - `"ddpm"`, `"ddim"`, `"dpmsolver++"`, `"euler"`: diffusers' scheduler of that name from `scheduler`'s config
      (the keys it accepts), DPM-Solver++ as `algorithm_type="dpmsolver++"`.

    `variance_type` (`"fixed_large"` or `"fixed_small"`) overrides the variance of `"paper"` and `"ddpm"`; the other
    samplers have none, and giving one raises a `ValueError`.
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {name!r}.")
    if variance_type is not None and variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCE_TYPES)}; got {variance_type!r}.")
    if variance_type is not None and name not in ("paper", "ddpm"):
        raise ValueError(f"variance applies to the paper and ddpm samplers, not to {name}; leave it out.")
    if name == "paper":
        paper = DDPMPaperPipeline.paper_scheduler(scheduler)
        return paper if variance_type is None else type(paper).from_config(paper.config, variance_type=variance_type)
    scheduler_class, settings = _DIFFUSERS_SCHEDULERS[name]
    accepted = inspect.signature(scheduler_class.__init__).parameters
    config = {key: value for key, value in scheduler.config.items() if key in accepted}
    if variance_type is not None:
        settings = {**settings, "variance_type": variance_type}
    return scheduler_class(**{**config, **settings})
