"""Per-sample loss weighting, generic and for torchvision detectors.

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
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead

from dequity.errors import DequityError

__all__ = [
    "WeightedFCOSHead",
    "WeightedRetinaNetHead",
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


def _one(head_outputs: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in head_outputs.items()}


class WeightedFCOSHead(FCOSHead):
    """FCOS head whose loss multiplies each image's terms by the image's ``weight``.

    Only ``compute_loss`` changes: torchvision's loss runs once per image and
    the per-image sums are weighted before the batch normaliser (see the
    module docstring). ``num_foreground`` holds the per-image foreground
    counts of the last batch. Targets without ``weight`` give torchvision's loss.
    """

    normalize_weights: bool = False
    num_foreground: list[int] = []

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):  # noqa: D102
        weights = image_weights(
            targets, normalize=self.normalize_weights, device=head_outputs["cls_logits"].device
        )
        counts = torch.stack([(m >= 0).sum() for m in matched_idxs]).tolist()
        self.num_foreground = counts
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

    Only ``compute_loss`` changes (see the module docstring). Targets without
    ``weight`` give torchvision's loss.
    """

    normalize_weights: bool = False

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):  # noqa: D102
        weights = image_weights(
            targets, normalize=self.normalize_weights, device=head_outputs["cls_logits"].device
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
    """Makes a torchvision FCOS or RetinaNet weight each image's loss by ``target["weight"]``.

    The head keeps its parameters and state-dict keys; only its loss
    changes, in place. Returns ``model``.

    Example::

        model = weight_image_losses(torchvision.models.detection.fcos_resnet50_fpn())
        losses = model(images, [{"boxes": b, "labels": l, "weight": torch.tensor(0.7)}])
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
