"""Training a detector's FPN and head on cached features of its frozen backbone.

With the backbone's body frozen (ImageNet weights, never updated), its
feature maps of an image never change: :func:`cached_features` computes
them once per image (and once more for its mirror image, the training
augmentation) and keeps them in memory and, given a folder, on disk. Training
then runs only the trainable part of torchvision's FCOS or RetinaNet (the
feature pyramid, the head, its loss) on those maps (:func:`head_forward`),
so thousands of steps fit on a CPU. The model stays the whole detector: its
checkpoint and :func:`training.evaluate.predict` work as for any other run,
and give the same detections as :func:`predict_features` up to float rounding.

Per-image and per-box weights multiply the loss exactly as in
:mod:`training.losses`: the targets carry them and the head's loss reads them.

Example::

    model = build_detector("fcos_efficientnet_lite0", 11, image_size=128)
    freeze_body(model)
    cache = cached_features(model, train_view, flips=True, folder=Path("/tmp/features"))
    data = FeatureDataset(cache, targets)            # items: (feature maps, target)
    losses = head_forward(model.train(), *stack_features(batch_maps), targets=batch_targets)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from dequity.errors import DequityError

__all__ = [
    "CachedFeatures",
    "FeatureDataset",
    "cached_features",
    "freeze_body",
    "head_forward",
    "predict_features",
    "stack_features",
]


def _body_and_pyramid(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    backbone = getattr(model, "backbone", None)
    body, fpn = getattr(backbone, "body", None), getattr(backbone, "fpn", None)
    if body is None or fpn is None or not hasattr(model, "compute_loss"):
        raise DequityError(
            f"a frozen, cached backbone needs a detector whose backbone has a body and an FPN "
            f"(the EfficientNet-Lite FCOS/RetinaNet, torchvision's *_fpn models), not "
            f"{type(model).__name__}"
        )
    return body, fpn


def freeze_body(model: nn.Module) -> nn.Module:
    """Freezes the backbone's body (every parameter); the FPN and head stay trainable.

    Example::

        params = [p for p in freeze_body(model).parameters() if p.requires_grad]
    """
    body, _ = _body_and_pyramid(model)
    body.requires_grad_(False)
    return model


@dataclass
class CachedFeatures:
    """The body's feature maps of a view's images, in the view's order.

    ``levels[k]`` holds level ``k`` for every image (``[N, C_k, H_k, W_k]``,
    float16 to halve the memory); ``mirrored`` the same for the mirrored
    images (None without ``flips``). ``image_sizes`` are the sizes after the
    detector's resize (the boxes' frame), ``original_sizes`` before it,
    ``padded_size`` the size of the batch tensor the body saw.
    """

    sample_ids: list[str]
    levels: list[torch.Tensor]
    mirrored: list[torch.Tensor] | None
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def maps(self, index: int, mirrored: bool = False) -> tuple[torch.Tensor, ...]:
        """Image ``index``'s feature maps (float32), optionally of its mirror image."""
        levels = self.mirrored if mirrored else self.levels
        if levels is None:
            raise DequityError("these features were cached without mirror images (flips=False)")
        return tuple(level[index].float() for level in levels)


def _cache_key(model_name: str, image_size: int, paths: list[str], flips: bool) -> str:
    stats = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in paths]
    blob = json.dumps([model_name, image_size, flips, stats])
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def _compute(
    model: nn.Module, images: list[torch.Tensor], flips: bool, batch_size: int
) -> dict[str, Any]:
    _body_and_pyramid(model)
    was_training = model.training
    model.eval()  # in training mode torchvision's resize draws from the global generator
    try:
        return _compute_maps(model, images, flips, batch_size)
    finally:
        model.train(was_training)


def _compute_maps(
    model: nn.Module, images: list[torch.Tensor], flips: bool, batch_size: int
) -> dict[str, Any]:
    body = model.backbone.body
    out: dict[str, Any] = {"levels": [], "mirrored": [] if flips else None, "image_sizes": []}
    padded: tuple[int, int] | None = None
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch, _ = model.transform(chunk)
        shape = tuple(batch.tensors.shape[-2:])
        if padded is not None and shape != padded:
            raise DequityError(
                "cached features need images of one size after the detector's resize; "
                f"got padded sizes {padded} and {shape}"
            )
        padded = shape
        out["levels"].append([f.half() for f in body(batch.tensors)])
        out["image_sizes"] += [tuple(s) for s in batch.image_sizes]
        if flips:
            mirror, _ = model.transform([image.flip(-1) for image in chunk])
            out["mirrored"].append([f.half() for f in body(mirror.tensors)])
    for key in ("levels", "mirrored"):
        if out[key] is not None:
            out[key] = [torch.cat(parts) for parts in zip(*out[key])]
    out["padded_size"] = padded
    return out


def cached_features(
    model: nn.Module,
    view: Any,
    *,
    model_name: str,
    image_size: int,
    flips: bool = False,
    folder: str | Path | None = None,
    batch_size: int = 32,
) -> CachedFeatures:
    """The frozen body's feature maps of every image of ``view`` (with ``flips``, mirrored too).

    ``model_name`` and ``image_size`` name the detector and its resize, which
    decide the maps. With ``folder`` the maps are saved there once, named by
    a hash of the detector, the size and the images' paths, sizes and
    modification times, and loaded from there by later calls (maps cached
    with ``flips`` also serve a call without).

    Example::

        cache = cached_features(model, view, model_name="fcos_efficientnet_lite0",
                                image_size=128, flips=True, folder="/tmp/features")
    """
    from training.datasets import load_image

    ids, paths = view.values(["id", "filepath"])
    path = None
    if folder is not None:
        path = Path(folder) / f"{_cache_key(model_name, image_size, paths, flips)}.pt"
        with_mirrors = Path(folder) / f"{_cache_key(model_name, image_size, paths, True)}.pt"
        for candidate in (path, with_mirrors):  # maps cached with mirrors serve without too
            if candidate.exists():
                saved = torch.load(candidate, map_location="cpu", weights_only=True)
                if saved["sample_ids"] == list(ids):
                    return _from_saved(saved)
    images = [load_image(p).as_subclass(torch.Tensor).float() / 255 for p in paths]
    sizes = [tuple(image.shape[-2:]) for image in images]
    out = _compute(model, images, flips, batch_size)
    out.update(sample_ids=list(ids), original_sizes=sizes)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")  # parallel runs may race
        torch.save(out, partial)
        os.replace(partial, path)
    return _from_saved(out)


def _from_saved(saved: dict[str, Any]) -> CachedFeatures:
    return CachedFeatures(
        sample_ids=list(saved["sample_ids"]),
        levels=list(saved["levels"]),
        mirrored=None if saved["mirrored"] is None else list(saved["mirrored"]),
        image_sizes=[tuple(s) for s in saved["image_sizes"]],
        original_sizes=[tuple(s) for s in saved["original_sizes"]],
        padded_size=tuple(saved["padded_size"]),
    )


class FeatureDataset(torch.utils.data.Dataset):
    """Training items ``(feature maps, target)``: cached maps and the view's targets.

    ``targets`` are the detection dataset's targets (boxes in the original
    image's pixels), in the cache's order; their boxes are scaled to the
    detector's resize, and ``image_size`` (the resized size) is added. With
    ``flip`` (and mirrored maps cached), each item is mirrored with
    probability 0.5 (the global torch generator, so seeded runs repeat), its
    boxes with it.

    Example::

        data = FeatureDataset(cache, [target for _, target in detection_dataset(view)])
    """

    def __init__(
        self, cache: CachedFeatures, targets: Sequence[dict[str, Any]], flip: bool = True
    ) -> None:
        if len(targets) != len(cache):
            raise DequityError(f"{len(targets)} targets for {len(cache)} cached images")
        self.cache, self.flip = cache, flip and cache.mirrored is not None
        self.targets = [self._scaled(i, t) for i, t in enumerate(targets)]

    def _scaled(self, index: int, target: dict[str, Any]) -> dict[str, Any]:
        (h0, w0), (h, w) = self.cache.original_sizes[index], self.cache.image_sizes[index]
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0], dtype=torch.float32)
        return {**target, "boxes": target["boxes"].float() * scale, "image_size": (h, w)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        target = self.targets[index]
        mirrored = self.flip and bool(torch.rand(()) < 0.5)
        if mirrored:
            width = self.cache.image_sizes[index][1]
            boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1])
            target = {**target, "boxes": boxes + torch.tensor([width, 0.0, width, 0])}
        return self.cache.maps(index, mirrored), target


def stack_features(
    items: Sequence[tuple[torch.Tensor, ...]],
) -> list[torch.Tensor]:
    """A batch of per-image feature maps as one tensor per level.

    Example::

        maps, targets = collate_detection([data[0], data[1]])
        levels = stack_features(maps)
    """
    return [torch.stack(level) for level in zip(*items)]


def head_forward(
    model: nn.Module,
    levels: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    padded_size: tuple[int, int],
    targets: list[dict[str, Any]] | None = None,
    original_sizes: list[tuple[int, int]] | None = None,
) -> Any:
    """The detector after its body: FPN, head, anchors, then the loss or the detections.

    In training mode returns torchvision's loss dict for ``targets`` (boxes in
    the resized frame); in eval mode the detections, in the frame of
    ``original_sizes`` (default: the resized frame). This is the rest of
    torchvision's FCOS/RetinaNet ``forward`` unchanged.

    Example::

        losses = head_forward(model.train(), levels, cache.image_sizes[:8], cache.padded_size,
                              targets)
    """
    _, fpn = _body_and_pyramid(model)
    pyramid = list(fpn(OrderedDict((str(i), f) for i, f in enumerate(levels))).values())
    head_outputs = model.head(pyramid)
    batch = len(image_sizes)
    images = ImageList(levels[0].new_zeros(()).expand(batch, 3, *padded_size), image_sizes)
    anchors = model.anchor_generator(images, pyramid)
    per_level = [x.size(2) * x.size(3) for x in pyramid]
    if model.training:
        if targets is None:
            raise DequityError("training needs targets")
        if hasattr(model, "center_sampling_radius"):  # FCOS counts anchors per level
            return model.compute_loss(targets, head_outputs, anchors, per_level)
        return model.compute_loss(targets, head_outputs, anchors)
    if not hasattr(model, "center_sampling_radius"):  # RetinaNet: anchors per location
        per_level = [n * (head_outputs["cls_logits"].size(1) // sum(per_level)) for n in per_level]
    split = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
    split_anchors = [list(a.split(per_level)) for a in anchors]
    detections = model.postprocess_detections(split, split_anchors, image_sizes)
    return model.transform.postprocess(detections, image_sizes, original_sizes or image_sizes)


@torch.no_grad()
def predict_features(
    model: nn.Module, cache: CachedFeatures, batch_size: int = 64
) -> list[dict[str, torch.Tensor]]:
    """The detector's detections for every cached image, in the original images' pixels.

    Example::

        outputs = predict_features(model, cached_features(model, test_view, ...))
        outputs[0]["boxes"], outputs[0]["labels"], outputs[0]["scores"]
    """
    model.eval()
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(cache), batch_size):
        rows = slice(start, start + batch_size)
        levels = [level[rows].float() for level in cache.levels]
        out += head_forward(
            model,
            levels,
            cache.image_sizes[rows],
            cache.padded_size,
            original_sizes=cache.original_sizes[rows],
        )
    return out
