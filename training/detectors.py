"""Detectors: FCOS/RetinaNet on the offline EfficientNet-Lite backbone, or any torchvision one.

Names:

- ``"fcos_efficientnet_lite0"`` (default) and ``"retinanet_efficientnet_lite0"``
  (also ``lite1``/``lite2``): the ImageNet-pretrained EfficientNet-Lite
  features (strides 8, 16, 32; frozen batch norm) with a feature pyramid
  P3-P7. Work offline.
- any other name is passed to ``torchvision.models.get_model`` (e.g.
  ``"fcos_resnet50_fpn"``, ``"retinanet_resnet50_fpn_v2"``,
  ``"fasterrcnn_resnet50_fpn_v2"``), with ``weights``/``weights_backbone``
  as torchvision names them ("DEFAULT" downloads them). With COCO
  ``weights`` the class layer is replaced to fit ``num_classes``.

``num_classes`` counts the background: ``len(classes) + 1``.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from dequity.errors import DequityError
from dequity.sources.models import LITE_MEAN, LITE_STD

__all__ = ["DEFAULT_DETECTOR", "EfficientNetLiteFPN", "build_detector"]

DEFAULT_DETECTOR = "fcos_efficientnet_lite0"
_LITE = re.compile(r"^(fcos|retinanet)_efficientnet_lite([012])$")


class EfficientNetLiteFPN(nn.Module):
    """EfficientNet-Lite features (40/112/320 channels for lite0) with an FPN, P3-P7.

    Batch norm is frozen; with pretrained weights the stem and the first
    ``frozen_stages`` stages (strides 2 and 4) are frozen too.

    Example::

        backbone = EfficientNetLiteFPN(0)
        features = backbone(torch.rand(1, 3, 256, 256))  # 5 maps of 128 channels
    """

    def __init__(
        self,
        variant: int = 0,
        out_channels: int = 128,
        pretrained: bool = True,
        frozen_stages: int = 2,
    ) -> None:
        super().__init__()
        from timm.layers import freeze_batch_norm_2d

        if pretrained:
            from dequity.sources.models import efficientnet_lite

            body = efficientnet_lite(variant, features_only=True, out_indices=(2, 3, 4))
        else:
            import timm

            body = timm.create_model(
                f"tf_efficientnet_lite{variant}", features_only=True, out_indices=(2, 3, 4)
            )
        # batches of a few images give poor batch statistics; freezing them
        # also keeps the images of a batch independent of each other
        self.body = freeze_batch_norm_2d(body)
        # like torchvision's trainable_backbone_layers: the stem and the first
        # (high-resolution, generic) stages keep their ImageNet weights
        frozen = [self.body.conv_stem, self.body.bn1, *self.body.blocks[:frozen_stages]]
        for module in frozen if pretrained else ():
            module.requires_grad_(False)
        self.fpn = FeaturePyramidNetwork(
            self.body.feature_info.channels(),
            out_channels,
            extra_blocks=LastLevelP6P7(out_channels, out_channels),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def _lite_detector(
    kind: str,
    variant: int,
    num_classes: int,
    image_size: int,
    pretrained: bool,
    channels: int = 128,
    head_convs: int = 4,
) -> nn.Module:
    backbone = EfficientNetLiteFPN(variant, out_channels=channels, pretrained=pretrained)
    common = {
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": LITE_MEAN,
        "image_std": LITE_STD,
        "score_thresh": 0.05,
    }
    if kind == "fcos":
        head = FCOSHead(channels, 1, num_classes, num_convs=head_convs)
        return FCOS(backbone, num_classes, head=head, **common)
    if head_convs != 4:
        raise DequityError("head_convs applies to FCOS; RetinaNet's head has 4 convolutions")
    sizes = tuple(tuple(int(s * 2 ** (k / 3)) for k in range(3)) for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, **common)


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    head = getattr(getattr(model, "head", None), "classification_head", None)
    if head is not None and isinstance(getattr(head, "cls_logits", None), nn.Conv2d):
        old = head.cls_logits
        num_anchors = old.out_channels // head.num_classes
        new = nn.Conv2d(old.in_channels, num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(new.weight, std=0.01)
        nn.init.constant_(new.bias, -math.log((1 - 0.01) / 0.01))
        head.cls_logits, head.num_classes = new, num_classes
        return
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if predictor is not None and hasattr(predictor, "cls_score"):
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        model.roi_heads.box_predictor = FastRCNNPredictor(
            predictor.cls_score.in_features, num_classes
        )
        return
    raise DequityError(
        f"cannot fit the class layer of {type(model).__name__} to {num_classes} classes; "
        "use weights=None (train from scratch or from weights_backbone)"
    )


def build_detector(
    name: str = DEFAULT_DETECTOR,
    num_classes: int = 2,
    *,
    image_size: int = 512,
    weights: str | None = None,
    weights_backbone: str | None = None,
    pretrained_backbone: bool = True,
    channels: int = 128,
    head_convs: int = 4,
) -> nn.Module:
    """A torchvision detector for ``num_classes`` (background included), by name.

    ``image_size`` is the longest side the detector resizes images to.
    ``pretrained_backbone=False`` builds the EfficientNet-Lite detectors
    with random weights (tests). For the EfficientNet-Lite detectors,
    ``channels`` is the width of the feature pyramid and head (a multiple of
    32) and ``head_convs`` the number of convolutions in each FCOS head tower
    (torchvision's default 4; fewer make a lighter head).

    Example::

        model = build_detector("fcos_efficientnet_lite0", num_classes=4, image_size=320)
        light = build_detector("fcos_efficientnet_lite0", 4, image_size=128, channels=64,
                               head_convs=1)
        model = build_detector("retinanet_resnet50_fpn_v2", 4, weights="DEFAULT")  # downloads
    """
    if num_classes < 2:
        raise DequityError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    match = _LITE.match(name)
    if match:
        if weights is not None:
            raise DequityError(f"{name} has no detection weights; leave weights=None")
        return _lite_detector(
            match.group(1),
            int(match.group(2)),
            num_classes,
            image_size,
            pretrained_backbone,
            channels,
            head_convs,
        )
    if (channels, head_convs) != (128, 4):
        raise DequityError("channels and head_convs apply to the EfficientNet-Lite detectors")
    import torchvision

    if name not in torchvision.models.list_models(torchvision.models.detection):
        raise DequityError(
            f"unknown detector {name!r}; use {DEFAULT_DETECTOR!r}, "
            "'retinanet_efficientnet_lite0' or one of "
            "torchvision.models.list_models(torchvision.models.detection)"
        )
    kwargs: dict[str, Any] = {"weights": weights, "weights_backbone": weights_backbone}
    if weights is None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, **kwargs)
    if weights is not None:
        _replace_classifier(model, num_classes)
    transform = getattr(model, "transform", None)
    if transform is not None:
        transform.min_size, transform.max_size = (image_size,), image_size
    return model
