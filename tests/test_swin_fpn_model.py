"""SwinFPNForSegmentation: parity with transformers' Swin, Auto classes, save/load, gradients, errors."""

from __future__ import annotations

import re

import pytest
import torch
from factories import TINY_SWIN_FPN
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSemanticSegmentation,
    SwinBackbone,
    SwinConfig,
)

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.swin_fpn.convert_swin_fpn import convert_swin_backbone_state_dict, swin_geometry

GEOMETRIES = {
    "window7-patch4": dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, patch_size=4),
    "window4-patch2": dict(embed_dim=12, depths=[1, 3, 2, 2], num_heads=[2, 3, 4, 6], window_size=4, patch_size=2),
}
INPUT_SIZES = [(56, 56), (61, 77), (17, 9), (3, 5), (1, 1)]


def tiny_config(**overrides) -> SwinFPNConfig:
    """`factories.TINY_SWIN_FPN` with two blocks per stage, so that every stage has a shifted-window block."""
    return SwinFPNConfig(**{**TINY_SWIN_FPN, "depths": [2, 2, 2, 2], **overrides})


def reference_and_ours(geometry: dict, seed: int = 0) -> tuple[SwinBackbone, SwinFPNForSegmentation]:
    torch.manual_seed(seed)
    swin_config = SwinConfig(**geometry, out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    reference = SwinBackbone(swin_config).eval()
    with torch.no_grad():  # random weights of a realistic scale, so that every path contributes
        for parameter in reference.parameters():
            parameter.normal_(0.0, 0.1)
    ours = SwinFPNForSegmentation(SwinFPNConfig(**swin_geometry(swin_config), num_labels=3)).eval()
    ours.backbone.load_state_dict(convert_swin_backbone_state_dict(reference.state_dict()))
    return reference, ours


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_backbone_matches_transformers_swin_backbone(geometry):
    reference, ours = reference_and_ours(geometry)
    for height, width in INPUT_SIZES:
        pixel_values = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = reference(pixel_values).feature_maps
            actual = ours.backbone(pixel_values)
        assert len(actual) == 4
        for stage, (e, a) in enumerate(zip(expected, actual)):
            assert a.shape == e.shape, (height, width, stage)
            assert (a - e).abs().max().item() < 1e-4, (height, width, stage)


def test_backbone_parity_would_catch_a_wrong_shift_mask():
    """The parity check is sensitive: dropping the SW-MSA mask changes the outputs well beyond the tolerance."""
    reference, ours = reference_and_ours(GEOMETRIES["window4-patch2"])
    pixel_values = torch.randn(1, 3, 40, 40)
    from hf_swin_ddpm.swin_fpn import modeling_swin_fpn

    original = modeling_swin_fpn.WindowLayout._shift_mask
    modeling_swin_fpn.WindowLayout._shift_mask = lambda self, device: None
    try:
        with torch.no_grad():
            changed = ours.backbone(pixel_values)
    finally:
        modeling_swin_fpn.WindowLayout._shift_mask = original
    with torch.no_grad():
        expected = reference(pixel_values).feature_maps
    assert (changed[-1] - expected[-1]).abs().max().item() > 1e-3


def test_backbone_returns_four_nchw_maps_at_the_stage_strides():
    model = SwinFPNForSegmentation(tiny_config(patch_size=4)).eval()
    maps = model.backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 128, 2, 3),
    ]


@pytest.mark.parametrize("size", [(64, 64), (37, 53), (1, 1), (5, 130)])
def test_logits_have_the_input_size(size):
    model = SwinFPNForSegmentation(tiny_config()).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, *size))
    assert output.logits.shape == (2, 3, *size)
    assert torch.isfinite(output.logits).all()


def test_auto_classes_build_the_model_from_auto_config():
    config = AutoConfig.for_model("swin_fpn", embed_dim=16, num_heads=[1, 2, 2, 4], num_labels=5)
    assert isinstance(config, SwinFPNConfig)
    assert config.depths == [2, 2, 6, 2] and config.window_size == 7  # Swin-T geometry by default
    model = AutoModelForSemanticSegmentation.from_config(config)
    assert type(model) is SwinFPNForSegmentation
    assert type(AutoModel.from_config(config)) is SwinFPNForSegmentation
    assert model.decode_head.classifier.out_channels == 5


def test_default_config_is_swin_tiny():
    config = SwinFPNConfig()
    assert (config.patch_size, config.embed_dim, config.window_size, config.mlp_ratio) == (4, 96, 7, 4.0)
    assert config.depths == [2, 2, 6, 2] and config.num_heads == [3, 6, 12, 24]
    assert config.semantic_loss_ignore_index == 255
    model = SwinFPNForSegmentation(config)
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    # Swin-T is 28.3M with its 1000-class head (769k) and final norm; ours adds 4 stage norms instead.
    assert abs(backbone_params - 27.52e6) < 0.05e6


def test_sdpa_is_default_and_eager_agrees():
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config()).eval()
    assert model.config._attn_implementation == "sdpa"
    pixel_values = torch.randn(2, 3, 45, 50)
    with torch.no_grad():
        sdpa = model(pixel_values).logits
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        eager = model(pixel_values, output_attentions=True)
    assert (sdpa - eager.logits).abs().max().item() < 1e-5
    assert len(eager.attentions) == model.config.num_hidden_layers == len(model.config.depths)  # one per stage
    first = eager.attentions[0]
    # (batch * windows, heads, M^2, M^2), each row a probability distribution
    assert first.shape[1:] == (1, 16, 16)
    torch.testing.assert_close(first.sum(-1), torch.ones_like(first.sum(-1)))


def test_hidden_states_are_the_embedding_and_stage_maps():
    model = SwinFPNForSegmentation(tiny_config()).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, 32, 32), output_hidden_states=True)
        maps = model.backbone(torch.randn(1, 3, 32, 32))
    assert len(output.hidden_states) == 5
    assert [h.shape for h in output.hidden_states[1:]] == [m.shape for m in maps]


def test_loss_is_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[:, :10] = 255
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
    valid = labels != 255
    logits = output.logits.permute(0, 2, 3, 1)[valid]
    expected = torch.nn.functional.cross_entropy(logits, labels[valid])
    torch.testing.assert_close(output.loss, expected)
    as_tuple = model(pixel_values, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[0], output.loss)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config()).train()
    output = model(torch.randn(2, 3, 40, 36), labels=torch.randint(0, 3, (2, 40, 36)))
    output.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config()).train()
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    model(pixel_values, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for stage in model.backbone.stages for block in stage.blocks)
    model(pixel_values, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_save_and_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config(id2label={0: "bg", 1: "a", 2: "b"})).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is SwinFPNForSegmentation
    assert loaded.config.id2label == {0: "bg", 1: "a", 2: "b"}
    pixel_values = torch.randn(1, 3, 50, 41)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)


@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_convolutional_stem_keeps_the_patch_stride_and_width(patch_size):
    """Xiao et al. 2021's stem: log2(patch) stride-2 3x3 convs then a 1x1 conv, at the linear embedding's stride."""
    torch.manual_seed(0)
    config = tiny_config(patch_embedding_type="convolutional", patch_size=patch_size)
    model = SwinFPNForSegmentation(config).eval()
    convs = [m for m in model.backbone.patch_embed.projection if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2] * (patch_size.bit_length() - 1) + [1]
    assert convs[-1].kernel_size == (1, 1) and convs[-1].out_channels == config.embed_dim
    for size in [(64, 64), (37, 50)]:
        with torch.no_grad():
            maps = model.backbone(torch.randn(1, 3, *size))
            logits = model(torch.randn(1, 3, *size)).logits
        assert maps[0].shape[-2:] == tuple(-(-side // patch_size) for side in size)
        assert logits.shape == (1, 3, *size)


def test_convolutional_stem_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config(patch_embedding_type="convolutional")).train()
    model(torch.randn(2, 3, 32, 32), labels=torch.randint(0, 3, (2, 32, 32))).loss.backward()
    for name, parameter in model.backbone.patch_embed.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.patch_embedding_type == "convolutional"
    pixel_values = torch.randn(1, 3, 30, 44)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)


BAD_CONFIGS = [
    (dict(depths=[2, 2], num_heads=[1, 2, 4]), "num_heads"),
    (dict(embed_dim=10, num_heads=[3, 6, 12, 24]), "num_heads"),
    (dict(window_size=0), "window_size"),
    (dict(patch_size=0), "patch_size"),
    (dict(depths=[]), "depths"),
    (dict(depths=[2, 0, 2, 2]), "depths"),
    (dict(mlp_ratio=0), "mlp_ratio"),
    (dict(drop_path_rate=1.5), "drop_path_rate"),
    (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
    (dict(head_hidden_size=128, head_num_groups=30), "head_num_groups"),
    (dict(fpn_hidden_size=0), "fpn_hidden_size"),
    (dict(patch_embedding_type="conv"), "patch_embedding_type"),
    (dict(patch_embedding_type="convolutional", patch_size=3), "patch_size"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_CONFIGS)
def test_invalid_config_raises_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"SwinFPNConfig\.{field}"):
        SwinFPNConfig(**overrides)


@pytest.mark.parametrize(
    ("pixel_values", "message"),
    [
        (torch.randn(3, 32, 32), r"expected shape \(batch, 3, height, width\), got \(3, 32, 32\)"),
        (torch.randn(1, 1, 32, 32), r"expected shape \(batch, 3, height, width\), got \(1, 1, 32, 32\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating-point"),
        (torch.randn(1, 3, 0, 8), "every dimension must be >= 1"),
    ],
)
def test_bad_pixel_values_raise(pixel_values, message):
    model = SwinFPNForSegmentation(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(pixel_values)


def test_labels_of_the_wrong_size_raise():
    model = SwinFPNForSegmentation(tiny_config())
    with pytest.raises(ValueError, match=r"labels: expected shape \(batch, height, width\) = \(1, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32), labels=torch.zeros(1, 16, 16, dtype=torch.long))


def test_backbone_compiles_as_one_graph_and_matches_eager():
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config(depths=[2, 2, 1, 1])).eval()
    pixel_values = torch.randn(1, 3, 45, 38)  # needs padding at every stage
    compiled = torch.compile(model.backbone, fullgraph=True)
    with torch.no_grad():
        expected, actual = model.backbone(pixel_values), compiled(pixel_values)
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_every_hidden_state_and_attention_is_in_the_autograd_graph():
    """What transformers' `retain_grad` check asks of hidden_states[0], for every returned tensor."""
    torch.manual_seed(0)
    model = SwinFPNForSegmentation(tiny_config())
    output = model(torch.randn(2, 3, 32, 32), output_hidden_states=True, output_attentions=True)
    returned = [*output.hidden_states, *output.attentions]
    assert len(returned) == 2 * model.config.num_hidden_layers + 1
    for tensor in returned:
        tensor.retain_grad()
    output.logits.flatten()[0].backward()
    for index, tensor in enumerate(returned):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, index


def test_image_segmentation_pipeline_logs_no_error(tiny_swin_fpn):
    import logging

    import numpy as np
    import PIL.Image
    from transformers import pipeline

    from hf_swin_ddpm import SwinFPNImageProcessor

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("transformers.pipelines.base")
    logger.addHandler(handler)
    try:
        segmenter = pipeline(
            "image-segmentation",
            model=tiny_swin_fpn,
            image_processor=SwinFPNImageProcessor(size={"height": 32, "width": 32}),
        )
        segments = segmenter(PIL.Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)))
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == []
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

    assert MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES["swin_fpn"] == "SwinFPNForSegmentation"
    assert segments and all(segment["mask"].size == (30, 20) for segment in segments)
    # and the check the pipeline makes still refuses models it does not know
    records.clear()
    logger.addHandler(handler)
    try:
        segmenter.model.__class__ = type("UnknownModel", (SwinFPNForSegmentation,), {})
        segmenter.check_model_type({"swin_fpn": "SwinFPNForSegmentation"})
    finally:
        logger.removeHandler(handler)
        segmenter.model.__class__ = SwinFPNForSegmentation
    assert "is not supported for image-segmentation" in records[0].getMessage()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"window_size": 10**6}, "SwinFPNConfig.window_size: expected at most 64, got 1000000"),
        ({"depths": [10**6, 1, 1, 1]}, "SwinFPNConfig.depths: expected at most 128 blocks a stage"),
        ({"depths": [1] * 9, "num_heads": [1] * 9}, "SwinFPNConfig.depths: expected at most 8 stages"),
        ({"num_heads": [1, 2, 2, 512], "embed_dim": 64}, "SwinFPNConfig.num_heads: expected at most 256"),
        ({"embed_dim": 8192}, "SwinFPNConfig.embed_dim: expected at most 4096"),
        (
            {"embed_dim": 4096, "depths": [1] * 6, "num_heads": [1] * 6},
            "a last-stage width embed_dim * 2**(len(depths) - 1) of at",
        ),
        ({"patch_size": 128}, "SwinFPNConfig.patch_size: expected at most 64"),
        ({"mlp_ratio": 1e6}, "SwinFPNConfig.mlp_ratio: expected at most 64"),
        ({"fpn_hidden_size": 10**5}, "SwinFPNConfig.fpn_hidden_size: expected at most 8192"),
        ({"image_size": 10**6}, "SwinFPNConfig.image_size: expected at most 16384"),
    ],
)
def test_config_sizes_are_capped_with_the_field_named(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_config(**overrides)


def test_size_caps_leave_published_models_alone():
    swin_large = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12)
    swin_v2_window24 = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=24)
    for geometry in (swin_large, swin_v2_window24):
        assert SwinFPNConfig(**geometry, image_size=384).window_size == geometry["window_size"]


def test_truncated_weights_name_the_file_and_the_fix(tmp_path, tiny_swin_fpn):
    tiny_swin_fpn.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    for damaged in (data[:5], data[: len(data) // 2]):  # header cut, and body cut
        weights.write_bytes(damaged)
        with pytest.raises(OSError, match=re.escape(f"{weights}: truncated or damaged safetensors file")) as error:
            SwinFPNForSegmentation.from_pretrained(tmp_path)
        assert "Re-download it" in str(error.value) and "save_pretrained" in str(error.value)
    weights.write_bytes(data)
    assert isinstance(SwinFPNForSegmentation.from_pretrained(tmp_path), SwinFPNForSegmentation)
