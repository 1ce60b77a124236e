"""Segmentation losses with mmsegmentation's names and defaults (`mmseg/models/losses/`): `CrossEntropyLoss` (with an
optional `class_weight`), `DiceLoss`, `FocalLoss` and `LovaszLoss`, combined as a weighted sum (mmseg's
`decode_head.loss_decode` list), plus median frequency balancing for the class weights.

Every loss takes logits (batch, classes, height, width) and integer labels (batch, height, width); pixels labelled
`ignore_index` contribute nothing, neither to a numerator nor to a denominator nor to a mean's count. Where mmseg's
code lets ignored pixels in (its Dice denominator sums the ignored pixels' probabilities; its focal and default
cross-entropy means divide by all pixels), these losses differ from it, as noted per loss.

This file is copied beside the model as remote code: it imports nothing from the package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

# short name (the CLI's `--loss ce:1.0,dice:0.5`) -> mmseg's type name
LOSS_TYPES = {"ce": "CrossEntropyLoss", "dice": "DiceLoss", "focal": "FocalLoss", "lovasz": "LovaszLoss"}
_SHORT_NAMES = {long: short for short, long in LOSS_TYPES.items()}
# mmseg's defaults: DiceLoss(smooth=1, exponent=2), FocalLoss(gamma=2.0, alpha=0.5)
LOSS_DEFAULTS = {
    "CrossEntropyLoss": {},
    "DiceLoss": {"smooth": 1.0, "exponent": 2.0},
    "FocalLoss": {"gamma": 2.0, "alpha": 0.5},
    "LovaszLoss": {},
}


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, class_weight) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"labels: expected shape (batch, height, width) = {(logits.shape[0], *logits.shape[2:])} matching the "
            f"logits {tuple(logits.shape)}, got {tuple(labels.shape)}; upsample the logits to the label size first."
        )
    if class_weight is not None and len(class_weight) != logits.shape[1]:
        raise ValueError(
            f"class_weight: expected one weight per class ({logits.shape[1]}), got {len(class_weight)}; give "
            "num_labels weights or 'auto'."
        )
    return logits.float(), labels.long()


def _valid_and_one_hot(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int):
    """(valid mask (B, H, W) float, one-hot targets (B, C, H, W) float with zeros at ignored pixels)."""
    valid = labels != ignore_index
    one_hot = F.one_hot(torch.where(valid, labels, 0), logits.shape[1]).permute(0, 3, 1, 2).float()
    return valid.float(), one_hot * valid.unsqueeze(1)


def _weights(class_weight, logits: torch.Tensor) -> torch.Tensor:
    if class_weight is None:
        return logits.new_ones(logits.shape[1])
    return torch.as_tensor(class_weight, dtype=logits.dtype, device=logits.device)


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, class_weight=None
) -> torch.Tensor:
    r"""mmseg's `CrossEntropyLoss(class_weight=w, avg_non_ignore=True)` (`cross_entropy_loss.py`):

    L = \sum_{i valid} w_{y_i} (-\log softmax(x_i)_{y_i}) / N_valid,

    the mean over the non-ignored pixels (N_valid of them, not the sum of their weights as `F.cross_entropy(weight=)`
    divides by). Without `class_weight` it is `F.cross_entropy(..., ignore_index=ignore_index)`."""
    logits, labels = _check_inputs(logits, labels, class_weight)
    valid = labels != ignore_index
    nll = F.cross_entropy(logits, torch.where(valid, labels, 0), reduction="none")
    weights = _weights(class_weight, logits)[torch.where(valid, labels, 0)] * valid
    return (nll * weights).sum() / valid.sum().clamp(min=1)


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    class_weight=None,
    smooth: float = 1.0,
    exponent: float = 2.0,
) -> torch.Tensor:
    r"""mmseg's `DiceLoss(smooth=1, exponent=2)` (`dice_loss.py`, V-Net's Dice, Milletari et al. 2016), on the
    softmax probabilities p and one-hot targets t, per image b and class c over the valid pixels v:

    D_{b,c} = 1 - (2 \sum p t v + smooth) / (\sum (p^e + t^e) v + smooth),
    L = mean_b \sum_c w_c D_{b,c} / C.

    mmseg sums the denominator over all pixels (ignored ones included, with their target clamped to class C-1);
    here ignored pixels are left out of it too."""
    logits, labels = _check_inputs(logits, labels, class_weight)
    valid, target = _valid_and_one_hot(logits, labels, ignore_index)
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    numerator = 2 * (probs * target).sum(dim=(2, 3)) + smooth
    denominator = (probs.pow(exponent) + target.pow(exponent)).sum(dim=(2, 3)) + smooth
    per_class = (1 - numerator / denominator) * _weights(class_weight, logits)
    return per_class.sum(dim=1).div(logits.shape[1]).mean()


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = 255,
    class_weight=None,
    gamma: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    r"""mmseg's `FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.5)` (`focal_loss.py`, `py_sigmoid_focal_loss`;
    Lin et al. 2017, arXiv 1708.02002): one sigmoid per class, with p = sigmoid(x) and one-hot t,

    l = BCE(x, t) (alpha t + (1 - alpha)(1 - t)) |t - p|^gamma w_c,

    averaged over the valid pixels' N_valid * C terms (mmseg divides by all pixels' N * C)."""
    logits, labels = _check_inputs(logits, labels, class_weight)
    valid, target = _valid_and_one_hot(logits, labels, ignore_index)
    probs = logits.sigmoid()
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * (target - probs).abs().pow(gamma)
    terms = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight
    terms = terms * _weights(class_weight, logits).view(1, -1, 1, 1) * valid.unsqueeze(1)
    return terms.sum() / (valid.sum() * logits.shape[1]).clamp(min=1)


def _lovasz_grad(sorted_targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. the sorted errors (Berman et al. 2018, Alg. 1)."""
    total = sorted_targets.sum()
    intersection = total - sorted_targets.cumsum(0)
    union = total + (1 - sorted_targets).cumsum(0)
    jaccard = 1 - intersection / union
    if sorted_targets.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def lovasz_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, class_weight=None
) -> torch.Tensor:
    r"""mmseg's `LovaszLoss(loss_type='multi_class', classes='present', per_image=False)` (`lovasz_loss.py`; the
    Lovasz-Softmax of Berman et al. 2018, arXiv 1705.08790): for each class c present in the valid labels, the errors
    e_i = |t_{i,c} - p_{i,c}| sorted decreasingly (permutation pi) give

    L_c = \sum_i e_{pi_i} (J(pi_1..pi_i) - J(pi_1..pi_{i-1})),  J(M) = |M| / |{y = c} \cup M|,

    the Lovasz extension of the Jaccard loss; L is the mean of w_c L_c over the present classes."""
    logits, labels = _check_inputs(logits, labels, class_weight)
    probs = logits.softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    probs, flat = probs[valid], flat[valid]
    weights = _weights(class_weight, logits)
    losses = []
    for c in range(logits.shape[1]):
        targets = (flat == c).float()
        if targets.sum() == 0:
            continue
        errors, order = (targets - probs[:, c]).abs().sort(descending=True)
        losses.append(torch.dot(errors, _lovasz_grad(targets[order])) * weights[c])
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


LOSS_FUNCTIONS = {
    "CrossEntropyLoss": cross_entropy_loss,
    "DiceLoss": dice_loss,
    "FocalLoss": focal_loss,
    "LovaszLoss": lovasz_loss,
}


def _check_weight(value, what: str, flag: str) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{flag}: {what} must be a number, got {value!r}.") from None
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"{flag}: {what} must be a finite number >= 0, got {value!r}.")
    return weight


def check_class_weight(class_weight, num_labels: int | None = None, flag: str = "--class_weight") -> list[float]:
    """`class_weight` as a list of finite floats >= 0, one per class when `num_labels` is given."""
    weights = [_check_weight(value, "every class weight", flag) for value in class_weight]
    if num_labels is not None and len(weights) != num_labels:
        raise ValueError(
            f"{flag}: expected {num_labels} weights (one per class), got {len(weights)}; list one weight per label "
            "or pass 'auto' (median frequency balancing)."
        )
    return weights


def parse_loss(spec: str, flag: str = "--loss") -> list[dict]:
    """`"ce:1.0,dice:0.5"` -> `[{"type": "CrossEntropyLoss", "loss_weight": 1.0}, {"type": "DiceLoss", ...}]`, the
    form of mmseg's `loss_decode` list. Names: `ce`, `dice`, `focal`, `lovasz` or mmseg's type names; a missing
    weight is 1.0."""
    losses, seen = [], set()
    for item in (part.strip() for part in str(spec).split(",")):
        name, _, weight = item.partition(":")
        name = name.strip()
        loss_type = LOSS_TYPES.get(name.lower(), name if name in LOSS_FUNCTIONS else None)
        if loss_type is None:
            raise ValueError(
                f"{flag}: unknown loss {name!r}; use name:weight pairs from {', '.join(LOSS_TYPES)} "
                "(e.g. --loss ce:1.0,dice:0.5)."
            )
        if loss_type in seen:
            raise ValueError(f"{flag}: loss {name!r} is given twice; list each loss once.")
        seen.add(loss_type)
        loss_weight = _check_weight(weight.strip() or 1.0, f"the weight of {name!r}", flag)
        losses.append({"type": loss_type, "loss_weight": loss_weight})
    return losses


def parse_class_weight(spec: str, num_labels: int | None = None, flag: str = "--class_weight") -> list[float] | str:
    """`"auto"` (returned as is: median frequency balancing, see `median_frequency_class_weight`) or a comma- or
    space-separated list of one weight >= 0 per class."""
    text = str(spec).strip()
    if text.lower() == "auto":
        return "auto"
    values = [value for value in text.replace(",", " ").split() if value]
    if not values:
        raise ValueError(f"{flag}: expected 'auto' or one weight per class (e.g. 1,1,5), got {spec!r}.")
    return check_class_weight(values, num_labels, flag)


def normalize_loss_types(loss_types, num_labels: int | None = None, field: str = "loss_types") -> list[dict]:
    """A `loss_types` value (a `parse_loss` string, one dict or a list of dicts with mmseg's keys) as a checked list
    of dicts; mmseg's defaults filled in. Raises `ValueError` naming the field and the fix."""
    if isinstance(loss_types, str):
        loss_types = parse_loss(loss_types, flag=field)
    if isinstance(loss_types, dict):
        loss_types = [loss_types]
    if not isinstance(loss_types, (list, tuple)) or not loss_types:
        raise ValueError(
            f"{field}: expected a non-empty list of dicts like {{'type': 'DiceLoss', 'loss_weight': 0.5}} or a string "
            f"like 'ce:1.0,dice:0.5', got {loss_types!r}."
        )
    normalized = []
    for entry in loss_types:
        if not isinstance(entry, dict) or entry.get("type") not in LOSS_FUNCTIONS:
            raise ValueError(
                f"{field}: each entry needs a 'type' among {', '.join(LOSS_FUNCTIONS)}, got {entry!r}; e.g. "
                "{'type': 'CrossEntropyLoss', 'loss_weight': 1.0}."
            )
        extra = set(entry) - {"type", "loss_weight", "class_weight"} - set(LOSS_DEFAULTS[entry["type"]])
        if extra:
            raise ValueError(
                f"{field}: {entry['type']} takes loss_weight, class_weight"
                f"{''.join(', ' + key for key in LOSS_DEFAULTS[entry['type']])}; got {sorted(extra)}."
            )
        item = {"type": entry["type"], **LOSS_DEFAULTS[entry["type"]], **entry}
        item["loss_weight"] = _check_weight(item.get("loss_weight", 1.0), "loss_weight", field)
        for key in LOSS_DEFAULTS[entry["type"]]:
            item[key] = _check_weight(item[key], key, field)
        if item.get("class_weight") is not None:
            item["class_weight"] = check_class_weight(item["class_weight"], num_labels, f"{field}.class_weight")
        normalized.append(item)
    return normalized


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss_types=None, ignore_index: int = 255, class_weight=None
) -> torch.Tensor:
    """The weighted sum `sum_k loss_weight_k * loss_k(logits, labels)` of the `loss_types` entries (see
    `normalize_loss_types`); `None` is plain cross-entropy. `class_weight`, if given, applies to every entry that
    has none of its own."""
    if loss_types is None:
        return cross_entropy_loss(logits, labels, ignore_index, class_weight)
    total = None
    for entry in normalize_loss_types(loss_types, logits.shape[1]):
        options = {key: value for key, value in entry.items() if key not in ("type", "loss_weight", "class_weight")}
        weights = entry.get("class_weight", class_weight)
        term = entry["loss_weight"] * LOSS_FUNCTIONS[entry["type"]](logits, labels, ignore_index, weights, **options)
        total = term if total is None else total + term
    return total


def median_frequency_class_weight(
    label_maps: Iterable, num_labels: int, ignore_index: int = 255
) -> tuple[list[float], list[int]]:
    r"""Median frequency balancing (Eigen & Fergus 2015, arXiv 1411.4734, Sec. 4.2): w_c = median_c'(f_c') / f_c with
    f_c = (pixels of class c) / (pixels of the images where c is present); ignored pixels are not counted. A class
    absent from every map gets weight 1. Returns (weights, pixel counts per class)."""
    counts = np.zeros(num_labels, dtype=np.int64)
    present_pixels = np.zeros(num_labels, dtype=np.int64)
    for label_map in label_maps:
        array = np.asarray(label_map).reshape(-1)
        array = array[array != ignore_index].astype(np.int64)
        if array.size and (array.min() < 0 or array.max() >= num_labels):
            raise ValueError(
                f"class_weight 'auto': label values must be in [0, {num_labels - 1}] or {ignore_index}, got "
                f"{sorted(set(array[(array < 0) | (array >= num_labels)].tolist()))[:5]}; check num_labels."
            )
        image_counts = np.bincount(array, minlength=num_labels)
        counts += image_counts
        present_pixels += (image_counts > 0) * array.size
    present = present_pixels > 0
    if not present.any():
        raise ValueError("class_weight 'auto': the training labels have no non-ignored pixel.")
    frequency = np.where(present, counts / np.maximum(present_pixels, 1), 0.0)
    median = float(np.median(frequency[present]))
    weights = np.where(present, median / np.where(present, frequency, 1.0), 1.0)
    return [float(w) for w in weights], counts.tolist()


def loss_types_from_flags(
    loss: str | None,
    class_weight: str | None,
    num_labels: int,
    label_maps: Iterable | None = None,
    ignore_index: int = 255,
    log=print,
) -> list[dict] | None:
    """The `loss_types` of `train-seg --loss SPEC --class_weight LIST|auto` (either may be None): the parsed losses
    (default: cross-entropy) with the class weights on every entry. `auto` computes median frequency balancing from
    `label_maps` (the training split's label maps, read once) and logs the weights with `log`. None when both flags
    are None (the model's plain cross-entropy)."""
    if loss is None and class_weight is None:
        return None
    entries = parse_loss(loss if loss is not None else "ce:1.0")
    if class_weight is not None:
        weights = parse_class_weight(class_weight, num_labels)
        if weights == "auto":
            if label_maps is None:
                raise ValueError("--class_weight auto: needs the training labels; pass a training dataset.")
            weights, counts = median_frequency_class_weight(label_maps, num_labels, ignore_index)
            log(
                f"--class_weight auto (median frequency balancing): weights {[round(w, 4) for w in weights]}, "
                f"pixels per class {counts}"
            )
        entries = [{**entry, "class_weight": weights} for entry in entries]
    return normalize_loss_types(entries, num_labels, "--loss")


__all__ = [
    "loss_types_from_flags",
    "LOSS_TYPES",
    "cross_entropy_loss",
    "dice_loss",
    "focal_loss",
    "lovasz_loss",
    "median_frequency_class_weight",
    "normalize_loss_types",
    "parse_class_weight",
    "parse_loss",
    "segmentation_loss",
]
