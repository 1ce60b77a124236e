"""The variational bound of a DDPM in bits/dim averaged over a dataset (Ho et al. 2020, Eq. 5; Table 2's NLL).

One loop for the three places that report it: the held-out bound of ``train_ddpm`` (gathered over processes),
``evaluate-ddpm``'s bits/dim of the reference images and ``rate-distortion``'s curve (Sec. 4.3, Fig. 5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..diffusion import variational_bound
from .loop import evaluation_loop


def mean_bits_per_dim(
    unet,
    scheduler,
    batches: Iterable[torch.Tensor | dict[str, torch.Tensor]],
    *,
    generator: torch.Generator | None = None,
    num_timesteps: int | None = None,
    return_terms: bool = False,
    accelerator=None,
    desc: str | None = None,
    leave: bool = True,
) -> dict[str, Any]:
    """`variational_bound` (bits/dim, Eq. 5) of every image of `batches`, averaged over the images.

    `batches` holds images (B, C, H, W) in [-1, 1], as tensors or as the DDPM collate's ``{"input": ...}``;
    `generator`, `num_timesteps` and `return_terms` pass on to `variational_bound`, once per batch. With an
    `accelerator` the per-image values are gathered over its processes (:func:`~.loop.evaluation_loop`) in float32.

    Returns the bound's per-image values averaged over the images (``total_bpd``, ``prior_bpd``, ...; with
    `return_terms` ``terms_bpd`` and ``mse`` averaged per timestep, plus the ``timesteps`` and ``term_weights`` of
    the terms, which must be the same in every batch), and ``num_images``; an empty dict for no images.
    """
    shared: dict[str, torch.Tensor] = {}

    def measure(batch: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["input"] if isinstance(batch, dict) else batch
        bound = variational_bound(
            unet, scheduler, images, generator=generator, num_timesteps=num_timesteps, return_terms=return_terms
        )
        if return_terms:
            timesteps = bound.pop("timesteps")
            if "timesteps" in shared and not torch.equal(shared["timesteps"], timesteps):
                raise ValueError("the stratified timesteps differ between batches; use num_timesteps=None.")
            shared.update(timesteps=timesteps, term_weights=bound.pop("term_weights"))
        return bound if accelerator is None else {name: value.float() for name, value in bound.items()}

    per_image = evaluation_loop(batches, measure, accelerator=accelerator, desc=desc, leave=leave)
    if not per_image:
        return {}
    means = {name: values.mean(dim=0) for name, values in per_image.items()}
    return {**means, **shared, "num_images": int(per_image["total_bpd"].shape[0])}
