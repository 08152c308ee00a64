"""Per-image weights in Ultralytics YOLO training, through its public extension points.

Ultralytics' detection loss (``v8DetectionLoss``) sums each term over the
batch's anchors and divides by one batch-wide normaliser, the sum of the
assigned target scores ``T``. The weighted loss multiplies image ``i``'s
anchors by its weight ``w_i`` before those sums and keeps ``T`` unweighted::

    L = sum_i w_i * S_i / T     (each of box, classification and DFL, times its gain)

where ``S_i`` is image ``i``'s summed term, as for FCOS in
:mod:`training.losses`. All weights 1 give Ultralytics' loss exactly, and
weight 0 removes an image from the gradient. ``normalize=True`` divides the
weights by their batch mean first.

The weights travel with each image through Ultralytics' data loader: the
trainer writes them into the dataset's label records (``label["weight"]``,
looked up by image path), the loader's collate function keeps them as the
batch's ``"weight"`` entry, and :class:`WeightedDetectionLoss` reads them.
Composite augmentations (mosaic, mixup, cutmix, copy-paste) are turned off,
since an image made of four has no single weight.

Importing this module sets ``YOLO_OFFLINE=1`` unless the variable is set, so
Ultralytics makes no network checks, and it undoes the numpy and torch print
options that importing Ultralytics changes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import WeightedRandomSampler  # noqa: E402

# Importing Ultralytics sets process-wide numpy and torch print options; keep the user's.
_numpy_print_options = np.get_printoptions()
from ultralytics import YOLO  # noqa: E402

np.set_printoptions(**_numpy_print_options)
torch.set_printoptions(profile="default")
from ultralytics.data.build import InfiniteDataLoader, seed_worker  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils import DEFAULT_CFG  # noqa: E402
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402

from dequity.errors import DequityError  # noqa: E402

__all__ = [
    "NO_COMPOSITES",
    "YOLO",
    "WeightedDetectionLoss",
    "WeightedDetectionModel",
    "WeightedDetectionTrainer",
    "image_key",
]

#: Ultralytics settings that keep every training image a single image
NO_COMPOSITES = {"mosaic": 0.0, "mixup": 0.0, "cutmix": 0.0, "copy_paste": 0.0}


def image_key(path: str | os.PathLike) -> str:
    """The key of an image file in a weight lookup: its real absolute path.

    Example::

        weights = {image_key(p): w for p, w in zip(paths, values)}
    """
    return os.path.realpath(os.fspath(path))


def _per_image(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``values`` (batch first) times each image's weight."""
    if weights is None:
        return values
    return values * weights.to(values.dtype).view(-1, *([1] * (values.ndim - 1)))


class _WeightedBCE:
    """Ultralytics' per-element BCE, each image's elements times its weight."""

    def __init__(self, bce: Any) -> None:
        self.bce = bce
        self.weights: torch.Tensor | None = None

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _per_image(self.bce(pred, target), self.weights)


class _WeightedBboxLoss(torch.nn.Module):
    """Ultralytics' box and DFL loss with each image's target scores times its weight.

    The target scores are the anchors' factors in both terms; the normaliser
    (their sum over the batch) is passed in unweighted.
    """

    def __init__(self, bbox_loss: torch.nn.Module) -> None:
        super().__init__()
        self.inner = bbox_loss
        self.weights: torch.Tensor | None = None

    def forward(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, *rest):
        scores = _per_image(target_scores, self.weights)
        return self.inner(pred_dist, pred_bboxes, anchor_points, target_bboxes, scores, *rest)


class WeightedDetectionLoss(v8DetectionLoss):
    """``v8DetectionLoss`` with each image's terms multiplied by ``batch["weight"]``.

    Example::

        criterion = WeightedDetectionLoss(model)
        loss, items = criterion(preds, {**batch, "weight": torch.tensor([1.0, 0.5])})
    """

    def __init__(self, model: torch.nn.Module, *, normalize: bool = False, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.normalize = normalize
        self.bce = _WeightedBCE(self.bce)
        self.bbox_loss = _WeightedBboxLoss(self.bbox_loss)

    def loss(self, preds: dict[str, torch.Tensor], batch: dict[str, Any]):  # noqa: D102
        batch_size = preds["boxes"].shape[0]
        if "weight" not in batch:
            raise DequityError(
                "the batch has no 'weight'; train with training.train_yolo or "
                "WeightedDetectionTrainer, whose datasets carry one weight per image"
            )
        weights = batch["weight"]
        if not torch.is_tensor(weights):
            weights = torch.stack([torch.as_tensor(w, dtype=torch.float32) for w in weights])
        weights = weights.detach().to(self.device, torch.float32).reshape(-1)
        if weights.numel() != batch_size:
            raise DequityError(
                f"need one weight per image: the batch has {batch_size} images and "
                f"{weights.numel()} weights"
            )
        if self.normalize and float(weights.mean()) > 0:
            weights = weights / weights.mean()
        self.last_mean_weight = float(weights.mean())
        self.bce.weights = self.bbox_loss.weights = weights
        try:
            return super().loss(preds, batch)
        finally:
            self.bce.weights = self.bbox_loss.weights = None


class WeightedDetectionModel(DetectionModel):
    """A YOLO ``DetectionModel`` whose criterion is :class:`WeightedDetectionLoss`.

    Example::

        model = WeightedDetectionModel("yolov8n.yaml", nc=3, verbose=False)
    """

    normalize_weights = False

    def init_criterion(self) -> WeightedDetectionLoss:  # noqa: D102
        if getattr(self.model[-1], "one2one_cv2", None) is not None:
            raise DequityError(
                "per-image weights support YOLO detectors with the v8 detection loss "
                "(yolov8*.yaml, yolo11*.yaml); end-to-end heads (yolo26, yolov10) are not supported"
            )
        return WeightedDetectionLoss(self, normalize=self.normalize_weights)


class WeightedDetectionTrainer(DetectionTrainer):
    """Ultralytics' detection trainer with per-image weights (and optional weighted sampling).

    ``image_weights`` maps an image's :func:`image_key` to its loss weight;
    every training image needs one (validation images default to 1).
    ``sampling`` maps image keys to draw weights: each epoch then draws as
    many training images as there are, with replacement, each with
    probability proportional to its draw weight.

    Example::

        trainer = WeightedDetectionTrainer(
            overrides={"model": "yolov8n.yaml", "data": "data/dataset.yaml", "epochs": 1,
                       "imgsz": 128, "device": "cpu", "plots": False, "amp": False},
            image_weights={image_key(p): w for p, w in weights.items()})
        trainer.train()
    """

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: Any = None,
        *,
        image_weights: Mapping[str, float],
        sampling: Mapping[str, float] | None = None,
        normalize: bool = False,
        seed: int = 0,
    ) -> None:
        self.image_weights = dict(image_weights)
        self.sampling = None if sampling is None else dict(sampling)
        self.normalize = normalize
        self.sampling_seed = seed
        super().__init__(cfg, {**(overrides or {}), **NO_COMPOSITES}, _callbacks)

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True):  # noqa: D102
        model = WeightedDetectionModel(
            cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=False
        )
        model.normalize_weights = self.normalize
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model

    def _weight_of(self, path: str, mode: str, table: Mapping[str, float]) -> float:
        key = image_key(path)
        if key in table:
            return float(table[key])
        if mode != "train":
            return 1.0
        raise DequityError(
            f"training image {path} has no weight; export the data with "
            "training.yolo.export_yolo, which writes the weights beside the images"
        )

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):  # noqa: D102
        dataset = super().build_dataset(img_path, mode, batch)
        for label in dataset.labels:
            label["weight"] = self._weight_of(label["im_file"], mode, self.image_weights)
        return dataset

    def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):  # noqa: D102
        if mode != "train" or self.sampling is None:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        if rank != -1:
            raise DequityError("weighted sampling runs on one device; drop sampling for DDP")
        dataset = self.build_dataset(dataset_path, mode, batch_size)
        draw = torch.tensor(
            [self._weight_of(lb["im_file"], mode, self.sampling) for lb in dataset.labels],
            dtype=torch.double,
        )
        generator = torch.Generator().manual_seed(self.sampling_seed)
        batch = min(batch_size, len(dataset))
        workers = min(os.cpu_count() or 1, self.args.workers, math.ceil(len(dataset) / batch))
        sampler = WeightedRandomSampler(draw, len(dataset), replacement=True, generator=generator)
        return InfiniteDataLoader(
            dataset=dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers if workers > 1 else 0,
            collate_fn=dataset.collate_fn,
            worker_init_fn=seed_worker,
            generator=generator,
        )
