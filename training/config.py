"""The settings of a training run (:class:`TrainConfig`) and what it produced.

Every framework takes the same settings and gives the same
:class:`TrainingResult`, so runs of torchvision and YOLO detectors compare alike.

Example::

    config = TrainConfig(train_key="baseline", weight_field=None, steps=500)
    result = training.train_detector(dataset, config)   # a TrainingResult
    result.run_dir, result.evaluation["mAP"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dequity.errors import DequityError
from training.checkpoints import CHECKPOINT_NAME
from training.datasets import DEFAULT_WEIGHT_FIELD, check_weight_level
from training.detectors import DEFAULT_DETECTOR

__all__ = ["FRAMEWORK_NAMES", "TrainConfig", "TrainingResult"]

#: the frameworks a run can train with; :data:`training.runner.FRAMEWORKS` plugs each in
FRAMEWORK_NAMES = ("torchvision", "yolo")


@dataclass
class TrainingResult:
    """What a training run produced; ``run_dir`` holds the same as files."""

    train_key: str
    run_dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any] | None
    checkpoint: Path
    step_losses: list[float] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The settings of a training run; :func:`training.train_detector` takes them as keywords.

    ``weight_field=None`` trains the unweighted baseline; ``eta``/``gamma``
    recompute the weights from the likelihood field; ``normalize_weights``
    divides each batch's weights by their mean (see :mod:`training.losses`).
    ``weight_level="object"`` weights each box instead of each image, by the
    ``weight_field`` attribute of its ``Detection`` (``missing_box_weight``
    for boxes without one; see :func:`training.datasets.detection_dataset`).
    ``sampling_field`` resamples instead: each batch draws training images
    with replacement, with probability proportional to that numeric field
    raised to ``sampling_power``. A negative power turns a likelihood into a
    draw weight: ``sampling_field="dequity_likelihood", sampling_power=-0.5``
    draws an image in proportion to ``1 / sqrt(likelihood)``, the label-free
    form of square-root class balancing (zeros take the smallest positive value).
    ``vectorize`` loads the label and weight fields once up front instead of
    per image (faster for small images, more memory).
    ``freeze_backbone`` keeps the backbone's body at its pretrained weights and
    trains the feature pyramid and head on the body's feature maps, computed
    once per image (and its mirror image) by :mod:`training.features`: many
    more steps for the same time; kept on disk in ``feature_cache`` when given.
    ``warmup_steps`` raises the learning rate linearly from ``lr / warmup_steps``
    to ``lr`` over the first steps (FCOS's box branch can die in a large first step).
    ``channels``/``head_convs`` size the EfficientNet-Lite detectors' pyramid
    and FCOS head (:func:`training.detectors.build_detector`).
    ``framework`` is one of :data:`FRAMEWORK_NAMES` (the runner's registry,
    :data:`training.runner.FRAMEWORKS`); ``"yolo"`` trains an Ultralytics YOLO
    detector (:mod:`training.yolo`): ``detector`` is then a YOLO model YAML
    (default ``yolov8n.yaml``, from scratch) and ``weights`` a local ``.pt``.
    ``steps`` (or else ``epochs``, default 1) is the total including a resumed
    run's; ``resume`` is a run folder or checkpoint, and a resumed run starts a
    fresh pass over the data. ``train_key`` defaults to ``"baseline"`` without
    weights and ``"dequity_train"`` with them (:attr:`key`); ``output_dir`` to
    ``runs/<train_key>`` (:attr:`run_dir`).

    Example::

        config = TrainConfig(train_key="baseline", weight_field=None, steps=500)
        result = training.train_detector(dataset, config)
    """

    train_key: str | None = None
    framework: str = "torchvision"
    view: str | None = None
    label_field: str = "ground_truth"
    classes: Sequence[str] | None = None
    weight_field: str | None = DEFAULT_WEIGHT_FIELD
    likelihood_field: str | None = None
    eta: float | None = None
    gamma: float | None = None
    normalize_weights: bool = False
    weight_level: str = "image"
    missing_box_weight: float | None = None
    sampling_field: str | None = None
    sampling_power: float = 1.0
    train_tag: str | None = None
    val_tag: str | None = None
    val_fraction: float = 0.2
    detector: str = DEFAULT_DETECTOR
    weights: str | None = None
    weights_backbone: str | None = None
    image_size: int = 512
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 1e-4
    device: str = "cpu"
    seed: int = 0
    num_workers: int = 0
    vectorize: bool = False
    freeze_backbone: bool = False
    feature_cache: str | Path | None = None
    channels: int = 128
    head_convs: int = 4
    output_dir: str | Path | None = None
    resume: str | Path | None = None
    overwrite: bool = False
    evaluate: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise DequityError(f"train_key must be a valid identifier, got {self.key!r}")
        if self.steps is not None and self.steps < 1 or self.epochs is not None and self.epochs < 1:
            raise DequityError("steps and epochs must be >= 1")
        check_weight_level(self.weight_level)
        if not math.isfinite(self.sampling_power) or self.sampling_power == 0:
            raise DequityError(
                f"sampling_power must be a finite number other than 0, got {self.sampling_power}; "
                "1 draws in proportion to the field, -0.5 in proportion to 1 / sqrt(field)"
            )
        if self.framework not in FRAMEWORK_NAMES:
            raise DequityError(
                f"framework must be one of {FRAMEWORK_NAMES}, got {self.framework!r}"
            )

    @property
    def key(self) -> str:
        """The train key: ``train_key``, or the default for the weighting."""
        if self.train_key is not None:
            return self.train_key
        return "baseline" if self.weight_field is None and self.eta is None else "dequity_train"

    @property
    def weighted(self) -> bool:
        """Whether images are weighted (a weight field, or eta/gamma to recompute one)."""
        return self.weight_field is not None or self.eta is not None or self.gamma is not None

    @property
    def run_dir(self) -> Path:
        """The run folder: ``output_dir``, or ``runs/<train key>``."""
        return Path(self.output_dir) if self.output_dir is not None else Path("runs") / self.key

    @property
    def checkpoint(self) -> Path:
        """The torchvision run's checkpoint, in the run folder."""
        return self.run_dir / CHECKPOINT_NAME
