"""SwinFPN: registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from .configuration_swin_fpn import SWIN_FPN_PRESETS, SwinFPNConfig
from .image_processing_swin_fpn import SwinFPNImageProcessor
from .modeling_swin_fpn import SwinFPNBackbone, SwinFPNForSegmentation, SwinFPNPreTrainedModel

AutoConfig.register(SwinFPNConfig.model_type, SwinFPNConfig, exist_ok=True)
AutoModel.register(SwinFPNConfig, SwinFPNForSegmentation, exist_ok=True)
AutoModelForSemanticSegmentation.register(SwinFPNConfig, SwinFPNForSegmentation, exist_ok=True)
AutoImageProcessor.register(SwinFPNConfig, slow_image_processor_class=SwinFPNImageProcessor, exist_ok=True)
# `pipeline("image-segmentation")` checks the model against transformers' tables of model names, not against the
# registered classes (`Pipeline.check_model_type`), and logs an ERROR for any other name: list the model there too.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(SwinFPNConfig.model_type, SwinFPNForSegmentation.__name__)

# `save_pretrained` then copies the defining files and writes `auto_map`, so saved folders load with
# `trust_remote_code=True` where this package is not installed.
SwinFPNConfig.register_for_auto_class()
SwinFPNForSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
SwinFPNImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "SWIN_FPN_PRESETS",
    "SwinFPNBackbone",
    "SwinFPNConfig",
    "SwinFPNForSegmentation",
    "SwinFPNImageProcessor",
    "SwinFPNPreTrainedModel",
]
