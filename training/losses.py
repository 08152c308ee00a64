"""Per-sample and per-box loss weighting, generic and for torchvision detectors.

Definitions (``w_i`` is image ``i``'s weight, ``B`` the batch size):

- :func:`weighted_loss`: ``sum_i w_i * l_i / B`` for per-sample losses ``l_i``
  (``reduction="mean"``), or ``sum_i w_i * l_i`` (``"sum"``).
- FCOS: torchvision divides the batch's summed loss terms by the batch's
  foreground-anchor count ``F`` (all images together). The weighted loss is
  ``sum_i w_i * S_i / max(1, F)``, where ``S_i`` is image ``i``'s summed terms
  over its anchors. ``S_i / max(1, F)`` is image ``i``'s term; run alone,
  the image's loss is ``S_i / max(1, F_i)`` with its own count ``F_i``. The
  normaliser ``F`` counts every image of the batch, weighted or not.
- RetinaNet: torchvision averages per-image normalised losses ``L_i``; the
  weighted loss is ``sum_i w_i * L_i / B``, and ``L_i`` is the loss of the
  image run alone.

With all weights 1 each definition is exactly the unweighted loss, and weight
0 removes an image's contribution to the gradient. ``normalize=True`` divides
the weights by the batch's mean weight first, so weights move the balance
between the images of a batch but not the size of the step (the learning
rate keeps its meaning); without it, DatasetEquity weights, which lie in
``[eta / (eta + 1), 1]``, also shrink the effective learning rate.

Per-box weights: a target may carry ``box_weights`` (one float per box).
Each anchor then has a weight ``a_j``: the weight of the ground-truth box it
is matched to, or 1 for a background anchor (RetinaNet's ignored anchors
take no part in the loss, as in torchvision). Every term of the anchor's loss
is multiplied by ``a_j`` before torchvision's sums: classification, box
regression and centerness (FCOS); classification and box regression
(RetinaNet). The normalisers stay torchvision's foreground-anchor counts
(``F`` for FCOS, ``F_i`` for RetinaNet), unweighted. With an image weight too,
an anchor of image ``i`` is weighted ``w_i * a_j``: FCOS gives
``sum_i w_i * sum_j a_j * l_j / max(1, F)``, RetinaNet
``sum_i w_i * (sum_j a_j * l_j / max(1, F_i)) / B`` per loss term.

With all box weights 1 this is exactly torchvision's loss. Each term is
affine in the box weights, since the normalisers do not depend on them:
classification is linear in them plus the background anchors' fixed part;
box regression and centerness, which only foreground anchors have, are
linear (all box weights 0 make them 0). So
``L(a * u + (1 - a) * v) == a * L(u) + (1 - a) * L(v)`` for box-weight
vectors ``u``, ``v``. ``normalize=True`` first divides the box weights by
their mean over the batch's boxes (and the image weights by theirs); the
loss is then unchanged by scaling all box weights and no longer affine.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as nnf
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import (
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)

from dequity.errors import DequityError

__all__ = [
    "WeightedFCOSHead",
    "WeightedRetinaNetHead",
    "anchor_weights",
    "box_weights",
    "image_weights",
    "supports_image_weights",
    "weight_image_losses",
    "weighted_loss",
]


def _normalized(weights: torch.Tensor) -> torch.Tensor:
    mean = weights.mean()
    return weights / mean if float(mean) > 0 else weights


def weighted_loss(
    losses: torch.Tensor,
    weights: torch.Tensor,
    *,
    normalize: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weights per-sample losses (computed with ``reduction="none"``) and reduces them.

    ``losses`` has the batch on its first dimension; further dimensions (per
    pixel, per anchor) share their sample's weight and are averaged (``"mean"``)
    or summed (``"sum"``) with the batch; ``"none"`` returns the weighted
    losses. ``normalize=True`` divides the weights by their batch mean, so
    that they change the balance between samples, not the learning rate.

    Example::

        losses = F.cross_entropy(logits, labels, reduction="none")
        loss = weighted_loss(losses, batch_weights, normalize=True)
        loss.backward()
    """
    weights = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device).detach()
    if weights.ndim != 1 or weights.shape[0] != losses.shape[0]:
        raise DequityError(
            f"need one weight per sample: losses have batch size {losses.shape[0]}, "
            f"weights have shape {tuple(weights.shape)}; compute the losses with "
            "reduction='none'"
        )
    if normalize:
        weights = _normalized(weights)
    weighted = losses * weights.reshape(-1, *([1] * (losses.ndim - 1)))
    if reduction == "mean":
        return weighted.mean()
    if reduction == "sum":
        return weighted.sum()
    if reduction == "none":
        return weighted
    raise DequityError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def image_weights(
    targets: list[dict[str, Any]], *, normalize: bool = False, device: Any = None
) -> torch.Tensor | None:
    """The ``weight`` of each target as one tensor, or None when no target has one.

    Example::

        w = image_weights([{"weight": torch.tensor(0.5)}, {"weight": torch.tensor(1.0)}])
    """
    present = ["weight" in t for t in targets]
    if not any(present):
        return None
    if not all(present):
        raise DequityError("some targets have a 'weight' and some do not; give every image one")
    weights = torch.stack(
        [torch.as_tensor(t["weight"], dtype=torch.float32).reshape(()) for t in targets]
    ).to(device)
    return _normalized(weights) if normalize else weights


def box_weights(
    targets: list[dict[str, Any]], *, normalize: bool = False
) -> list[torch.Tensor] | None:
    """Each target's ``box_weights`` (one per box) as a float tensor, or None when none has them.

    ``normalize=True`` divides them by their mean over all the boxes given.

    Example::

        w = box_weights([{"boxes": torch.zeros(2, 4), "box_weights": torch.tensor([0.5, 1.0])}])
    """
    present = ["box_weights" in t for t in targets]
    if not any(present):
        return None
    if not all(present):
        raise DequityError(
            "some targets have 'box_weights' and some do not; give every image one weight "
            "per box (an empty tensor for an image without boxes)"
        )
    weights = []
    for t in targets:
        boxes = t["boxes"]
        w = torch.as_tensor(t["box_weights"], dtype=torch.float32, device=boxes.device)
        w = w.detach().reshape(-1)
        if w.shape[0] != boxes.shape[0]:
            raise DequityError(
                f"need one box weight per box: a target has {boxes.shape[0]} boxes and "
                f"{w.shape[0]} box weights; drop a box's weight with the box"
            )
        weights.append(w)
    if normalize:
        everything = torch.cat(weights)
        mean = everything.mean() if everything.numel() else everything.new_tensor(0.0)
        if float(mean) > 0:
            weights = [w / mean for w in weights]
    return weights


def anchor_weights(
    matched_idxs: list[torch.Tensor],
    boxes: list[torch.Tensor],
    images: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per-anchor weights: the matched box's weight (1 for background) times the image's.

    ``matched_idxs`` are the heads' matches (the box index, or a negative
    value for background and ignored anchors).

    Example::

        a = anchor_weights([torch.tensor([-1, 0, 1, 0])], [torch.tensor([0.5, 2.0])])
        # [tensor([1.0, 0.5, 2.0, 0.5])]
    """
    out = []
    for i, (matched, w) in enumerate(zip(matched_idxs, boxes, strict=True)):
        weights = torch.ones(matched.shape, dtype=w.dtype, device=matched.device)
        foreground = matched >= 0
        weights[foreground] = w.to(matched.device)[matched[foreground]]
        out.append(weights if images is None else weights * images[i].to(weights.device))
    return out


def _sum_terms(terms: list[torch.Tensor]) -> torch.Tensor:
    # torchvision's order of addition, so that weights of 1 give its loss exactly
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _fcos_weighted_loss(
    head: FCOSHead,
    targets: list[dict[str, torch.Tensor]],
    head_outputs: dict[str, torch.Tensor],
    anchors: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    weights: list[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """torchvision's ``FCOSHead.compute_loss`` with each anchor's terms times its weight."""
    cls_logits = head_outputs["cls_logits"]
    gt_classes, gt_boxes = [], []
    for target, matched in zip(targets, matched_idxs, strict=True):
        if len(target["labels"]) == 0:
            classes = target["labels"].new_zeros((len(matched),))
            boxes = target["boxes"].new_zeros((len(matched), 4))
        else:
            classes = target["labels"][matched.clip(min=0)]
            boxes = target["boxes"][matched.clip(min=0)]
        classes[matched < 0] = -1
        gt_classes.append(classes)
        gt_boxes.append(boxes)
    gt_boxes_t, gt_classes_t, anchors_t = (
        torch.stack(gt_boxes),
        torch.stack(gt_classes),
        torch.stack(anchors),
    )
    weight = torch.stack(weights).to(cls_logits.dtype)
    foreground = gt_classes_t >= 0
    normaliser = max(1, foreground.sum().item())

    one_hot = torch.zeros_like(cls_logits)
    one_hot[foreground, gt_classes_t[foreground]] = 1.0
    loss_cls = sigmoid_focal_loss(cls_logits, one_hot, reduction="none") * weight[..., None]

    pred_boxes = head.box_coder.decode(head_outputs["bbox_regression"], anchors_t)
    loss_reg = (
        generalized_box_iou_loss(pred_boxes[foreground], gt_boxes_t[foreground], reduction="none")
        * weight[foreground]
    )

    reg_targets = head.box_coder.encode(anchors_t, gt_boxes_t)
    if len(reg_targets) == 0:
        ctrness = reg_targets.new_zeros(reg_targets.size()[:-1])
    else:
        left_right, top_bottom = reg_targets[:, :, [0, 2]], reg_targets[:, :, [1, 3]]
        ctrness = torch.sqrt(
            (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
            * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
        )
    pred_ctrness = head_outputs["bbox_ctrness"].squeeze(dim=2)
    loss_ctr = (
        nnf.binary_cross_entropy_with_logits(
            pred_ctrness[foreground], ctrness[foreground], reduction="none"
        )
        * weight[foreground]
    )
    return {
        "classification": loss_cls.sum() / normaliser,
        "bbox_regression": loss_reg.sum() / normaliser,
        "bbox_ctrness": loss_ctr.sum() / normaliser,
    }


def _box_loss_per_anchor(
    kind: str,
    box_coder: Any,
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    regression: torch.Tensor,
) -> torch.Tensor:
    """torchvision's RetinaNet ``_box_loss`` with ``reduction="none"``: one row per anchor."""
    if kind in ("l1", "smooth_l1"):
        encoded = box_coder.encode_single(gt_boxes, anchors)
        if kind == "l1":
            return nnf.l1_loss(regression, encoded, reduction="none")
        return nnf.smooth_l1_loss(regression, encoded, reduction="none", beta=1.0)
    losses = {
        "ciou": complete_box_iou_loss,
        "diou": distance_box_iou_loss,
        "giou": generalized_box_iou_loss,
    }
    if kind not in losses:
        raise DequityError(f"unsupported RetinaNet box loss {kind!r}")
    decoded = box_coder.decode_single(regression, anchors)
    return losses[kind](decoded, gt_boxes, reduction="none", eps=1e-7)


def _retinanet_weighted_loss(
    head: RetinaNetHead,
    targets: list[dict[str, torch.Tensor]],
    head_outputs: dict[str, torch.Tensor],
    anchors: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    weights: list[torch.Tensor],
) -> dict[str, torch.Tensor]:
    """torchvision's ``RetinaNetHead.compute_loss`` with each anchor's terms times its weight."""
    cls_head, reg_head = head.classification_head, head.regression_head
    cls_terms, reg_terms = [], []
    for target, logits, regression, anchors_i, matched, weight in zip(
        targets,
        head_outputs["cls_logits"],
        head_outputs["bbox_regression"],
        anchors,
        matched_idxs,
        weights,
        strict=True,
    ):
        weight = weight.to(logits.dtype)
        foreground = matched >= 0
        num_foreground = foreground.sum()
        one_hot = torch.zeros_like(logits)
        one_hot[foreground, target["labels"][matched[foreground]]] = 1.0
        valid = matched != cls_head.BETWEEN_THRESHOLDS
        loss = sigmoid_focal_loss(logits[valid], one_hot[valid], reduction="none")
        cls_terms.append((loss * weight[valid][:, None]).sum() / max(1, num_foreground))

        fg = torch.where(foreground)[0]
        loss = _box_loss_per_anchor(
            reg_head._loss_type,
            reg_head.box_coder,
            anchors_i[fg, :],
            target["boxes"][matched[fg]],
            regression[fg, :],
        )
        scale = weight[fg].reshape(-1, *([1] * (loss.ndim - 1)))
        reg_terms.append((loss * scale).sum() / max(1, fg.numel()))
    return {
        "classification": _sum_terms(cls_terms) / len(targets),
        "bbox_regression": _sum_terms(reg_terms) / max(1, len(targets)),
    }


def _one(head_outputs: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in head_outputs.items()}


class WeightedFCOSHead(FCOSHead):
    """FCOS head whose loss multiplies each image's terms by its ``weight``, each box's by its own.

    Only ``compute_loss`` changes: torchvision's loss runs once per image and
    the per-image sums are weighted before the batch normaliser; with
    ``box_weights`` each anchor's terms are multiplied by its weight (see the
    module docstring). ``num_foreground`` holds the per-image foreground
    counts of the last batch. Targets without ``weight`` or ``box_weights``
    give torchvision's loss.
    """

    normalize_weights: bool = False
    num_foreground: list[int] = []

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):  # noqa: D102
        weights = image_weights(
            targets, normalize=self.normalize_weights, device=head_outputs["cls_logits"].device
        )
        counts = torch.stack([(m >= 0).sum() for m in matched_idxs]).tolist()
        self.num_foreground = counts
        boxes = box_weights(targets, normalize=self.normalize_weights)
        if boxes is not None:
            per_anchor = anchor_weights(matched_idxs, boxes, weights)
            return _fcos_weighted_loss(
                self, targets, head_outputs, anchors, matched_idxs, per_anchor
            )
        if weights is None:
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        scales = [weights[i] * max(1, counts[i]) for i in range(len(targets))]
        total = _sum_image_losses(
            super().compute_loss, targets, head_outputs, anchors, matched_idxs, scales
        )
        normaliser = max(1, sum(counts))
        return {name: value / normaliser for name, value in total.items()}


class WeightedRetinaNetHead(RetinaNetHead):
    """RetinaNet head whose loss is the weighted mean of the per-image losses.

    Only ``compute_loss`` changes; with ``box_weights`` each anchor's terms
    are multiplied by its weight (see the module docstring). Targets without
    ``weight`` or ``box_weights`` give torchvision's loss.
    """

    normalize_weights: bool = False

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):  # noqa: D102
        weights = image_weights(
            targets, normalize=self.normalize_weights, device=head_outputs["cls_logits"].device
        )
        boxes = box_weights(targets, normalize=self.normalize_weights)
        if boxes is not None:
            per_anchor = anchor_weights(matched_idxs, boxes, weights)
            return _retinanet_weighted_loss(
                self, targets, head_outputs, anchors, matched_idxs, per_anchor
            )
        if weights is None:
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        total = _sum_image_losses(
            super().compute_loss, targets, head_outputs, anchors, matched_idxs, list(weights)
        )
        return {name: value / len(targets) for name, value in total.items()}


def _sum_image_losses(
    compute_loss: Any,
    targets: list[dict],
    head_outputs: dict[str, torch.Tensor],
    anchors: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    scales: list,
) -> dict[str, torch.Tensor]:
    """``sum_i scales[i] * loss_i`` per loss term, each image's loss on its own."""
    total: dict[str, torch.Tensor] = {}
    for i, target in enumerate(targets):
        one = compute_loss([target], _one(head_outputs, i), [anchors[i]], [matched_idxs[i]])
        for name, value in one.items():
            term = value * scales[i]
            total[name] = total[name] + term if name in total else term
    return total


_WEIGHTED_HEADS = {FCOSHead: WeightedFCOSHead, RetinaNetHead: WeightedRetinaNetHead}


def supports_image_weights(model: torch.nn.Module) -> bool:
    """Whether :func:`weight_image_losses` can weight this detector's losses.

    Example::

        >>> supports_image_weights(torchvision.models.detection.fcos_resnet50_fpn())
        True
    """
    head = getattr(model, "head", None)
    return any(isinstance(head, base) for base in _WEIGHTED_HEADS)


def weight_image_losses(model: torch.nn.Module, *, normalize: bool = False) -> torch.nn.Module:
    """Makes a torchvision FCOS or RetinaNet weight its loss by ``target["weight"]`` per image.

    Targets with ``box_weights`` (one per box) also weight each box's anchors
    (see the module docstring). The head keeps its parameters and state-dict
    keys; only its loss changes, in place. Returns ``model``.

    Example::

        model = weight_image_losses(torchvision.models.detection.fcos_resnet50_fpn())
        losses = model(images, [{"boxes": b, "labels": l, "weight": torch.tensor(0.7)}])
        losses = model(images, [{"boxes": b, "labels": l, "box_weights": torch.tensor([0.4])}])
    """
    head = getattr(model, "head", None)
    for base, weighted in _WEIGHTED_HEADS.items():
        if isinstance(head, base):
            if not isinstance(head, weighted):
                head.__class__ = weighted
            head.normalize_weights = normalize
            return model
    raise DequityError(
        f"per-image loss weights are implemented for torchvision FCOS and RetinaNet, "
        f"not {type(model).__name__}; pick one of those detectors, or train without "
        "weights (weight_field=None, --weight-field none)"
    )
