"""Image processor for SwinFPN: resize, rescale, ImageNet normalisation; label maps with the same geometry."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType


class SwinFPNImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`, *optional*, defaults to `self.do_reduce_labels`):
        Subtract 1 from every label and map 0 (background) to 255, the ignore index, for datasets such as ADE20K
        whose class 0 is "other".
    test_scale (`list[int]`, *optional*, defaults to `self.test_scale`):
        The keep-ratio resize scale (long side, short side) the model is tested at, mmseg's test `Resize(scale,
        keep_ratio=True)`: recorded at training time (the training pipeline's base scale, e.g. (2048, 512) for 512
        crops); `evaluate-seg` resizes to it by default. Not used by `preprocess`, which resizes to `size`.
    """

    do_reduce_labels: bool
    test_scale: list[int] | None


class SwinFPNImageProcessor(PilBackend):
    """Prepares images (and optionally label maps) for [`SwinFPNForSegmentation`].

    Images are resized (bilinear) to `size`, rescaled by 1/255 and normalised with the ImageNet mean and std that the
    pretrained Swin backbones expect. Label maps take the same resize with nearest-neighbour sampling and come back as
    int64 `labels`. `post_process_semantic_segmentation` turns logits into class maps at any size, as
    `pipeline("image-segmentation")` needs.

    Backend: PIL only. transformers 5 asks new models for a torchvision-backed ("fast") processor as well, but its
    backend machinery knows only two backends, `"pil"` (`PilBackend`) and `"torchvision"` (`TorchvisionBackend`,
    which is declared `@requires(backends=("torch", "torchvision"))` and computes with
    `torchvision.transforms.v2.functional`): there is no torch-only backend to register. torchvision does not load
    beside this project's CPU torch build, so no fast class is registered and `AutoImageProcessor` resolves to this
    one (with `use_fast=True` transformers logs "Requested torchvision backend is not available. Falling back to pil
    backend."). transformers' `test_new_models_require_torchvision_backend` therefore fails
    for it, deliberately; every other `ImageProcessingTestMixin` check passes.
    """

    valid_kwargs = SwinFPNImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    default_to_square = True
    crop_size = None
    do_resize = True
    do_center_crop = None
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_reduce_labels = False
    test_scale = None
    rescale_factor = 1 / 255

    def __init__(self, **kwargs: Unpack[SwinFPNImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        """The processor's settings without `auto_map` and `image_processor_type`: `config.json` names the class for
        remote code (`SwinFPNConfig.to_dict` says why), and `AutoImageProcessor` only reads it there when
        `preprocessor_config.json` names none. With the package imported, `AutoImageProcessor` finds this class from
        the registered `SwinFPNConfig`."""
        output = super().to_dict()
        output.pop("auto_map", None)
        output.pop("image_processor_type", None)
        return output

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        **kwargs: Unpack[SwinFPNImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        segmentation_maps (`ImageInput`, *optional*): label maps (class ids) to transform with the images.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None,
        do_convert_rgb: bool,
        input_data_format: ChannelDimension,
        return_tensors: str | TensorType | None,
        **kwargs,
    ) -> BatchFeature:
        images = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format
        )
        data = {"pixel_values": self._preprocess(images, **{**kwargs, "do_reduce_labels": False})}
        if segmentation_maps is not None:
            maps = self._prepare_image_like_inputs(
                images=segmentation_maps,
                expected_ndims=2,
                do_convert_rgb=False,
                input_data_format=ChannelDimension.FIRST,
            )
            label_kwargs = {
                **kwargs,
                "do_normalize": False,
                "do_rescale": False,
                "resample": PILImageResampling.NEAREST,
            }
            data["labels"] = [label.squeeze(0).astype(np.int64) for label in self._preprocess(maps, **label_kwargs)]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def reduce_label(label: np.ndarray) -> np.ndarray:
        """Map 0 to the ignore index 255 and every other class c to c - 1."""
        label = label.astype(np.int64)
        return np.where(label == 0, 255, label - 1)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_reduce_labels: bool,
        resample: PILImageResampling | None,
        do_resize: bool,
        do_rescale: bool,
        do_normalize: bool,
        size: SizeDict,
        rescale_factor: float,
        image_mean: float | list[float],
        image_std: float | list[float],
        **kwargs,
    ) -> list[np.ndarray]:
        processed = []
        for image in images:
            if do_reduce_labels:
                image = self.reduce_label(image).astype(np.uint8)
            if do_resize:
                image = self.resize(image, size, resample)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image)
        return processed

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None, return_segmentation_scores: bool = False
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Class maps (height, width) from `outputs.logits`, bilinearly resized to each `target_sizes[i]` if given.

        With `return_segmentation_scores=True` each item also carries the resized logits as `segmentation_scores`.
        """
        logits = outputs.logits
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(
                f"target_sizes: expected one (height, width) per image ({len(logits)}), got {len(target_sizes)}."
            )
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        results = []
        for index in range(len(logits)):
            scores = logits[index]
            if target_sizes is not None:
                size = tuple(int(s) for s in target_sizes[index])
                scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
            results.append(
                SemanticSegmentationPostProcessorOutput(
                    data={"segmentation": scores.argmax(dim=0), "segmentation_scores": scores}
                )
            )
        if not return_segmentation_scores:
            return [item.segmentation for item in results]
        return results


__all__ = ["SwinFPNImageProcessor"]
