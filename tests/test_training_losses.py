"""Per-image loss weights: the batch gradient is the weighted sum of per-image gradients."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.fcos import FCOSHead

from dequity.errors import DequityError
from training.detectors import build_detector
from training.losses import (
    WeightedFCOSHead,
    WeightedRetinaNetHead,
    anchor_weights,
    box_weights,
    image_weights,
    supports_image_weights,
    weight_image_losses,
    weighted_loss,
)

DETECTORS = {"fcos": FCOS, "retinanet": RetinaNet}
SIZE = 256


class TinyBackbone(nn.Module):
    """Five feature maps (strides 8 to 128) from a few convolutions.

    The weighting lives in the detector heads, which are torchvision's own;
    a small backbone keeps these exact gradient checks fast. The full
    EfficientNet-Lite detectors train in test_training_run.py.
    """

    out_channels = 32

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 8, stride=8)
        self.downs = nn.ModuleList(nn.Conv2d(32, 32, 3, stride=2, padding=1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> OrderedDict:
        features = [torch.relu(self.stem(x))]
        for down in self.downs:
            features.append(torch.relu(down(features[-1])))
        return OrderedDict((str(i), f) for i, f in enumerate(features))


def _batch() -> tuple[list[torch.Tensor], list[dict]]:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=gen) for _ in range(3)]
    boxes = [
        torch.tensor([[10.0, 12.0, 60.0, 90.0], [70.0, 20.0, 120.0, 50.0]]),
        torch.tensor([[30.0, 30.0, 100.0, 110.0]]),
        torch.zeros(0, 4),
    ]
    labels = [torch.tensor([1, 2]), torch.tensor([3]), torch.zeros(0, dtype=torch.int64)]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)]
    return images, targets


def _with_weights(targets: list[dict], weights: list[float]) -> list[dict]:
    return [{**t, "weight": torch.tensor(w)} for t, w in zip(targets, weights, strict=True)]


@pytest.fixture(scope="module", params=DETECTORS)
def models(request):
    torch.manual_seed(0)
    detector = DETECTORS[request.param]
    stock = detector(TinyBackbone(), 4, min_size=SIZE, max_size=SIZE).train()
    weighted = weight_image_losses(copy.deepcopy(stock))
    return request.param, stock, weighted


def assert_same_direction_and_size(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # float32 sums in another order: compare the whole gradient vector
    error = (actual - expected).norm() / expected.norm()
    assert expected.norm() > 0 and error < 1e-5, float(error)


def _grad(model, images, targets) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = sum(model(images, targets).values())
    loss.backward()
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return loss.detach(), torch.cat(grads)


def test_batch_gradient_is_weighted_sum_of_image_gradients(models):
    name, stock, weighted = models
    images, targets = _batch()
    weights = [0.25, 1.0, 0.75]
    _, batch_grad = _grad(weighted, images, _with_weights(targets, weights))
    if name.startswith("fcos"):
        # image i's term is S_i / max(1, F) with F the batch's foreground count;
        # alone, its loss is S_i / max(1, F_i)
        counts = weighted.head.num_foreground
        assert sum(counts) > 0
        scales = [max(1, c) / max(1, sum(counts)) for c in counts]
    else:
        scales = [1 / len(images)] * len(images)
    expected = torch.zeros_like(batch_grad)
    for image, target, w, s in zip(images, targets, weights, scales, strict=True):
        _, grad = _grad(stock, [image], [target])
        expected += w * s * grad
    assert_same_direction_and_size(batch_grad, expected)


def test_zero_weight_removes_an_image(models):
    name, _, weighted = models
    images, targets = _batch()
    _, grad = _grad(weighted, images, _with_weights(targets, [0.0, 1.0, 0.5]))
    other = [torch.rand_like(images[0]), *images[1:]]
    changed = [dict(targets[0]), *targets[1:]]
    if name.startswith("retinanet"):
        # RetinaNet normalises per image: the zero-weight image's boxes do not matter either
        changed[0]["boxes"] = changed[0]["boxes"][:1] + 5
        changed[0]["labels"] = changed[0]["labels"][:1]
    _, grad_other = _grad(weighted, other, _with_weights(changed, [0.0, 1.0, 0.5]))
    assert_same_direction_and_size(grad, grad_other)


def test_equal_weights_reproduce_the_unweighted_loss(models):
    _, stock, weighted = models
    images, targets = _batch()
    loss, grad = _grad(stock, images, targets)
    loss_1, grad_1 = _grad(weighted, images, _with_weights(targets, [1.0, 1.0, 1.0]))
    torch.testing.assert_close(loss_1, loss)
    assert_same_direction_and_size(grad_1, grad)
    weighted.head.normalize_weights = True
    try:
        loss_n, grad_n = _grad(weighted, images, _with_weights(targets, [0.6, 0.6, 0.6]))
    finally:
        weighted.head.normalize_weights = False
    torch.testing.assert_close(loss_n, loss)
    assert_same_direction_and_size(grad_n, grad)
    # without weights in the targets the loss is torchvision's own
    torch.testing.assert_close(_grad(weighted, images, targets)[0], loss)


def test_weight_image_losses_swaps_only_the_head_class():
    model = build_detector("fcos_efficientnet_lite0", 3, image_size=SIZE, pretrained_backbone=False)
    keys = list(model.state_dict())
    assert weight_image_losses(model, normalize=True) is model
    assert isinstance(model.head, WeightedFCOSHead) and isinstance(model.head, FCOSHead)
    assert model.head.normalize_weights is True
    assert list(model.state_dict()) == keys
    retina = build_detector("retinanet_efficientnet_lite0", 3, pretrained_backbone=False)
    assert isinstance(weight_image_losses(retina).head, WeightedRetinaNetHead)


def test_torchvision_detectors_by_name():
    fcos = build_detector("fcos_resnet50_fpn", 3, image_size=SIZE)
    assert supports_image_weights(fcos)
    assert fcos.head.classification_head.num_classes == 3
    frcnn = build_detector("fasterrcnn_mobilenet_v3_large_fpn", 3, image_size=SIZE)
    assert not supports_image_weights(frcnn)
    with pytest.raises(DequityError, match="FCOS and RetinaNet"):
        weight_image_losses(frcnn)
    with pytest.raises(DequityError, match="unknown detector"):
        build_detector("no_such_detector", 3)


def test_weighted_loss_helper():
    losses = torch.tensor([1.0, 2.0, 4.0])
    weights = torch.tensor([0.5, 1.0, 0.0])
    assert weighted_loss(losses, weights).item() == pytest.approx((0.5 + 2.0) / 3)
    assert weighted_loss(losses, weights, reduction="sum").item() == pytest.approx(2.5)
    # normalised: the weights' batch mean is 0.5, so they act as (1, 2, 0)
    assert weighted_loss(losses, weights, normalize=True).item() == pytest.approx(5.0 / 3)
    same = weighted_loss(losses, torch.full((3,), 0.4), normalize=True)
    assert same.item() == pytest.approx(losses.mean().item())
    per_pixel = torch.ones(3, 2, 2)
    assert weighted_loss(per_pixel, weights, reduction="none").shape == (3, 2, 2)
    assert weighted_loss(per_pixel, weights).item() == pytest.approx(1.5 / 3)
    with pytest.raises(DequityError, match="one weight per sample"):
        weighted_loss(losses, torch.ones(2))
    logits = torch.randn(3, 4, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2]), reduction="none")
    weighted_loss(ce, weights).backward()
    assert torch.all(logits.grad[2] == 0)


def test_image_weights():
    assert image_weights([{"boxes": None}]) is None
    w = image_weights([{"weight": torch.tensor(0.5)}, {"weight": 1.5}], normalize=True)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5]))
    with pytest.raises(DequityError, match="some targets"):
        image_weights([{"weight": 1.0}, {}])


# per-box weights


def _with_box_weights(targets: list[dict], weights: list[list[float]]) -> list[dict]:
    return [
        {**t, "box_weights": torch.tensor(w, dtype=torch.float32).reshape(-1)}
        for t, w in zip(targets, weights, strict=True)
    ]


def _terms(model, images, targets) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(images, targets)


def _head_grads(model, images, targets) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The loss's gradient with respect to the head's outputs, and the anchors' matches."""
    head, seen = model.head, {}
    compute_loss = type(head).compute_loss

    def keep(targets, head_outputs, anchors, matched_idxs):
        seen["outputs"], seen["matched"] = head_outputs, matched_idxs
        for value in head_outputs.values():
            value.retain_grad()
        return compute_loss(head, targets, head_outputs, anchors, matched_idxs)

    head.compute_loss = keep
    try:
        model.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()
    finally:
        del head.compute_loss
    return {k: v.grad for k, v in seen["outputs"].items()}, seen["matched"]


def test_box_weights_of_one_give_torchvisions_loss_exactly(models):
    _, stock, weighted = models
    images, targets = _batch()
    ones = [[1.0, 1.0], [1.0], []]
    expected = _terms(stock, images, targets)
    for given in (
        _with_box_weights(targets, ones),
        _with_weights(_with_box_weights(targets, ones), [1.0] * 3),
    ):
        actual = _terms(weighted, images, given)
        assert actual.keys() == expected.keys()
        for name in expected:
            assert torch.equal(actual[name], expected[name]), name
    loss, grad = _grad(stock, images, targets)
    loss_1, grad_1 = _grad(weighted, images, _with_box_weights(targets, ones))
    assert torch.equal(loss_1, loss) and torch.equal(grad_1, grad)


def test_loss_is_affine_in_the_box_weights(models):
    _, _, weighted = models
    images, targets = _batch()
    u = [[0.2, 1.5], [0.7], []]
    v = [[1.0, 0.4], [2.5], []]
    loss_u = _terms(weighted, images, _with_box_weights(targets, u))
    loss_v = _terms(weighted, images, _with_box_weights(targets, v))
    for a in (0.3, 1.8):
        mixed = [[a * x + (1 - a) * y for x, y in zip(p, q, strict=True)] for p, q in zip(u, v)]
        loss_mixed = _terms(weighted, images, _with_box_weights(targets, mixed))
        for name, value in loss_mixed.items():
            torch.testing.assert_close(value, a * loss_u[name] + (1 - a) * loss_v[name])
    # only the classification term has background anchors: the others are linear
    zero = _terms(weighted, images, _with_box_weights(targets, [[0.0, 0.0], [0.0], []]))
    assert zero["classification"] > 0
    assert all(value == 0 for name, value in zero.items() if name != "classification")
    # with image weights too, an anchor of image i is weighted w_i * its box's weight
    both = _terms(weighted, images, _with_weights(_with_box_weights(targets, u), [0.5, 2.0, 1.0]))
    for a in (0.3, 1.8):
        mixed = [[a * x + (1 - a) * y for x, y in zip(p, q, strict=True)] for p, q in zip(u, v)]
        w = [0.5, 2.0, 1.0]
        loss_mixed = _terms(weighted, images, _with_weights(_with_box_weights(targets, mixed), w))
        loss_v_w = _terms(weighted, images, _with_weights(_with_box_weights(targets, v), w))
        for name, value in loss_mixed.items():
            torch.testing.assert_close(value, a * both[name] + (1 - a) * loss_v_w[name])


def test_box_weights_of_one_with_image_weights_match_the_image_weighted_loss(models):
    _, _, weighted = models
    images, targets = _batch()
    w = [0.25, 1.0, 0.75]
    expected = _terms(weighted, images, _with_weights(targets, w))
    ones = _with_weights(_with_box_weights(targets, [[1.0, 1.0], [1.0], []]), w)
    for name, value in _terms(weighted, images, ones).items():
        torch.testing.assert_close(value, expected[name])


def test_one_box_weight_scales_only_its_anchors(models):
    _, _, weighted = models
    images, targets = _batch()
    base, matched = _head_grads(
        weighted, images, _with_box_weights(targets, [[1.0, 1.0], [1.0], []])
    )
    changed, _ = _head_grads(weighted, images, _with_box_weights(targets, [[1.0, 3.0], [1.0], []]))
    box = torch.zeros(len(images), matched[0].shape[0], dtype=torch.bool)
    box[0] = matched[0] == 1  # the anchors matched to image 0's second box
    assert box.sum() > 0
    for name, grad in base.items():
        assert grad.shape[:2] == box.shape
        # every other anchor, background and other boxes alike, is untouched
        assert torch.equal(changed[name][~box], grad[~box]), name
        assert grad[box].abs().sum() > 0, name
        torch.testing.assert_close(changed[name][box], 3 * grad[box])


def test_background_only_images_are_unchanged(models):
    _, stock, weighted = models
    images, targets = _batch()
    stock_grads, _ = _head_grads(stock, images, targets)
    grads, _ = _head_grads(weighted, images, _with_box_weights(targets, [[0.3, 2.0], [0.6], []]))
    for name, grad in stock_grads.items():
        # image 2 has no boxes: its anchors are all background and keep weight 1
        assert grad[2].abs().sum() > 0 or name != "cls_logits"
        assert torch.equal(grads[name][2], grad[2]), name


def test_normalized_box_weights(models):
    _, stock, weighted = models
    images, targets = _batch()
    weighted.head.normalize_weights = True
    try:
        same = _terms(weighted, images, _with_box_weights(targets, [[0.4, 0.4], [0.4], []]))
        u = [[0.2, 1.5], [0.7], []]
        once = _terms(weighted, images, _with_box_weights(targets, u))
        twice = _terms(
            weighted, images, _with_box_weights(targets, [[2 * x for x in w] for w in u])
        )
    finally:
        weighted.head.normalize_weights = False
    expected = _terms(stock, images, targets)
    for name, value in expected.items():
        torch.testing.assert_close(same[name], value)
        torch.testing.assert_close(twice[name], once[name])


def test_box_weights_errors():
    boxes = torch.zeros(2, 4)
    assert box_weights([{"boxes": boxes}]) is None
    with pytest.raises(DequityError, match="one box weight per box"):
        box_weights([{"boxes": boxes, "box_weights": torch.ones(3)}])
    with pytest.raises(DequityError, match="some targets have 'box_weights'"):
        box_weights([{"boxes": boxes, "box_weights": torch.ones(2)}, {"boxes": boxes}])
    w = box_weights(
        [
            {"boxes": boxes, "box_weights": [0.5, 1.5]},
            {"boxes": torch.zeros(0, 4), "box_weights": []},
        ],
        normalize=True,
    )
    torch.testing.assert_close(torch.cat(w), torch.tensor([0.5, 1.5]))
    a = anchor_weights(
        [torch.tensor([-1, 0, 1, -2, 0])], [torch.tensor([0.5, 2.0])], torch.tensor([3.0])
    )
    torch.testing.assert_close(a[0], torch.tensor([3.0, 1.5, 6.0, 3.0, 1.5]))
