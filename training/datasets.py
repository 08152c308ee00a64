"""PyTorch datasets built from FiftyOne views, carrying the dequity weights.

Both datasets are ``view.to_torch(get_item)`` datasets
(:class:`fiftyone.utils.torch.FiftyOneTorchDataset`): they read the sample
fields through FiftyOne and are safe with ``DataLoader`` workers when the
loader is given ``worker_init_fn=FiftyOneTorchDataset.worker_init``.

Detection items are ``(image, target)`` in torchvision's detection format:
``image`` a float tensor ``[3, H, W]`` in ``[0, 1]``; ``target`` a dict with
``boxes`` (absolute ``xyxy`` pixels, float32 ``[N, 4]``, ``[0, 4]`` for an
image without boxes), ``labels`` (int64 ``[N]``, the 1-based position of the
label in ``classes``; 0 is the background), ``weight`` and ``likelihood``
(float32 scalars; the likelihood is NaN when the view has none) and
``sample_id`` (str). After the transforms, boxes are clamped to the image and
those under 1 pixel wide or high are dropped with their labels
(``transforms.v2.SanitizeBoundingBoxes``).

With ``weight_level="object"`` the weights are per box: the target also
holds ``box_weights`` (float32 ``[N]``, aligned with ``boxes`` and dropped
with them), read from the attribute named like the weight field
(``<run_key>_weight``) on each ``Detection`` of the label field; ``weight`` is
then 1 and ``likelihood`` NaN (the sample's weight, the largest of its
objects', serves sorting, not training). A box without the attribute is an
error unless ``missing_box_weight`` gives its weight.

Classification items are ``(image, label, weight)`` with a 0-based int64
label, ready for ``cross_entropy(..., reduction="none")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fiftyone.utils.torch import FiftyOneTorchDataset, GetItem
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from dequity.errors import DequityError
from dequity.pipeline.weights import DEFAULT_ETA, DEFAULT_GAMMA, gfl_weight
from dequity.store import compat as fc
from dequity.store.names import METHOD as DEQUITY_METHOD
from dequity.store.names import field_names

DEFAULT_WEIGHT_FIELD = "dequity_weight"
WEIGHT_LEVELS = ("image", "object")

__all__ = [
    "ClassificationGetItem",
    "DetectionGetItem",
    "FiftyOneTorchDataset",
    "WEIGHT_LEVELS",
    "check_weight_level",
    "classification_dataset",
    "collate_detection",
    "detection_dataset",
    "detection_transforms",
    "likelihood_field_for",
    "load_image",
    "resolve_classes",
    "sample_weight",
]


def detection_transforms(train: bool = True) -> v2.Compose:
    """Default box-aware transforms: a random horizontal flip when training.

    Boxes travel with the image because targets hold
    :class:`torchvision.tv_tensors.BoundingBoxes`; any ``transforms.v2``
    pipeline can replace this one. Resizing is left to the detector.

    Example::

        ds = detection_dataset(view, classes=["car"], transforms=detection_transforms(True))
    """
    steps: list[Any] = [v2.RandomHorizontalFlip(0.5)] if train else []
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def _per_box(inputs: tuple[Any, dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """The target's tensors with one entry per box, dropped with their boxes."""
    target = inputs[1]
    return tuple(target[key] for key in ("labels", "box_weights") if key in target)


# run after any transforms: torchvision's detectors need boxes of positive size
_SANITIZE = v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_per_box)])


def likelihood_field_for(view: Any, weight_field: str | None) -> str | None:
    """The likelihood field of the dequity run that wrote ``weight_field``, read from its config.

    None when no dequity run on the view's dataset wrote ``weight_field``.

    Example::

        likelihood_field_for(dataset, "dequity_weight")  # 'dequity_likelihood'
    """
    dataset = fc.root_dataset(view)
    for key in dataset.list_runs(method=DEQUITY_METHOD) if weight_field else ():
        config = dataset.get_run_info(key).config
        if config.weight_field == weight_field:
            return config.likelihood_field
    return None


def _run_key_writing(weight_field: str) -> str | None:
    """The key of a dequity run that would write ``weight_field``, for a hint."""
    key = weight_field.rpartition("_")[0]
    return key if key and field_names(key)["weight"] == weight_field else None


def load_image(path: str) -> tv_tensors.Image:
    """The image file at ``path`` as an RGB ``uint8`` tensor ``[3, H, W]``.

    Example::

        image = load_image("frame.jpg")  # uint8, [3, H, W]
    """
    with Image.open(path) as img:
        return tv_tensors.Image(F.pil_to_tensor(img.convert("RGB")))


def check_weight_level(weight_level: str) -> str:
    """``weight_level`` if it is ``"image"`` or ``"object"``; a DequityError otherwise.

    Example::

        check_weight_level("object")  # 'object'
    """
    if weight_level not in WEIGHT_LEVELS:
        raise DequityError(
            f"weight_level must be 'image' (one weight per image) or 'object' (one per "
            f"box), got {weight_level!r}"
        )
    return weight_level


def _box_value(det: Any, attribute: str) -> float | None:
    value = det.get_field(attribute) if det.has_field(attribute) else None
    return None if value is None else float(value)


def sample_weight(d: dict, eta: float | None, gamma: float | None) -> tuple[float, float]:
    """``(weight, likelihood)`` of a sample given as a dict of its fields.

    ``d`` holds ``id`` and optionally ``weight`` and ``likelihood``. With
    ``eta`` or ``gamma`` the weight is recomputed from the likelihood; else it
    is ``d["weight"]``, or 1.0 without that key. The likelihood is NaN when
    ``d`` has none.

    Example::

        sample_weight({"id": "a1", "weight": 0.7}, None, None)  # (0.7, nan)
    """
    likelihood = d.get("likelihood")
    likelihood = math.nan if likelihood is None else float(likelihood)
    if eta is not None or gamma is not None:
        if math.isnan(likelihood):
            raise DequityError(
                f"sample {d.get('id')} has no likelihood to recompute its weight "
                "from; run `dequity compute` (dequity.compute_dequity) on the whole view"
            )
        weight = gfl_weight(
            likelihood,
            DEFAULT_ETA if eta is None else eta,
            DEFAULT_GAMMA if gamma is None else gamma,
        )
    elif "weight" in d:
        if d["weight"] is None:
            raise DequityError(
                f"sample {d.get('id')} has no weight; run `dequity compute` "
                "(dequity.compute_dequity) on the whole view, or train without weights"
            )
        weight = float(d["weight"])
    else:
        weight = 1.0
    return weight, likelihood


class DetectionGetItem(GetItem):
    """Turns a sample's fields into a torchvision detection ``(image, target)``.

    Args:
        classes: class names; a label's index in this list plus one is its id
        label_field: a ``Detections`` field, or None for images only (inference)
        weight_field: the per-sample weight field (at object level: the
            per-``Detection`` attribute), or None for weight 1
        likelihood_field: the likelihood field (at object level: attribute), or None
        eta, gamma: if either is set, the weight is recomputed from the
            likelihood with :func:`dequity.pipeline.weights.gfl_weight`
        transforms: a ``transforms.v2`` callable ``(image, target) -> (image, target)``
        weight_level: ``"image"`` or ``"object"`` (``box_weights`` in the target)
        missing_box_weight: at object level, the weight of a box without one;
            None makes such a box an error

    Example::

        get_item = DetectionGetItem(["person", "car"], "ground_truth", "dequity_weight")
        torch_dataset = view.to_torch(get_item)
        per_box = DetectionGetItem(["person", "car"], weight_level="object")
    """

    def __init__(
        self,
        classes: Sequence[str],
        label_field: str | None = "ground_truth",
        weight_field: str | None = DEFAULT_WEIGHT_FIELD,
        likelihood_field: str | None = None,
        *,
        eta: float | None = None,
        gamma: float | None = None,
        transforms: Callable | None = None,
        weight_level: str = "image",
        missing_box_weight: float | None = None,
    ) -> None:
        self.classes = list(classes)
        self.class_ids = {name: i + 1 for i, name in enumerate(self.classes)}
        self.eta, self.gamma = eta, gamma
        self.transforms = transforms if transforms is not None else detection_transforms(False)
        self.weight_level = check_weight_level(weight_level)
        self.missing_box_weight = missing_box_weight
        recompute = eta is not None or gamma is not None
        # at object level the weight and likelihood are attributes of each Detection
        self.box_attribute: str | None = None
        if weight_level == "object":
            self.box_attribute = likelihood_field if recompute else weight_field
            weight_field = likelihood_field = None
            if self.box_attribute is None:
                raise DequityError(
                    "weight_level='object' reads each box's weight from an attribute of its "
                    "Detection; pass weight_field (or likelihood_field with eta/gamma)"
                )
        self._fields = {"id": "id", "filepath": "filepath"}
        for key, field in (
            ("detections", label_field),
            ("weight", None if recompute else weight_field),
            ("likelihood", likelihood_field),
        ):
            if field:
                self._fields[key] = field
        super().__init__(field_mapping=self._fields)

    @property
    def required_keys(self) -> list[str]:
        return list(self._fields)

    def _label_id(self, label: str | None, sample_id: str) -> int:
        try:
            return self.class_ids[label]
        except KeyError:
            raise DequityError(
                f"sample {sample_id} has label {label!r}, which is not in the classes "
                f"{self.classes}; add it to the classes or filter it out with "
                "view.filter_labels(...)"
            ) from None

    def _box_weights(self, dets: list, sample_id: str) -> torch.Tensor:
        """One weight per box, read from (or recomputed from) each Detection's attribute."""
        attribute = self.box_attribute
        values = [_box_value(det, attribute) for det in dets]
        missing = sum(v is None for v in values)
        if missing and self.missing_box_weight is None:
            raise DequityError(
                f"sample {sample_id}: {missing} of its {len(dets)} boxes have no "
                f"{attribute!r} attribute; "
                f"{_object_run_hint(attribute)}, or give those boxes a weight with "
                "missing_box_weight (--missing-box-weight)"
            )
        if self.eta is not None or self.gamma is not None:
            eta = DEFAULT_ETA if self.eta is None else self.eta
            gamma = DEFAULT_GAMMA if self.gamma is None else self.gamma
            values = [None if v is None else float(gfl_weight(v, eta, gamma)) for v in values]
        weights = [self.missing_box_weight if v is None else v for v in values]
        return torch.tensor(weights, dtype=torch.float32).reshape(-1)

    def __call__(self, d: dict) -> tuple[torch.Tensor, dict[str, Any]]:
        image = load_image(d["filepath"])
        height, width = image.shape[-2:]
        dets = d.get("detections")
        dets = dets.detections if dets is not None else []
        boxes = torch.tensor([det.bounding_box for det in dets], dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        labels = torch.tensor(
            [self._label_id(det.label, d["id"]) for det in dets], dtype=torch.int64
        )
        if self.box_attribute is None:
            weight, likelihood = sample_weight(d, self.eta, self.gamma)
        else:
            weight, likelihood = 1.0, math.nan
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                box_convert(boxes, "xywh", "xyxy") * scale,
                format="XYXY",
                canvas_size=(height, width),
            ),
            "labels": labels,
        }
        if self.box_attribute is not None:
            target["box_weights"] = self._box_weights(dets, d["id"])
        image, target = _SANITIZE(*self.transforms(image, target))
        out = {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
            "weight": torch.tensor(weight, dtype=torch.float32),
            "likelihood": torch.tensor(likelihood, dtype=torch.float32),
            "sample_id": d["id"],
        }
        if "box_weights" in target:
            out["box_weights"] = target["box_weights"]
        return image.as_subclass(torch.Tensor), out


class ClassificationGetItem(GetItem):
    """Turns a sample into ``(image, label, weight)`` for image classification.

    Example::

        get_item = ClassificationGetItem(["cat", "dog"], "ground_truth", "dequity_weight")
        loader = DataLoader(view.to_torch(get_item), batch_size=8)
    """

    def __init__(
        self,
        classes: Sequence[str],
        label_field: str = "ground_truth",
        weight_field: str | None = DEFAULT_WEIGHT_FIELD,
        *,
        transforms: Callable | None = None,
    ) -> None:
        self.classes = list(classes)
        self.class_ids = {name: i for i, name in enumerate(self.classes)}
        self.transforms = transforms or v2.ToDtype(torch.float32, scale=True)
        self._fields = {"id": "id", "filepath": "filepath", "label": label_field}
        if weight_field:
            self._fields["weight"] = weight_field
        super().__init__(field_mapping=self._fields)

    @property
    def required_keys(self) -> list[str]:
        return list(self._fields)

    def __call__(self, d: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        label = getattr(d["label"], "label", None)
        if label not in self.class_ids:
            raise DequityError(
                f"sample {d['id']} has label {label!r}, which is not in the classes "
                f"{self.classes}; add it to the classes or filter the view"
            )
        weight, _ = sample_weight(d, None, None)
        image = self.transforms(load_image(d["filepath"]))
        return (
            image.as_subclass(torch.Tensor),
            torch.tensor(self.class_ids[label], dtype=torch.int64),
            torch.tensor(weight, dtype=torch.float32),
        )


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Collates detection items into ``(images, targets)`` lists.

    Example::

        DataLoader(ds, batch_size=4, collate_fn=collate_detection,
                   worker_init_fn=FiftyOneTorchDataset.worker_init)
    """
    for item in batch:
        if isinstance(item, Exception):
            raise item
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


def _field_type(view: Any, field: str) -> Any:
    return view.get_field(field)


def _object_run_hint(attribute: str) -> str:
    """How to compute the per-object weights that ``attribute`` should hold."""
    run_key = _run_key_writing(attribute)
    key = repr(run_key) if run_key else "..."
    return (
        f"compute per-object weights with dequity.compute_dequity(dataset, run_key={key}, "
        "patches_field=<the label field>)"
    )


def _check_box_attribute(
    view: Any, label_field: str, attribute: str, missing_box_weight: float | None
) -> None:
    """Every box of the view has ``attribute``, unless ``missing_box_weight`` covers them."""
    total = view.count(f"{label_field}.detections")
    missing = total - view.count(f"{label_field}.detections.{attribute}")
    if missing and missing_box_weight is None:
        raise DequityError(
            f"{missing} of the {total} boxes of {label_field!r} in the view have no "
            f"{attribute!r} attribute; {_object_run_hint(attribute)}, or pass "
            "missing_box_weight=1.0 (--missing-box-weight 1) to train those boxes unweighted"
        )


def _check_weight_field(view: Any, weight_field: str) -> None:
    if _field_type(view, weight_field) is None:
        run_key = _run_key_writing(weight_field)
        how = (
            f"`dequity compute --dataset {fc.root_dataset(view).name} --run-key {run_key}` "
            f"or dequity.compute_dequity(dataset, run_key={run_key!r})"
            if run_key
            else "`dequity compute` or dequity.compute_dequity(dataset)"
        )
        raise DequityError(
            f"the weight field {weight_field!r} does not exist on dataset "
            f"{fc.root_dataset(view).name!r}; compute the weights first with {how}, "
            "or pass weight_field=None (--weight-field none) to train without weights"
        )
    missing = len(view) - view.count(weight_field)
    if missing:
        raise DequityError(
            f"{missing} samples of the view have no {weight_field!r}; recompute the "
            "weights on the whole dataset with `dequity compute` (dequity.compute_dequity)"
        )


def resolve_classes(view: Any, label_field: str, classes: Sequence[str] | None = None) -> list[str]:
    """The class list: ``classes`` checked against the view's labels, or all of them sorted.

    Raises :class:`DequityError` when a label of the view is not in ``classes``.

    Example::

        classes = resolve_classes(dataset, "ground_truth")  # ['car', 'person', 'truck']
    """
    field = _field_type(view, label_field)
    if field is None:
        raise DequityError(
            f"the label field {label_field!r} does not exist on dataset "
            f"{fc.root_dataset(view).name!r}; pass the name of a Detections field"
        )
    import fiftyone.core.labels as fol

    doc_type = getattr(field, "document_type", None)
    if doc_type is fol.Detections:
        path = f"{label_field}.detections.label"
    elif doc_type is fol.Classification:
        path = f"{label_field}.label"
    else:
        raise DequityError(
            f"{label_field!r} holds {getattr(doc_type, '__name__', field)}; pass a "
            "Detections field (detection) or a Classification field (classification)"
        )
    present = [c for c in view.distinct(path) if c is not None]
    if classes is None:
        return sorted(present)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DequityError(
            f"labels {unknown} of {label_field!r} are not in the classes {list(classes)}; "
            "add them to the classes or filter them out with view.filter_labels(...)"
        )
    return list(classes)


def detection_dataset(
    view: Any,
    label_field: str | None = "ground_truth",
    classes: Sequence[str] | None = None,
    *,
    weight_field: str | None = DEFAULT_WEIGHT_FIELD,
    likelihood_field: str | None = None,
    eta: float | None = None,
    gamma: float | None = None,
    transforms: Callable | None = None,
    train: bool = False,
    vectorize: bool = False,
    weight_level: str = "image",
    missing_box_weight: float | None = None,
) -> FiftyOneTorchDataset:
    """A torch dataset of torchvision detection items from a FiftyOne view.

    Checks the fields first: a missing weight field names the run to compute,
    an unknown label names the fix. ``likelihood_field`` defaults to the one
    the dequity run that wrote ``weight_field`` wrote beside it (from the run's
    config), when it exists. ``eta``/``gamma`` recompute the
    weight from the likelihood. ``train`` picks the default augmentation.

    ``weight_level="object"`` weights boxes instead of images: each target
    gets ``box_weights`` from the ``weight_field`` attribute of each
    ``Detection`` in ``label_field`` (or recomputed from the
    ``likelihood_field`` attribute with ``eta``/``gamma``). Boxes without it
    are an error, or get ``missing_box_weight`` when it is given.

    Example::

        ds = detection_dataset(dataset, "ground_truth", ["person", "car", "truck"])
        loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_detection,
                            worker_init_fn=FiftyOneTorchDataset.worker_init)
        per_box = detection_dataset(dataset, "ground_truth", weight_level="object")
    """
    check_weight_level(weight_level)
    if weight_level == "object":
        return _object_dataset(
            view,
            label_field,
            classes,
            weight_field=weight_field,
            likelihood_field=likelihood_field,
            eta=eta,
            gamma=gamma,
            transforms=transforms if transforms is not None else detection_transforms(train),
            vectorize=vectorize,
            missing_box_weight=missing_box_weight,
        )
    if label_field is not None:
        classes = resolve_classes(view, label_field, classes)
    elif classes is None:
        classes = []
    likelihood_field = check_image_weights(view, weight_field, likelihood_field, eta, gamma)
    get_item = DetectionGetItem(
        classes,
        label_field,
        weight_field,
        likelihood_field,
        eta=eta,
        gamma=gamma,
        transforms=transforms if transforms is not None else detection_transforms(train),
    )
    return view.to_torch(get_item, vectorize=vectorize)


def check_image_weights(
    view: Any,
    weight_field: str | None,
    likelihood_field: str | None,
    eta: float | None,
    gamma: float | None,
) -> str | None:
    """Checks the sample fields that per-image weights come from; returns the likelihood field.

    Without ``likelihood_field``, the likelihood field of the dequity run that
    wrote ``weight_field`` is used where the view has it. With ``eta`` or
    ``gamma`` the weights are recomputed from the likelihood, which must then
    exist; otherwise ``weight_field`` (if any) is checked.

    Example::

        likelihood = check_image_weights(view, "dequity_weight", None, eta=0.5, gamma=2.0)
    """
    if likelihood_field is None:
        candidate = likelihood_field_for(view, weight_field)
        if candidate and _field_type(view, candidate) is not None:
            likelihood_field = candidate
    if eta is not None or gamma is not None:
        if likelihood_field is None or _field_type(view, likelihood_field) is None:
            raise DequityError(
                "eta/gamma recompute the weights from the likelihood, but the view has "
                f"no likelihood field {likelihood_field!r}; run `dequity compute` first"
            )
        _check_weight_field(view, likelihood_field)
    elif weight_field is not None:
        _check_weight_field(view, weight_field)
    return likelihood_field


def _object_dataset(
    view: Any,
    label_field: str | None,
    classes: Sequence[str] | None,
    *,
    weight_field: str | None,
    likelihood_field: str | None,
    eta: float | None,
    gamma: float | None,
    transforms: Callable,
    vectorize: bool,
    missing_box_weight: float | None,
) -> FiftyOneTorchDataset:
    """:func:`detection_dataset` at object level: checks the boxes' attributes first."""
    if label_field is None:
        raise DequityError(
            "weight_level='object' weights boxes; pass the label_field that has them"
        )
    if missing_box_weight is not None and not (
        math.isfinite(missing_box_weight) and missing_box_weight >= 0
    ):
        raise DequityError(f"missing_box_weight must be finite and >= 0, got {missing_box_weight}")
    classes = resolve_classes(view, label_field, classes)
    recompute = eta is not None or gamma is not None
    if recompute and likelihood_field is None:
        likelihood_field = likelihood_field_for(view, weight_field)
        if likelihood_field is None:
            raise DequityError(
                f"eta/gamma recompute each box's weight from its likelihood, but no dequity "
                f"run wrote {weight_field!r}; pass likelihood_field (the Detection attribute)"
            )
    attribute = likelihood_field if recompute else weight_field
    if attribute is not None:
        _check_box_attribute(view, label_field, attribute, missing_box_weight)
    get_item = DetectionGetItem(
        classes,
        label_field,
        weight_field,
        likelihood_field,
        eta=eta,
        gamma=gamma,
        transforms=transforms,
        weight_level="object" if attribute is not None else "image",
        missing_box_weight=missing_box_weight,
    )
    return view.to_torch(get_item, vectorize=vectorize)


def classification_dataset(
    view: Any,
    label_field: str = "ground_truth",
    classes: Sequence[str] | None = None,
    *,
    weight_field: str | None = DEFAULT_WEIGHT_FIELD,
    transforms: Callable | None = None,
    vectorize: bool = False,
) -> FiftyOneTorchDataset:
    """A torch dataset of ``(image, label, weight)`` from a view with a Classification field.

    Example::

        ds = classification_dataset(dataset, "ground_truth", weight_field="dequity_weight")
        image, label, weight = ds[0]
    """
    classes = resolve_classes(view, label_field, classes)
    if weight_field is not None:
        _check_weight_field(view, weight_field)
    get_item = ClassificationGetItem(classes, label_field, weight_field, transforms=transforms)
    return view.to_torch(get_item, vectorize=vectorize)
