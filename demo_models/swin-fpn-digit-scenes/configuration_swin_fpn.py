"""SwinFPN configuration: a Swin Transformer backbone (Liu et al. 2021, arXiv 2103.14030) with a Semantic FPN head
(Kirillov et al. 2019, Panoptic FPN)."""

import functools
import math

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from .loss_swin_fpn import normalize_loss_types

# Default bound on batch * height * width of one forward: 2**26 pixels is one 8192 x 8192 image or 256 images of
# 512 x 512; Swin-T needs tens of GiB of activations for it. Larger inputs are refused instead of exhausting memory.
DEFAULT_MAX_INPUT_PIXELS = 2**26

PATCH_EMBEDDING_TYPES = ("linear", "convolutional")
# Upper bounds on the geometry, far above published models (Swin-L: embed 192, depths (2, 2, 18, 2), heads up to 48,
# window 12; SwinV2 windows up to 24) but low enough that a mistyped or hostile config.json cannot make the model
# allocate without bound (window_size=10**6 asks for a (2 * 10**6)**2-row bias table).
MAX_GEOMETRY = {
    "window_size": 64,
    "patch_size": 64,
    "embed_dim": 4096,
    "num_stages": 8,
    "depth": 128,
    "num_heads": 256,
    "stage_width": 65536,
    "mlp_ratio": 64,
    "num_channels": 1024,
    "fpn_hidden_size": 8192,
    "head_hidden_size": 8192,
    "upernet_hidden_size": 8192,
    "auxiliary_channels": 8192,
    "image_size": 16384,
}
DECODE_HEAD_TYPES = ("semantic_fpn", "upernet")
# The image processor's remote code, named in config.json's `auto_map` rather than preprocessor_config.json's (see
# `SwinFPNConfig.to_dict`).
IMAGE_PROCESSOR_AUTO_MAP = "image_processing_swin_fpn.SwinFPNImageProcessor"
SWIN_FPN_PRESETS: dict[str, dict] = {
    "swin-tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24)},
    "swin-small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24)},
    "swin-base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32)},
}


def _require(condition: bool, field: str, expected: str, given) -> None:
    if not condition:
        raise ValueError(f"SwinFPNConfig.{field}: expected {expected}, got {given!r}.")


def _check_num_labels_argument(kwargs: dict) -> None:
    """`num_labels` is not a dataclass field (transformers turns it into `id2label`): check its type here."""
    num_labels = kwargs.get("num_labels")
    if num_labels is not None:
        _require(
            isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels >= 1,
            "num_labels",
            "an integer >= 1",
            num_labels,
        )


def _type_name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _field_errors_as_value_errors(cls: type) -> type:
    """Makes the type checks of `@strict` raise a `ValueError` "SwinFPNConfig.<field>: expected <type>, got <value>"
    (huggingface_hub raises its own `StrictDataclassFieldValidationError`, which is not a `ValueError`, so callers
    that report bad input, e.g. the CLI, would show it as a crash)."""
    strict_setattr, strict_init = cls.__setattr__, cls.__init__

    def __setattr__(self, name: str, value) -> None:
        try:
            strict_setattr(self, name, value)
        except StrictDataclassFieldValidationError:
            field = cls.__dataclass_fields__.get(name)
            expected = _type_name(field.type) if field is not None else "a valid value"
            raise ValueError(
                f"{cls.__name__}.{name}: expected {expected}, got {value!r} ({type(value).__name__})."
            ) from None

    @functools.wraps(strict_init)
    def __init__(self, *args, **kwargs) -> None:
        try:
            strict_init(self, *args, **kwargs)
        except StrictDataclassClassValidationError as error:
            raise ValueError(f"{cls.__name__}: {' '.join(str(error).split())}") from None

    cls.__setattr__ = __setattr__
    cls.__init__ = __init__
    return cls


@_field_errors_as_value_errors
@strict
class SwinFPNConfig(PreTrainedConfig):
    r"""
    Configuration of [`SwinFPNForSegmentation`]. The defaults build Swin-T (Table 7 of the Swin paper: patch 4, embed
    dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7, MLP ratio 4) with a Semantic FPN head.

    Args:
        image_size (`int`): the training resolution, used by the image processor. Any input size works at inference.
        patch_size (`int`): side of the non-overlapping patches of the patch embedding (Sec. 3.1).
        patch_embedding_type (`str`): `"linear"`, the paper's patch embedding (a linear projection of each
            `patch_size` patch, as a strided conv), or `"convolutional"`, the convolutional stem of Xiao et al. 2021
            ("Early Convolutions Help Transformers See Better", arXiv 2106.14881): log2(`patch_size`) stride-2 3x3
            convs with GroupNorm and GELU, then a 1x1 conv, to the same stride and width. The stem makes small models
            trained from scratch learn much faster (the `tiny` demo preset uses it); pretrained Swin checkpoints
            have the linear embedding. `"convolutional"` needs `patch_size` to be a power of 2.
        num_channels (`int`): input channels.
        embed_dim (`int`): channels C of stage 1; stage i has C * 2**(i-1).
        depths (`tuple[int]`): Swin blocks per stage; blocks alternate W-MSA and SW-MSA.
        num_heads (`tuple[int]`): attention heads per stage; each stage's width must divide by them.
        window_size (`int`): M, the side of the attention windows (Sec. 3.2); SW-MSA shifts by floor(M / 2).
        mlp_ratio (`float`): hidden width of the block MLP over its input width.
        qkv_bias (`bool`): bias on the query/key/value projection.
        hidden_dropout_prob (`float`): dropout after the embedding, attention output and MLP.
        attention_probs_dropout_prob (`float`): dropout on the attention probabilities.
        drop_path_rate (`float`): stochastic depth, rising linearly over the blocks to this rate.
        hidden_act (`str`): MLP activation.
        layer_norm_eps (`float`): epsilon of the blocks' LayerNorms.
        initializer_range (`float`): std of the truncated-normal initialisation of linear layers.
        fpn_hidden_size (`int`): channels of the FPN levels (256 in Panoptic FPN).
        head_hidden_size (`int`): channels of the Semantic FPN head's upsampling branches (128).
        head_num_groups (`int`): GroupNorm groups of the head (32).
        semantic_loss_ignore_index (`int`): label value the cross-entropy loss ignores.
        backbone_checkpoint (`str`, *optional*): the Swin checkpoint the backbone started from, if any.
        max_input_pixels (`int`, *optional*): the largest batch * height * width that `forward` accepts (default
            2**26); larger inputs raise a `ValueError` instead of exhausting memory. `None` removes the bound.
        decode_head_type (`str`): `"semantic_fpn"` (default: the FPN and Semantic FPN head above) or `"upernet"`,
            UperNet (Xiao et al. 2018), the head of the Swin paper's ADE20K results (Table 3): a pyramid pooling
            module on the last stage, FPN laterals and outputs, and the fusion of all levels, each conv followed by
            BatchNorm and ReLU, as mmsegmentation's `UPerHead` and transformers' `UperNetHead`.
        upernet_hidden_size (`int`): channels of the UperNet head (512).
        pool_scales (`tuple[int]`): output sizes of the pyramid pooling module's average pools (1, 2, 3, 6).
        use_auxiliary_head (`bool`): add the auxiliary FCN head of mmseg's `upernet_swin` configs on stage
            `auxiliary_in_index + 1`; its cross-entropy, weighted by `auxiliary_loss_weight` (0.4), joins the loss.
        auxiliary_channels (`int`): channels of the auxiliary head's convs (256).
        auxiliary_num_convs (`int`): 3x3 conv-BN-ReLU layers of the auxiliary head (1).
        auxiliary_concat_input (`bool`): concatenate the auxiliary head's input with its conv output (False).
        auxiliary_in_index (`int`): the stage (0-based) the auxiliary head reads (2, the third stage).
        loss_types (`list[dict]` or `str`, *optional*): the decode head's losses, named as mmseg's
            `decode_head.loss_decode`: a list of `{"type": "CrossEntropyLoss" | "DiceLoss" | "FocalLoss" |
            "LovaszLoss", "loss_weight": w, "class_weight": [...]}` (plus `smooth`/`exponent` or `gamma`/`alpha`),
            or a string such as `"ce:1.0,dice:0.5"`; their weighted sum is the loss (see `loss_swin_fpn.py`).
            `None` (default): the cross-entropy.

    Every field is checked when the config is built (also from a `config.json`): a value of the wrong type or out of
    range raises a `ValueError` naming the field, what was expected and what was given.
    """

    model_type = "swin_fpn"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    image_size: int = 224
    patch_size: int = 4
    patch_embedding_type: str = "linear"
    num_channels: int = 3
    embed_dim: int = 96
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    num_heads: list[int] | tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float | int = 4.0
    qkv_bias: bool = True
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    drop_path_rate: float | int = 0.1
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    fpn_hidden_size: int = 256
    head_hidden_size: int = 128
    head_num_groups: int = 32
    semantic_loss_ignore_index: int = 255
    backbone_checkpoint: str | None = None
    max_input_pixels: int | None = DEFAULT_MAX_INPUT_PIXELS
    decode_head_type: str = "semantic_fpn"
    upernet_hidden_size: int = 512
    pool_scales: list[int] | tuple[int, ...] = (1, 2, 3, 6)
    use_auxiliary_head: bool = False
    auxiliary_loss_weight: float | int = 0.4
    auxiliary_channels: int = 256
    auxiliary_num_convs: int = 1
    auxiliary_concat_input: bool = False
    auxiliary_in_index: int = 2
    loss_types: list[dict] | str | None = None

    def __post_init__(self, **kwargs):
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        self.pool_scales = list(self.pool_scales)
        self._check_geometry()
        self._check_heads()
        _check_num_labels_argument(kwargs)
        self.num_layers = len(self.depths)
        self.hidden_size = self.stage_channels[-1]
        super().__post_init__(**kwargs)
        _require(
            self.num_labels >= 1, "num_labels", "at least one class (num_labels >= 1, or a non-empty id2label)", 0
        )
        if self.loss_types is not None:
            self.loss_types = normalize_loss_types(self.loss_types, self.num_labels, "SwinFPNConfig.loss_types")

    def to_dict(self) -> dict:
        """transformers' `to_dict`; a config saved with its remote code (`auto_map`) also names the image processor's
        class there, and `SwinFPNImageProcessor.to_dict` leaves `auto_map` and the class name out of
        `preprocessor_config.json`.

        `AutoImageProcessor` reads `config.json`'s `auto_map` when `preprocessor_config.json` names no class, so
        `trust_remote_code=True` still finds the processor where the package is absent. transformers' video-processor
        lookup, which `pipeline()` tries on every model, reads only `preprocessor_config.json`'s: from an
        `AutoImageProcessor` entry there it would guess a `SwinFPNVideoProcessor` as remote code and, knowing no
        local class for it, ask on stdin whether to run it even with this package imported."""
        output = super().to_dict()
        if "auto_map" in output:
            output["auto_map"] = {"AutoImageProcessor": IMAGE_PROCESSOR_AUTO_MAP, **output["auto_map"]}
        return output

    @property
    def stage_channels(self) -> list[int]:
        """Channels of the four (or `len(depths)`) stage outputs: C, 2C, 4C, 8C."""
        return [self.embed_dim * 2**stage for stage in range(len(self.depths))]

    def _check_size_caps(self) -> None:
        """Raise `ValueError` naming the field when the geometry exceeds `MAX_GEOMETRY`."""
        caps = MAX_GEOMETRY
        for name in (
            "window_size",
            "patch_size",
            "embed_dim",
            "num_channels",
            "fpn_hidden_size",
            "head_hidden_size",
            "upernet_hidden_size",
            "auxiliary_channels",
        ):
            _require(getattr(self, name) <= caps[name], name, f"at most {caps[name]}", getattr(self, name))
        _require(self.image_size <= caps["image_size"], "image_size", f"at most {caps['image_size']}", self.image_size)
        _require(self.mlp_ratio <= caps["mlp_ratio"], "mlp_ratio", f"at most {caps['mlp_ratio']}", self.mlp_ratio)
        _require(len(self.depths) <= caps["num_stages"], "depths", f"at most {caps['num_stages']} stages", self.depths)
        _require(max(self.depths) <= caps["depth"], "depths", f"at most {caps['depth']} blocks a stage", self.depths)
        _require(max(self.num_heads) <= caps["num_heads"], "num_heads", f"at most {caps['num_heads']}", self.num_heads)
        _require(
            self.stage_channels[-1] <= caps["stage_width"],
            "embed_dim",
            f"a last-stage width embed_dim * 2**(len(depths) - 1) of at most {caps['stage_width']}",
            self.embed_dim,
        )

    def _check_heads(self) -> None:
        """Raise `ValueError` naming the field when the decode or auxiliary head cannot be built."""
        _require(
            self.decode_head_type in DECODE_HEAD_TYPES,
            "decode_head_type",
            " or ".join(repr(kind) for kind in DECODE_HEAD_TYPES),
            self.decode_head_type,
        )
        for name in ("upernet_hidden_size", "auxiliary_channels"):
            _require(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        _require(
            len(self.pool_scales) >= 1 and all(scale >= 1 for scale in self.pool_scales),
            "pool_scales",
            "one or more pooled sizes >= 1",
            self.pool_scales,
        )
        _require(self.auxiliary_num_convs >= 0, "auxiliary_num_convs", "an integer >= 0", self.auxiliary_num_convs)
        _require(
            0 <= self.auxiliary_loss_weight < math.inf,
            "auxiliary_loss_weight",
            "a finite weight >= 0",
            self.auxiliary_loss_weight,
        )
        _require(
            not self.use_auxiliary_head or 0 <= self.auxiliary_in_index < len(self.depths),
            "auxiliary_in_index",
            f"a stage index in [0, {len(self.depths) - 1}]",
            self.auxiliary_in_index,
        )

    def _check_geometry(self) -> None:
        """Raise `ValueError` naming the field when the Swin or head geometry cannot build a model."""
        for name in ("patch_size", "num_channels", "embed_dim", "window_size", "fpn_hidden_size", "head_hidden_size"):
            _require(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        _require(
            self.patch_embedding_type in PATCH_EMBEDDING_TYPES,
            "patch_embedding_type",
            " or ".join(repr(kind) for kind in PATCH_EMBEDDING_TYPES),
            self.patch_embedding_type,
        )
        if self.patch_embedding_type == "convolutional":
            _require(
                self.patch_size >= 2 and self.patch_size & (self.patch_size - 1) == 0,
                "patch_size",
                "a power of 2 >= 2 with patch_embedding_type='convolutional'",
                self.patch_size,
            )
        _require(len(self.depths) >= 1, "depths", "at least one stage", self.depths)
        _require(
            len(self.depths) == len(self.num_heads),
            "num_heads",
            f"one entry per stage (len(depths) = {len(self.depths)})",
            self.num_heads,
        )
        _require(all(d >= 1 for d in self.depths), "depths", "every stage depth >= 1", self.depths)
        _require(all(h >= 1 for h in self.num_heads), "num_heads", "every head count >= 1", self.num_heads)
        for stage, (channels, heads) in enumerate(zip(self.stage_channels, self.num_heads)):
            _require(
                channels % heads == 0,
                "num_heads",
                f"stage {stage + 1} width {channels} (embed_dim * 2**{stage}) divisible by its head count",
                heads,
            )
        _require(0 < self.mlp_ratio < math.inf, "mlp_ratio", "a finite ratio > 0", self.mlp_ratio)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            _require(0.0 <= getattr(self, name) < 1.0, name, "a probability in [0, 1)", getattr(self, name))
        _require(0 < self.layer_norm_eps < math.inf, "layer_norm_eps", "a finite value > 0", self.layer_norm_eps)
        _require(
            0 <= self.initializer_range < math.inf, "initializer_range", "a finite std >= 0", self.initializer_range
        )
        _require(
            self.hidden_act in ACT2FN,
            "hidden_act",
            "an activation name of transformers.activations.ACT2FN (gelu, relu, silu, ...)",
            self.hidden_act,
        )
        _require(
            self.head_num_groups >= 1 and self.head_hidden_size % self.head_num_groups == 0,
            "head_num_groups",
            f"a divisor of head_hidden_size ({self.head_hidden_size})",
            self.head_num_groups,
        )
        _require(self.image_size >= 1, "image_size", "an integer >= 1", self.image_size)
        self._check_size_caps()
        if self.max_input_pixels is not None:
            _require(self.max_input_pixels >= 1, "max_input_pixels", "None or an integer >= 1", self.max_input_pixels)


__all__ = ["SwinFPNConfig", "SWIN_FPN_PRESETS", "DECODE_HEAD_TYPES"]
