"""UperNet head (decode_head_type="upernet") and from_pretrained_upernet: parity with transformers' UperNet + Swin."""

from __future__ import annotations

import pytest
import torch
from factories import TINY_SWIN_FPN
from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation

GEOMETRIES = {
    "window7-patch4-aux": (
        dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, patch_size=4),
        dict(use_auxiliary_head=True, hidden_size=24, auxiliary_channels=12),
    ),
    "window4-patch2-aux-concat": (
        dict(embed_dim=12, depths=[1, 3, 2, 2], num_heads=[2, 3, 4, 6], window_size=4, patch_size=2),
        dict(
            use_auxiliary_head=True,
            hidden_size=16,
            auxiliary_channels=8,
            auxiliary_concat_input=True,
            auxiliary_num_convs=2,
            pool_scales=[1, 2, 4],
        ),
    ),
    "window5-no-aux": (
        dict(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=5, patch_size=4),
        dict(use_auxiliary_head=False, hidden_size=16),
    ),
}
INPUT_SIZES = [(64, 64), (61, 77), (33, 47)]


def random_upernet(swin: dict, head: dict, seed: int = 0) -> UperNetForSemanticSegmentation:
    """A random transformers UperNet + Swin with realistic weights and BatchNorm statistics."""
    torch.manual_seed(seed)
    backbone = SwinConfig(**swin, out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0)
    config = UperNetConfig(backbone_config=backbone, num_labels=5, **head)
    model = UperNetForSemanticSegmentation(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, 0.1) if "weight" in name or "bias" in name or "table" in name else None
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def converted(request, tmp_path_factory, one_thread):
    swin, head = GEOMETRIES[request.param]
    reference = random_upernet(swin, head)
    folder = tmp_path_factory.mktemp(request.param)
    reference.config.id2label = {i: f"class {i}" for i in range(5)}
    reference.config.label2id = {f"class {i}": i for i in range(5)}
    reference.save_pretrained(folder)
    return reference, SwinFPNForSegmentation.from_pretrained_upernet(folder)


@pytest.mark.parametrize("size", INPUT_SIZES)
def test_logits_and_loss_match_transformers(converted, size):
    reference, ours = converted
    assert not ours.training and ours.config.decode_head_type == "upernet"
    torch.manual_seed(1)
    pixel_values = torch.randn(2, 3, *size)
    labels = torch.randint(0, 5, (2, *size))
    labels[:, : size[0] // 5] = 255
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, labels=labels)
        result = ours(pixel_values=pixel_values, labels=labels)
    assert result.logits.shape == expected.logits.shape == (2, 5, *size)
    assert (result.logits - expected.logits).abs().max() < 1e-5
    assert (result.loss - expected.loss).abs() < 1e-5
    with torch.no_grad():  # without labels the auxiliary head is skipped: the same logits
        assert torch.equal(ours(pixel_values=pixel_values).logits, result.logits)


def test_labels_and_heads_are_converted(converted):
    reference, ours = converted
    assert ours.config.id2label == {i: f"class {i}" for i in range(5)}
    assert ours.config.label2id["class 3"] == 3
    assert ours.config.semantic_loss_ignore_index == reference.config.loss_ignore_index
    assert (ours.auxiliary_head is None) == (reference.auxiliary_head is None)
    assert ours.config.use_auxiliary_head == reference.config.use_auxiliary_head
    used = [
        p for name, p in reference.named_parameters() if ".layernorm." not in name
    ]  # SwinModel's unused final norm
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in used)


def test_saved_upernet_segmenter_round_trips(converted, tmp_path):
    _, ours = converted
    ours.save_pretrained(tmp_path)
    reloaded = SwinFPNForSegmentation.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, ours(pixel_values).logits, rtol=0, atol=1e-6)
    theirs = reloaded.state_dict()
    assert all(torch.equal(tensor, theirs[key]) for key, tensor in ours.state_dict().items())


def test_auxiliary_loss_weight_on_the_semantic_fpn_head():
    torch.manual_seed(0)
    config = SwinFPNConfig(**TINY_SWIN_FPN, use_auxiliary_head=True, auxiliary_channels=8)
    model = SwinFPNForSegmentation(config).eval()
    pixel_values, labels = torch.randn(1, 3, 32, 32), torch.randint(0, 3, (1, 32, 32))
    with torch.no_grad():
        loss = model(pixel_values, labels=labels).loss
        main = torch.nn.functional.cross_entropy(model(pixel_values).logits, labels)
        features = model.backbone(pixel_values)
        auxiliary = torch.nn.functional.interpolate(
            model.auxiliary_head(features), size=(32, 32), mode="bilinear", align_corners=False
        )
        expected = main + 0.4 * torch.nn.functional.cross_entropy(auxiliary, labels)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"decode_head_type": "segformer"}, "decode_head_type"),
        ({"pool_scales": []}, "pool_scales"),
        ({"auxiliary_in_index": 4, "use_auxiliary_head": True}, "auxiliary_in_index"),
        ({"auxiliary_loss_weight": -1.0}, "auxiliary_loss_weight"),
    ],
)
def test_bad_head_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=f"SwinFPNConfig.{message}"):
        SwinFPNConfig(**TINY_SWIN_FPN, **kwargs)


def test_conversion_refuses_other_backbones_and_shape_overrides(tmp_path, converted):
    from transformers import ResNetConfig

    UperNetForSemanticSegmentation(
        UperNetConfig(
            backbone_config=ResNetConfig(
                embedding_size=8,
                hidden_sizes=[8, 8, 8, 8],
                depths=[1, 1, 1, 1],
                out_features=["stage1", "stage2", "stage3", "stage4"],
            ),
            hidden_size=8,
            num_labels=2,
        )
    ).save_pretrained(tmp_path / "resnet")
    with pytest.raises(ValueError, match="'resnet' backbone"):
        SwinFPNForSegmentation.from_pretrained_upernet(tmp_path / "resnet")
    reference, _ = converted
    reference.save_pretrained(tmp_path / "swin")
    with pytest.raises(ValueError, match="fixed by the checkpoint"):
        SwinFPNForSegmentation.from_pretrained_upernet(tmp_path / "swin", num_labels=3)
