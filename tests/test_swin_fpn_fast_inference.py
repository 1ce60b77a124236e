"""SwinFPN's two paths against transformers' `SwinBackbone`: inference (oneDNN linears with the bias, GELU and
residual add fused, packed weights, cached window layouts and attention bias) and training (plain ops, gradients);
the caches follow weight changes."""

from __future__ import annotations

import pytest
import torch
from transformers import SwinBackbone, SwinConfig

from hf_swin_ddpm import SwinFPNConfig, SwinFPNForSegmentation
from hf_swin_ddpm.swin_fpn import modeling_swin_fpn
from hf_swin_ddpm.swin_fpn.convert_swin_fpn import convert_swin_backbone_state_dict, swin_geometry
from hf_swin_ddpm.swin_fpn.cpu_kernels_swin_fpn import ONEDNN_LINEAR

GEOMETRIES = {
    "window7-patch4": dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7, patch_size=4),
    "window4-patch2": dict(embed_dim=12, depths=[1, 3, 2, 2], num_heads=[2, 3, 4, 6], window_size=4, patch_size=2),
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def pair(geometry: dict, seed: int = 0) -> tuple[SwinBackbone, SwinFPNForSegmentation]:
    """transformers' SwinBackbone with random weights of a realistic scale and our model with the same weights;
    no dropout or stochastic depth on either side, so that training mode is deterministic."""
    torch.manual_seed(seed)
    reference = SwinBackbone(SwinConfig(**geometry, out_features=STAGES, drop_path_rate=0.0))
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.normal_(0.0, 0.1)
    config = SwinFPNConfig(**swin_geometry(reference.config), num_labels=3, drop_path_rate=0.0)
    ours = SwinFPNForSegmentation(config)
    ours.backbone.load_state_dict(convert_swin_backbone_state_dict(reference.state_dict()))
    return reference, ours


def assert_maps_close(actual, expected, atol: float = 1e-4) -> None:
    assert len(actual) == len(expected) == 4
    for stage, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, stage
        assert (a - e).abs().max().item() < atol, stage


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("size", [(56, 56), (45, 38)])
def test_inference_runs_fused_linears_and_matches_transformers(geometry, size):
    reference, ours = pair(geometry)
    reference.eval(), ours.eval()
    pixel_values = torch.randn(3, 3, *size)
    with torch.inference_mode():
        expected = reference(pixel_values).feature_maps
        first, second = ours.backbone(pixel_values), ours.backbone(pixel_values)  # building, then reading the caches
    assert_maps_close(first, expected)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    linears = [m for m in ours.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert all(linear in ONEDNN_LINEAR.packed_weights for linear in linears if linear.bias is not None)


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_training_gradients_match_transformers(geometry):
    """Train mode: the same feature maps and the same gradients for the input and every parameter (q/k/v's fused),
    also after an inference call has filled the caches (their tensors must not block the backward pass)."""
    reference, ours = pair(geometry)
    pixel_values = torch.randn(2, 3, 45, 38)  # padding at every stage
    with torch.inference_mode():
        ours.eval().backbone(pixel_values)
    reference.train(), ours.train()
    weights = [torch.randn(m.shape[1:]) for m in ours.backbone(pixel_values)]
    gradients = {}
    for name, forward in (("reference", lambda x: reference(x).feature_maps), ("ours", ours.backbone)):
        inputs = pixel_values.clone().requires_grad_(True)
        maps = forward(inputs)
        sum((m * w).sum() for m, w in zip(maps, weights)).backward()
        gradients[name] = (maps, inputs.grad)
    assert_maps_close(gradients["ours"][0], gradients["reference"][0])
    torch.testing.assert_close(gradients["ours"][1], gradients["reference"][1], rtol=1e-4, atol=1e-5)
    expected = convert_swin_backbone_state_dict(
        {name: p.grad for name, p in reference.named_parameters() if p.grad is not None}
    )
    ours_grads = {name: p.grad for name, p in ours.backbone.named_parameters()}
    assert set(expected) == set(ours_grads)
    for name, grad in expected.items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_inference_caches_follow_weight_changes():
    """After inference calls fill the caches, an optimizer step and a `load_state_dict` change the weights in
    place; the next inference call uses the new weights (a fresh model with them gives the same maps)."""
    _, ours = pair(GEOMETRIES["window7-patch4"])
    pixel_values = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        before = ours.eval().backbone(pixel_values)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.5)
    ours.train().backbone(pixel_values)[-1].square().sum().backward()
    optimizer.step()
    fresh = SwinFPNForSegmentation(ours.config).eval()
    fresh.load_state_dict(ours.state_dict())
    with torch.no_grad():
        after, expected = ours.eval().backbone(pixel_values), fresh.backbone(pixel_values)
    assert (after[-1] - before[-1]).abs().max().item() > 1e-2
    for a, e in zip(after, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-6)
    other, _ = pair(GEOMETRIES["window7-patch4"], seed=1)
    ours.backbone.load_state_dict(convert_swin_backbone_state_dict(other.state_dict()))
    with torch.no_grad():
        assert_maps_close(ours.backbone(pixel_values), other.eval()(pixel_values).feature_maps)


def test_bias_above_the_cache_cap_is_repeated_per_call(monkeypatch):
    """A shifted block's bias for a whole batch is cached only under `BIAS_CACHE_BYTES`; above it the per-image
    bias is repeated on every call, with identical results."""
    _, ours = pair(GEOMETRIES["window4-patch2"])
    pixel_values = torch.randn(3, 3, 40, 36)
    with torch.no_grad():
        cached = ours.eval().backbone(pixel_values)
    monkeypatch.setattr(modeling_swin_fpn, "BIAS_CACHE_BYTES", 0)
    _, uncapped = pair(GEOMETRIES["window4-patch2"])
    with torch.no_grad():
        repeated = uncapped.eval().backbone(pixel_values), uncapped.backbone(pixel_values)
    for a, b, c in zip(cached, *repeated):
        assert torch.equal(a, b) and torch.equal(b, c)
    shifted = [model.backbone.stages[1].blocks[1].attn for model in (ours, uncapped)]
    assert [key[2] for key in shifted[0]._bias_cache] == [3]  # the batch's bias, cached
    assert [key[2] for key in shifted[1]._bias_cache] == [1]  # one image's, repeated per call


def test_caches_keep_a_few_sizes_and_rebuild_evicted_ones():
    """Nine input sizes: each stage keeps at most eight window layouts (each block as many biases); the evicted
    first size is rebuilt and still matches transformers."""
    reference, ours = pair(GEOMETRIES["window4-patch2"])
    reference.eval(), ours.eval()
    sizes = [(16 + 4 * i, 20) for i in range(9)]
    with torch.no_grad():
        for size in sizes:
            ours.backbone(torch.randn(1, 3, *size))
        assert len(ours.backbone.stages[0]._layouts) == 8
        assert all(len(stage._layouts) <= 8 for stage in ours.backbone.stages)
        assert len(ours.backbone.stages[1].blocks[1].attn._bias_cache) == 8
        pixel_values = torch.randn(2, 3, *sizes[0])
        assert_maps_close(ours.backbone(pixel_values), reference(pixel_values).feature_maps)


def test_a_torch_whose_onednn_op_refuses_the_call_falls_back_to_the_plain_ops(monkeypatch):
    reference, ours = pair(GEOMETRIES["window4-patch2"])
    reference.eval(), ours.eval()
    pixel_values = torch.randn(2, 3, 40, 40)
    calls = []

    def refusing(*args, **kwargs):
        calls.append(len(args))
        raise RuntimeError("mkldnn::_linear_pointwise: unexpected arguments")

    monkeypatch.setattr(ONEDNN_LINEAR, "op", refusing)
    with torch.inference_mode():
        expected, actual = reference(pixel_values).feature_maps, ours.backbone(pixel_values)
    assert calls == [calls[0]] and ONEDNN_LINEAR.op is None  # tried once, then never again
    assert_maps_close(actual, expected)
