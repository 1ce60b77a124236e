"""Publishing to the Hugging Face Hub: folders that load with or without this package, model cards, uploads.

    from hf_swin_ddpm.hub import push_to_hub, save_for_hub

    save_for_hub(model, "swin-fpn-ade", image_processor=processor, datasets=["scene_parse_150"], mean_iou=0.41)
    push_to_hub(pipeline, "me/ddpm-cifar10", datasets=["cifar10"], bits_per_dim=3.75)

- `cards`: the model card rendered from the templates in `model_cards/`, and the evaluation results written into a
  card's `model-index` (`update_card_results`);
- `remote_code`: the code files a folder ships so that `trust_remote_code=True` loads it where this package is not
  installed;
- `folders`: `save_for_hub` (weights as safetensors, configs, code, an example image, the card) and `load_saved`;
- `upload`: `push_to_hub`, with every failure turned into one `HubPublishError` line that never shows the token;
- `repo_id`: `is_repo_id`, the one test of a Hub repository id.
"""

from .cards import (
    CARD_FIELDS,
    DDPM,
    KINDS,
    MODEL_KINDS,
    SEGMENTATION,
    carry_card_results,
    render_model_card,
    update_card_results,
    update_segmentation_card_results,
    write_model_card,
)
from .folders import load_saved, model_kind, save_for_hub
from .repo_id import is_repo_id
from .upload import HubPublishError, push_to_hub, require_token

__all__ = [
    "CARD_FIELDS",
    "DDPM",
    "KINDS",
    "MODEL_KINDS",
    "SEGMENTATION",
    "HubPublishError",
    "carry_card_results",
    "is_repo_id",
    "load_saved",
    "model_kind",
    "push_to_hub",
    "render_model_card",
    "require_token",
    "save_for_hub",
    "update_card_results",
    "update_segmentation_card_results",
    "write_model_card",
]
