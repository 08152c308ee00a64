"""Train a torchvision detector on a FiftyOne view with DatasetEquity weights.

A run folder holds ``config.json``, ``metrics.json``/``metrics.csv`` (one row
per epoch), ``steps.csv`` (one row per step), ``checkpoint.pt`` (model and
optimizer tensors only, loaded with ``weights_only=True``) with its metadata in
``checkpoint.json`` (step, epoch, config, metrics and the tensors' SHA-256),
``loss_curve.png`` and ``evaluation.json``. The run is also recorded on the
dataset (``dataset.list_runs()``), its predictions on the validation view are
stored in ``<train_key>_predictions`` and evaluated under ``<train_key>_eval``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from dequity import fiftyone_compat as fc
from dequity.errors import DequityError
from training.datasets import (
    DEFAULT_WEIGHT_FIELD,
    FiftyOneTorchDataset,
    check_weight_level,
    collate_detection,
    detection_dataset,
    resolve_classes,
)
from training.detectors import DEFAULT_DETECTOR, build_detector
from training.evaluate import evaluate_predictions, predict
from training.losses import weight_image_losses
from training.plots import plot_loss_curve
from training.records import METHOD, record_training_run

FRAMEWORKS = ("torchvision", "yolo")

__all__ = [
    "FRAMEWORKS",
    "TrainConfig",
    "TrainingResult",
    "load_samples",
    "split_view",
    "train_detector",
]


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


def load_samples(dataset: Any, view: str | None = None) -> Any:
    """A dataset (object or name), optionally narrowed to one of its saved views.

    Example::

        samples = load_samples("kitti", view="daytime")
    """
    import fiftyone as fo

    if isinstance(dataset, str):
        if not fo.dataset_exists(dataset):
            raise DequityError(
                f"no dataset named {dataset!r}; the datasets are {fo.list_datasets()}"
            )
        dataset = fo.load_dataset(dataset)
    if view is not None:
        root = fc.root_dataset(dataset)
        if view not in root.list_saved_views():
            raise DequityError(
                f"dataset {root.name!r} has no saved view {view!r}; its saved views are "
                f"{root.list_saved_views()}"
            )
        dataset = root.load_saved_view(view)
    return dataset


def split_view(
    samples: Any,
    *,
    train_tag: str | None = None,
    val_tag: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Any, Any | None]:
    """Splits ``samples`` into (train, validation) views, by tags or a seeded fraction.

    With ``val_tag`` the validation view is the samples with that tag and the
    training view those with ``train_tag`` (or, without it, all others).
    Otherwise ``val_fraction`` of the samples, drawn with ``seed``, validate;
    ``val_fraction=0`` gives no validation view (None).

    Example::

        train_view, val_view = split_view(dataset, val_fraction=0.2, seed=0)
        train_view, val_view = split_view(dataset, train_tag="train", val_tag="val")
    """
    if val_tag is not None:
        val = samples.match_tags(val_tag)
        train = (
            samples.match_tags(train_tag)
            if train_tag is not None
            else samples.match_tags(val_tag, bool=False)
        )
        if len(val) == 0:
            raise DequityError(f"no sample has the validation tag {val_tag!r}")
    elif train_tag is not None:
        train, val = samples.match_tags(train_tag), None
    else:
        if not 0 <= val_fraction < 1:
            raise DequityError(f"val_fraction must be in [0, 1), got {val_fraction}")
        ids = samples.values("id")
        random.Random(seed).shuffle(ids)
        n_val = round(val_fraction * len(ids))
        if val_fraction > 0:
            n_val = min(max(1, n_val), len(ids) - 1)
        train = samples.exclude(ids[:n_val]) if n_val else samples
        val = samples.select(ids[:n_val], ordered=True) if n_val else None
    if len(train) == 0:
        raise DequityError("the training view is empty; check the split tags or fraction")
    return train, val


@dataclass
class TrainConfig:
    """The settings of a training run; :func:`train_detector` takes them as keywords.

    ``weight_field=None`` trains the unweighted baseline; ``eta``/``gamma``
    recompute the weights from the likelihood field; ``normalize_weights``
    divides each batch's weights by their mean (see :mod:`training.losses`).
    ``weight_level="object"`` weights each box instead of each image, by the
    ``weight_field`` attribute of its ``Detection`` (``missing_box_weight``
    for boxes without one; see :func:`training.datasets.detection_dataset`).
    ``sampling_field`` resamples instead: each batch draws training images
    with replacement, with probability proportional to that numeric field.
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
    ``framework="yolo"`` trains an Ultralytics YOLO detector instead
    (:func:`training.yolo.train_yolo`): ``detector`` is then a YOLO model YAML
    (default ``yolov8n.yaml``, from scratch) and ``weights`` a local ``.pt``.
    ``steps`` (or else ``epochs``, default 1) is the total including a resumed
    run's; ``resume`` is a run folder or checkpoint, and a resumed run starts a
    fresh pass over the data. ``train_key`` defaults to ``"baseline"`` without
    weights and ``"dequity_train"`` with them (:attr:`key`); ``output_dir`` to
    ``runs/<train_key>`` (:attr:`run_dir`).

    Example::

        config = TrainConfig(train_key="baseline", weight_field=None, steps=500)
        result = train_detector(dataset, config)
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
        if self.framework not in FRAMEWORKS:
            raise DequityError(f"framework must be one of {FRAMEWORKS}, got {self.framework!r}")

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
        """The run's checkpoint, in the run folder."""
        return self.run_dir / "checkpoint.pt"


@dataclass
class _Progress:
    """How far a run has come; a checkpoint holds it beside the weights."""

    step: int = 0
    epoch: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    step_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    """A prepared run: its data, model and optimizer, and its progress so far."""

    config: TrainConfig
    dataset: Any
    classes: list[str]
    val_view: Any | None
    train_data: Any
    record: dict[str, Any]
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    state: _Progress
    draw: torch.Tensor | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to(target: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def _checkpoint_file(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists() or not path.with_suffix(".json").exists():
        raise DequityError(
            f"no checkpoint at {path} with its metadata {path.with_suffix('.json').name}; "
            "pass a run folder or its checkpoint.pt"
        )
    return path


def _save_checkpoint(run: _Run) -> None:
    """Tensors to ``checkpoint.pt``, the rest (and the tensors' hash) to ``checkpoint.json``.

    Each file is written aside and moved into place whole.
    """
    state = run.state
    path = run.config.checkpoint
    partial = path.with_suffix(".pt.partial")
    torch.save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}, partial)
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "config": run.record,
        "metrics": state.metrics,
        "step_rows": state.step_rows,
        "sha256": _sha256(partial),
    }
    meta_partial = path.with_suffix(".json.partial")
    meta_partial.write_text(json.dumps(meta, indent=1))
    os.replace(partial, path)
    os.replace(meta_partial, path.with_suffix(".json"))


def _load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, metadata)``: tensors only (``weights_only=True``: no code runs)."""
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("sha256") != _sha256(path):
        raise DequityError(
            f"{path.name} does not match {path.with_suffix('.json').name} (one was replaced "
            "or half written); resume from a complete run folder"
        )
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DequityError(
            f"{path} holds more than tensors and is not loaded (it could run code): {e}"
        ) from None
    return tensors, meta


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resume(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float
) -> _Progress:
    """Loads a checkpoint into ``model`` and ``optimizer``; the new ``lr`` applies."""
    tensors, meta = _load_checkpoint(path)
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = lr
    return _Progress(
        meta["step"], meta["epoch"], meta.get("metrics", []), meta.get("step_rows", [])
    )


def _sampling_probabilities(train_view: Any, field: str) -> torch.Tensor:
    """Non-negative draw weights of the training images, in the view's order."""
    values = train_view.values(field)
    if any(v is None for v in values):
        raise DequityError(f"some training samples have no {field!r}; set it on every sample")
    draw = torch.as_tensor(values, dtype=torch.double)
    if not torch.isfinite(draw).all() or (draw < 0).any() or draw.sum() <= 0:
        raise DequityError(f"{field!r} must hold finite values >= 0, not all zero")
    return draw


def _check_key(dataset: Any, config: TrainConfig) -> None:
    key = config.key
    if key in dataset.list_runs() and key not in dataset.list_runs(method=METHOD):
        raise DequityError(
            f"run key {key!r} is taken by another kind of run; pick another train key"
        )
    exists = (
        config.checkpoint.exists()
        or (config.run_dir / "yolo.pt").exists()
        or key in dataset.list_runs()
    )
    if config.resume is None and not config.overwrite and exists:
        raise DequityError(
            f"training run {key!r} exists ({config.run_dir}); pass overwrite=True "
            "(--overwrite), resume it (--resume), or choose another train key"
        )


def _run_record(
    config: TrainConfig, dataset: Any, classes: list[str], num_train: int, num_val: int
) -> dict[str, Any]:
    """The run's settings as written to ``config.json`` and recorded on the dataset."""
    key = config.key
    return {
        "train_key": key,
        "framework": config.framework,
        "dataset": dataset.name,
        "view": config.view,
        "label_field": config.label_field,
        "classes": classes,
        "weight_field": config.weight_field,
        "likelihood_field": config.likelihood_field,
        "eta": config.eta,
        "gamma": config.gamma,
        "normalize_weights": config.normalize_weights,
        "weight_level": config.weight_level,
        "missing_box_weight": config.missing_box_weight,
        "sampling_field": config.sampling_field,
        "train_tag": config.train_tag,
        "val_tag": config.val_tag,
        "val_fraction": config.val_fraction,
        "num_train": num_train,
        "num_val": num_val,
        "detector": config.detector,
        "weights": config.weights,
        "weights_backbone": config.weights_backbone,
        "image_size": config.image_size,
        "freeze_backbone": config.freeze_backbone,
        "channels": config.channels,
        "head_convs": config.head_convs,
        "steps": config.steps,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "optimizer": "AdamW",
        "device": config.device,
        "seed": config.seed,
        "num_workers": config.num_workers,
        "run_dir": str(config.run_dir.resolve()),
        "predictions_field": f"{key}_predictions",
        "eval_key": f"{key}_eval",
        "torch": torch.__version__,
    }


def training_views(samples: Any, config: TrainConfig) -> tuple[Any, Any, list[str], Any, Any]:
    """The samples a run trains on, their dataset, classes, and train and validation views.

    Checks that the run key is free for a training run first; the validation
    view is None when the split leaves none.

    Example::

        samples, dataset, classes, train, val = training_views("kitti", config)
    """
    samples = load_samples(samples, config.view)
    dataset = fc.root_dataset(samples)
    _check_key(dataset, config)
    classes = resolve_classes(samples, config.label_field, config.classes)
    train_view, val_view = split_view(
        samples,
        train_tag=config.train_tag,
        val_tag=config.val_tag,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    return samples, dataset, classes, train_view, val_view


def _prepare(samples: Any, config: TrainConfig) -> _Run:
    """Checks the request, splits the data, builds the model and optimizer, resumes.

    Writes the run folder's ``config.json``; nothing else is written yet.
    """
    samples, dataset, classes, train_view, val_view = training_views(samples, config)
    checkpoint = _checkpoint_file(config.resume) if config.resume is not None else None
    train_data = detection_dataset(
        train_view,
        config.label_field,
        classes,
        weight_field=config.weight_field,
        likelihood_field=config.likelihood_field,
        eta=config.eta,
        gamma=config.gamma,
        train=not config.freeze_backbone,
        vectorize=config.vectorize,
        weight_level=config.weight_level,
        missing_box_weight=config.missing_box_weight,
    )
    draw = (
        None
        if config.sampling_field is None
        else _sampling_probabilities(train_view, config.sampling_field)
    )
    num_val = len(val_view) if val_view is not None else 0
    record = _run_record(config, dataset, classes, len(train_view), num_val)

    _seed_everything(config.seed)
    model = build_detector(
        config.detector,
        len(classes) + 1,
        image_size=config.image_size,
        weights=config.weights,
        weights_backbone=config.weights_backbone,
        channels=config.channels,
        head_convs=config.head_convs,
    )
    if config.freeze_backbone:
        train_data = _feature_data(model, train_view, train_data, config)
    if config.weighted:
        weight_image_losses(model, normalize=config.normalize_weights)
    model.to(config.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state = _Progress()
    if checkpoint is not None:
        state = _resume(checkpoint, model, optimizer, config.lr)
        _seed_everything(config.seed + state.epoch)

    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / "config.json").write_text(json.dumps(record, indent=2))
    return _Run(
        config, dataset, classes, val_view, train_data, record, model, params, optimizer, state,
        draw,
    )  # fmt: skip


def _feature_data(model: torch.nn.Module, view: Any, items: Any, config: TrainConfig) -> Any:
    """The training items as cached body features (the body frozen) and their targets."""
    from training.features import FeatureDataset, cached_features, freeze_body

    freeze_body(model)
    cache = cached_features(
        model,
        view,
        model_name=f"{config.detector}:{config.weights}:{config.weights_backbone}",
        image_size=config.image_size,
        flips=True,
        folder=config.feature_cache,
    )
    targets = [items[i][1] for i in range(len(items))]  # unaugmented: train=False below
    return FeatureDataset(cache, targets)


def _epoch_loader(run: _Run) -> DataLoader:
    """The loader of the next epoch, shuffled with a seed of the run's seed and epoch."""
    config, data = run.config, run.train_data
    generator = torch.Generator().manual_seed(config.seed * 1000 + run.state.epoch)
    sampler = (
        RandomSampler(data, generator=generator)
        if run.draw is None
        else WeightedRandomSampler(run.draw, len(data), generator=generator)
    )
    return DataLoader(
        data,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate_detection,
        worker_init_fn=FiftyOneTorchDataset.worker_init,
        drop_last=len(data) >= config.batch_size,
    )


def _train_step(run: _Run, images: list, targets: list) -> dict[str, Any]:
    """One optimiser step on a batch; returns its ``steps.csv`` row."""
    device, state = run.config.device, run.state
    targets = [_to(t, device) for t in targets]
    if isinstance(images[0], tuple):  # cached features of a frozen body
        from training.features import head_forward, stack_features

        levels = [level.to(device) for level in stack_features(images)]
        sizes = [t["image_size"] for t in targets]
        padded = run.train_data.cache.padded_size
        losses = head_forward(run.model, levels, sizes, padded, targets)
    else:
        losses = run.model([image.to(device) for image in images], targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise DequityError(
            f"the loss became {float(loss)} at step {state.step + 1}; lower the learning rate"
        )
    warmup = run.config.warmup_steps
    if warmup:
        for group in run.optimizer.param_groups:
            group["lr"] = run.config.lr * min(1.0, (state.step + 1) / warmup)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 10.0)
    run.optimizer.step()
    state.step += 1
    row = {"step": state.step, "epoch": state.epoch + 1, "loss": loss.item()}
    row.update({k: v.item() for k, v in losses.items()})
    row["mean_weight"] = float(torch.stack([t["weight"] for t in targets]).mean())
    return row


def _epoch_metrics(
    epoch: int, step: int, finished: bool, seconds: float, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """One ``metrics.csv`` row: the epoch's mean of every loss column of ``rows``."""
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": step,
        "complete": finished,
        "seconds": round(seconds, 3),
    }
    for name in rows[0] if rows else ():
        if name not in ("step", "epoch"):
            metrics[name] = sum(r[name] for r in rows) / len(rows)
    return metrics


def _train_loop(run: _Run) -> None:
    """Trains up to the total step count, saving a checkpoint after every (partial) epoch."""
    from tqdm.auto import tqdm

    config, state = run.config, run.state
    batches_per_epoch = math.ceil(len(run.train_data) / config.batch_size)
    total_steps = (
        config.steps if config.steps is not None else (config.epochs or 1) * batches_per_epoch
    )
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc=f"train {config.key}",
        disable=not config.progress,
    )
    run.model.train()
    while state.step < total_steps:
        loader = _epoch_loader(run)
        start, epoch_rows = time.perf_counter(), []
        for images, targets in loader:
            row = _train_step(run, images, targets)
            epoch_rows.append(row)
            state.step_rows.append(row)
            recent = [r["loss"] for r in state.step_rows[-20:]]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            bar.update(1)
            if state.step >= total_steps:
                break
        finished = len(epoch_rows) == len(loader)
        seconds = time.perf_counter() - start
        state.metrics.append(_epoch_metrics(state.epoch, state.step, finished, seconds, epoch_rows))
        state.epoch += 1 if finished else 0
        _save_checkpoint(run)
        if not finished:
            break
    bar.close()


def _evaluate(run: _Run) -> dict[str, Any] | None:
    """Predicts on the validation view and evaluates it; None when there is nothing to do."""
    config, record = run.config, run.record
    if not config.evaluate or run.val_view is None:
        return None
    eval_key = record["eval_key"]
    if eval_key in run.dataset.list_evaluations():
        run.dataset.delete_evaluation(eval_key)
    predict(
        run.model,
        run.val_view,
        record["predictions_field"],
        run.classes,
        batch_size=config.batch_size,
        device=config.device,
        progress=config.progress,
    )
    evaluation = evaluate_predictions(
        run.val_view,
        record["predictions_field"],
        config.label_field,
        eval_key,
        run.classes,
        progress=config.progress,
    )
    if run.state.metrics:
        run.state.metrics[-1]["val_mAP"] = evaluation["mAP"]
    (config.run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    return evaluation


def _record(run: _Run, evaluation: dict[str, Any] | None) -> TrainingResult:
    """Writes the run's outputs and records it on the dataset (:func:`finish_run`)."""
    return finish_run(
        run.dataset,
        run.config,
        run.record,
        run.state.metrics,
        run.state.step_rows,
        evaluation,
        run.config.checkpoint,
    )


def finish_run(
    dataset: Any,
    config: TrainConfig,
    record: dict[str, Any],
    metrics: list[dict[str, Any]],
    step_rows: list[dict[str, Any]],
    evaluation: dict[str, Any] | None,
    checkpoint: Path,
) -> TrainingResult:
    """Writes the metrics, steps and loss curve, and records the run on the dataset.

    Every framework's training ends here, so their runs compare alike.

    Example::

        result = finish_run(dataset, config, record, metrics, rows, evaluation, checkpoint)
    """
    run_dir = config.run_dir
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_csv(run_dir / "metrics.csv", metrics)
    if step_rows:
        _write_csv(run_dir / "steps.csv", step_rows)
        plot_loss_curve(
            [r["step"] for r in step_rows],
            [r["loss"] for r in step_rows],
            run_dir / "loss_curve.png",
            title=f"{config.key}: training loss",
        )
    record_training_run(
        dataset,
        config.key,
        record,
        {
            "metrics": metrics,
            "evaluation": evaluation,
            "run_dir": record["run_dir"],
            "checkpoint": str(checkpoint.resolve()),
        },
    )
    return TrainingResult(
        train_key=config.key,
        run_dir=run_dir,
        config=record,
        metrics=metrics,
        evaluation=evaluation,
        checkpoint=checkpoint,
        step_losses=[r["loss"] for r in step_rows],
    )


def train_detector(
    samples: Any, config: TrainConfig | None = None, **options: Any
) -> TrainingResult:
    """Trains a detector on ``samples`` with per-image DatasetEquity weights.

    The settings are a :class:`TrainConfig`, its fields given as keywords, or
    both (the keywords replace the config's fields). Returns a
    :class:`TrainingResult`; the run is also recorded on the dataset under
    its train key.

    Example::

        result = train_detector(dataset, train_key="dequity", classes=["person", "car"],
                                steps=2000, image_size=512, device="cuda")
        baseline = train_detector(dataset, train_key="baseline", weight_field=None, ...)
    """
    if config is None:
        config = TrainConfig(**options)
    elif options:
        config = replace(config, **options)
    if config.framework == "yolo":
        from training.yolo import train_yolo

        return train_yolo(samples, config)
    run = _prepare(samples, config)
    _train_loop(run)
    evaluation = _evaluate(run)
    return _record(run, evaluation)
