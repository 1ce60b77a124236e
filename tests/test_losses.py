"""The segmentation losses against closed forms computed by hand (numpy / math, not the functions under test) on
hand-made tensors, mmseg's defaults, the ignore index, and one-line errors for bad input."""

import math

import numpy as np
import pytest
import torch

from hf_swin_ddpm.swin_fpn.loss_swin_fpn import (
    cross_entropy_loss,
    dice_loss,
    focal_loss,
    lovasz_loss,
    median_frequency_class_weight,
    normalize_loss_types,
    parse_class_weight,
    parse_loss,
    segmentation_loss,
)

IGNORE = 255
# 2 classes, one image of 1 x 3 pixels; softmax probabilities of class 0: 0.75, 0.5, 0.2 (logit differences ln 3,
# 0, ln 0.25); the third pixel is ignored.
P0 = np.array([0.75, 0.5, 0.2])


def _two_class_logits(p0=P0) -> torch.Tensor:
    logits = np.stack([np.log(p0), np.log(1 - p0)])  # (C, W): softmax over C gives p0, 1 - p0
    return torch.tensor(logits, dtype=torch.float64).view(1, 2, 1, -1).float()


LABELS = torch.tensor([[[0, 1, IGNORE]]])


def test_cross_entropy_closed_form_and_class_weight():
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert cross_entropy_loss(_two_class_logits(), LABELS).item() == pytest.approx(expected, rel=1e-6)
    # mmseg's avg_non_ignore=True: the weighted sum over the valid pixels divided by their count (2), not by the
    # sum of their weights (1 + 3) as F.cross_entropy(weight=...) does
    weighted = (1.0 * -math.log(0.75) + 3.0 * -math.log(0.5)) / 2
    assert cross_entropy_loss(_two_class_logits(), LABELS, class_weight=[1.0, 3.0]).item() == pytest.approx(
        weighted, rel=1e-6
    )


def test_dice_closed_form_mmseg_defaults():
    # valid pixels 0 and 1; class 0: p = (0.75, 0.5), t = (1, 0); class 1: p = (0.25, 0.5), t = (0, 1)
    dice0 = 1 - (2 * 0.75 + 1) / ((0.75**2 + 0.5**2 + 1) + 1)
    dice1 = 1 - (2 * 0.5 + 1) / ((0.25**2 + 0.5**2 + 1) + 1)
    assert dice_loss(_two_class_logits(), LABELS).item() == pytest.approx((dice0 + dice1) / 2, rel=1e-6)
    weighted = (2 * dice0 + 0.5 * dice1) / 2
    assert dice_loss(_two_class_logits(), LABELS, class_weight=[2, 0.5]).item() == pytest.approx(weighted, rel=1e-6)
    exponent1 = 1 - (2 * 0.75 + 1) / ((0.75 + 0.5 + 1) + 1)
    exponent1 += 1 - (2 * 0.5 + 1) / ((0.25 + 0.5 + 1) + 1)
    assert dice_loss(_two_class_logits(), LABELS, exponent=1).item() == pytest.approx(exponent1 / 2, rel=1e-6)


def test_focal_closed_form_mmseg_defaults():
    # one sigmoid per class on the raw logits x: p = sigmoid(x); term = bce * (alpha t + (1-alpha)(1-t)) |t - p|^2
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 1.5]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    terms = []
    for x, t in [(2.0, 1), (-1.0, 0), (0.5, 0), (1.5, 1)]:  # (pixel 0 class 0, pixel 1 class 0, ...)
        p = 1 / (1 + math.exp(-x))
        bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
        terms.append(bce * 0.5 * abs(t - p) ** 2)
    assert focal_loss(logits, labels).item() == pytest.approx(sum(terms) / 4, rel=1e-6)


def _lovasz_by_definition(errors: np.ndarray, foreground: np.ndarray) -> float:
    """The Lovasz extension of the Jaccard loss J(M) = |M| / |fg u M| over the mispredicted set M, summed along the
    permutation that sorts the errors decreasingly (Berman et al. 2018, Eq. 8-9)."""
    order = np.argsort(-errors, kind="stable")

    def jaccard(members):
        members = set(members)
        return len(members) / len(set(np.flatnonzero(foreground)) | members) if members else 0.0

    return sum(errors[order[i]] * (jaccard(order[: i + 1]) - jaccard(order[:i])) for i in range(len(order)))


def test_lovasz_matches_the_definition():
    p0 = np.array([0.9, 0.6, 0.3, 0.2, 0.7])
    labels = torch.tensor([[[0, 1, 0, 1, IGNORE]]])
    valid_p0, valid_labels = p0[:4], np.array([0, 1, 0, 1])
    per_class = []
    for c, probs in ((0, valid_p0), (1, 1 - valid_p0)):
        fg = (valid_labels == c).astype(float)
        per_class.append(_lovasz_by_definition(np.abs(fg - probs), fg))
    expected = np.mean(per_class)
    assert lovasz_loss(_two_class_logits(p0), labels).item() == pytest.approx(expected, rel=1e-5)
    # classes='present': a class without pixels is left out of the mean
    only_zero = torch.tensor([[[0, 0, 0, 0, IGNORE]]])
    fg = np.ones(4)
    expected = _lovasz_by_definition(np.abs(fg - valid_p0), fg)
    assert lovasz_loss(_two_class_logits(p0), only_zero).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", [cross_entropy_loss, dice_loss, focal_loss, lovasz_loss])
def test_ignored_pixels_do_not_leak(loss):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=generator)
    labels = torch.randint(0, 4, (2, 5, 6), generator=generator)
    labels[:, :2] = IGNORE
    changed = logits.clone()
    changed[:, :, :2] = 100 * torch.randn(2, 4, 2, 6, generator=generator)
    changed.requires_grad_(True)
    value = loss(changed, labels, ignore_index=IGNORE)
    assert value.item() == pytest.approx(loss(logits, labels, ignore_index=IGNORE).item(), rel=1e-6)
    value.backward()
    assert changed.grad[:, :, :2].abs().max().item() == 0.0
    assert changed.grad[:, :, 2:].abs().max().item() > 0.0
    # dropping the ignored rows gives the same loss: the ignored pixels count nowhere, not even in a mean's count
    assert loss(logits[:, :, 2:], labels[:, 2:], ignore_index=IGNORE).item() == pytest.approx(value.item(), rel=1e-6)


def test_weighted_sum_and_parser():
    logits, labels = _two_class_logits(), LABELS
    spec = parse_loss("ce:1.0,dice:0.5")
    assert spec == [{"type": "CrossEntropyLoss", "loss_weight": 1.0}, {"type": "DiceLoss", "loss_weight": 0.5}]
    expected = cross_entropy_loss(logits, labels).item() + 0.5 * dice_loss(logits, labels).item()
    assert segmentation_loss(logits, labels, spec).item() == pytest.approx(expected, rel=1e-6)
    assert segmentation_loss(logits, labels, "ce:1.0,dice:0.5").item() == pytest.approx(expected, rel=1e-6)
    assert parse_loss("focal") == [{"type": "FocalLoss", "loss_weight": 1.0}]
    assert normalize_loss_types([{"type": "DiceLoss"}]) == [
        {"type": "DiceLoss", "smooth": 1.0, "exponent": 2.0, "loss_weight": 1.0}
    ]
    assert normalize_loss_types("focal")[0] | {} == {
        "type": "FocalLoss",
        "gamma": 2.0,
        "alpha": 0.5,
        "loss_weight": 1.0,
    }
    assert parse_class_weight("1,2.5, 0", 3) == [1.0, 2.5, 0.0]
    assert parse_class_weight("AUTO", 3) == "auto"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_loss("ce:1.0,dicee:0.5"), "--loss: unknown loss 'dicee'"),
        (lambda: parse_loss("ce:-1"), "--loss: the weight of 'ce' must be a finite number >= 0"),
        (lambda: parse_loss("ce:abc"), "--loss: the weight of 'ce' must be a number"),
        (lambda: parse_loss("ce,ce:2"), "--loss: loss 'ce' is given twice"),
        (lambda: parse_class_weight("1,2", 3), "--class_weight: expected 3 weights (one per class), got 2"),
        (lambda: parse_class_weight("1,-2,1", 3), "--class_weight: every class weight must be a finite number >= 0"),
        (lambda: parse_class_weight("", 3), "--class_weight: expected 'auto' or one weight per class"),
        (lambda: normalize_loss_types([{"type": "Dice"}]), "loss_types: each entry needs a 'type'"),
        (lambda: normalize_loss_types([{"type": "DiceLoss", "gamma": 2}]), "loss_types: DiceLoss takes"),
        (
            lambda: cross_entropy_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 255, [1, 2]),
            "class_weight: expected one weight per class (3), got 2",
        ),
    ],
)
def test_bad_input_one_line_errors(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_median_frequency_balancing_by_hand():
    # image 1: 6 pixels of class 0, 2 of class 1; image 2: 3 of class 0, 1 of class 2, 4 ignored
    first = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    second = np.array([[0, 0, 0, 2], [IGNORE] * 4])
    weights, counts = median_frequency_class_weight([first, second], num_labels=4, ignore_index=IGNORE)
    assert counts == [9, 2, 1, 0]
    # f_0 = 9 / (8 + 4), f_1 = 2 / 8, f_2 = 1 / 4: median 0.25; class 3 never appears: weight 1
    assert weights == pytest.approx([0.25 / 0.75, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="label values must be in"):
        median_frequency_class_weight([np.array([[5]])], num_labels=4)


def test_config_loss_types_is_checked_and_saved(tmp_path):
    from factories import TINY_SWIN_FPN

    from hf_swin_ddpm.swin_fpn import SwinFPNConfig

    config = SwinFPNConfig(**TINY_SWIN_FPN, loss_types="ce:1.0,dice:0.5")
    config.save_pretrained(tmp_path)
    reloaded = SwinFPNConfig.from_pretrained(tmp_path)
    assert (
        reloaded.loss_types == normalize_loss_types(parse_loss("ce:1.0,dice:0.5"))
        and reloaded.loss_types[1]["smooth"] == 1.0
    )
    assert SwinFPNConfig(**TINY_SWIN_FPN).loss_types is None
    with pytest.raises(ValueError, match=r"^SwinFPNConfig.loss_types.class_weight: expected 3 weights"):
        SwinFPNConfig(**TINY_SWIN_FPN, loss_types=[{"type": "CrossEntropyLoss", "class_weight": [1, 2]}])


def test_loss_types_from_flags():
    from hf_swin_ddpm.swin_fpn.loss_swin_fpn import loss_types_from_flags

    assert loss_types_from_flags(None, None, 3) is None
    logged = []
    maps = [np.array([[0, 0, 0, 1]]), np.array([[0, 2, IGNORE, IGNORE]])]
    entries = loss_types_from_flags("ce:1,dice:0.5", "auto", 3, maps, IGNORE, log=logged.append)
    # f_0 = 4 / 6, f_1 = 1 / 4, f_2 = 1 / 2: median 0.5
    assert [entry["class_weight"] for entry in entries] == [pytest.approx([0.75, 2.0, 1.0])] * 2
    assert "median frequency" in logged[0]
    assert loss_types_from_flags(None, "1,2,3", 3)[0] == {
        "type": "CrossEntropyLoss",
        "loss_weight": 1.0,
        "class_weight": [1.0, 2.0, 3.0],
    }
    with pytest.raises(ValueError, match=r"^--class_weight: expected 3 weights"):
        loss_types_from_flags("dice", "1,2", 3)
