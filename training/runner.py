"""One training run, whatever the framework: the runner and its registry of frameworks.

:func:`train_detector` loads the samples (a dataset or one of its saved
views), checks that the train key is free, and splits them into training and
validation views (:func:`training_data`); the framework that
``config.framework`` names in :data:`FRAMEWORKS` trains on them
(:class:`training.framework.Framework`); the runner then predicts on the
validation view with the trained model, evaluates the predictions and
writes and records the run alike for every framework (:func:`finish_run`),
so :func:`training.compare_runs` compares runs of any two.

A run folder holds ``config.json``, ``metrics.json``/``metrics.csv`` (one row
per epoch), ``steps.csv`` (one row per step), ``loss_curve.png``,
``evaluation.json`` and the framework's checkpoint: ``checkpoint.pt`` with
``checkpoint.json`` (:mod:`training.torchvision_training`,
:mod:`training.checkpoints`) or ``yolo.pt`` (:mod:`training.yolo`). The run
is also recorded on the dataset (``dataset.list_runs()``), its predictions
on the validation view are stored in ``<train_key>_predictions`` and
evaluated under ``<train_key>_eval``.

Example::

    result = train_detector(dataset, train_key="dequity", steps=2000)
    result = train_detector(dataset, framework="yolo", train_key="yolo", epochs=10)
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from dequity.errors import DequityError
from dequity.store import compat as fc
from training.checkpoints import CHECKPOINT_NAME
from training.config import TrainConfig, TrainingResult
from training.datasets import resolve_classes
from training.evaluate import evaluate_predictions
from training.framework import Framework, RunData, TrainedRun
from training.plots import plot_loss_curve
from training.records import METHOD, record_training_run
from training.samples import load_samples, split_view
from training.torchvision_training import fit_torchvision
from training.yolo import YOLO_CHECKPOINT, check_yolo_config, fit_yolo

__all__ = ["FRAMEWORKS", "finish_run", "train_detector", "train_yolo", "training_data"]

#: the frameworks a run trains with, by the name ``TrainConfig.framework`` gives
FRAMEWORKS: dict[str, Framework] = {
    "torchvision": Framework(fit=fit_torchvision, checkpoint_name=CHECKPOINT_NAME),
    "yolo": Framework(fit=fit_yolo, checkpoint_name=YOLO_CHECKPOINT, check=check_yolo_config),
}


def train_detector(
    samples: Any, config: TrainConfig | None = None, **options: Any
) -> TrainingResult:
    """Trains a detector on ``samples`` with per-image DatasetEquity weights.

    The settings are a :class:`TrainConfig`, its fields given as keywords, or
    both (the keywords replace the config's fields); ``config.framework``
    picks the framework from :data:`FRAMEWORKS`. Returns a
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
    return _run(FRAMEWORKS[config.framework], samples, config)


def train_yolo(samples: Any, config: TrainConfig) -> TrainingResult:
    """Trains an Ultralytics YOLO detector with per-image weights; a ``framework="yolo"`` run.

    Takes a :class:`training.TrainConfig` and trains with the ``"yolo"``
    framework (:func:`training.yolo.fit_yolo`) whatever its ``framework``:
    ``detector`` is a model YAML (default ``yolov8n.yaml``, trained from
    scratch) and ``weights`` an optional local ``.pt`` to start from;
    ``steps`` round up to whole epochs. The view is exported into
    ``<run_dir>/yolo_data`` and Ultralytics writes into
    ``<run_dir>/ultralytics``; the last weights are copied to
    ``<run_dir>/yolo.pt``. Returns a :class:`training.TrainingResult`.

    Example::

        result = train_yolo(dataset, TrainConfig(framework="yolo", train_key="yolo_dequity",
                                                 image_size=320, epochs=10))
    """
    return _run(FRAMEWORKS["yolo"], samples, config)


def _run(framework: Framework, samples: Any, config: TrainConfig) -> TrainingResult:
    """One run with ``framework``: check, load and split, fit, evaluate, record."""
    if framework.check is not None:
        framework.check(config)
    data = training_data(samples, config)
    trained = framework.fit(config, data)
    evaluation = _evaluate(config, data, trained)
    return finish_run(
        data.dataset,
        config,
        trained.record,
        trained.metrics,
        trained.step_rows,
        evaluation,
        trained.checkpoint,
    )


def training_data(samples: Any, config: TrainConfig) -> RunData:
    """The samples a run trains on: their dataset, classes, and train and validation views.

    Checks that the run key is free for a training run first; the validation
    view is None when the split leaves none.

    Example::

        data = training_data("kitti", config)
        data.train_view, data.val_view
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
    return RunData(dataset, classes, train_view, val_view)


def _check_key(dataset: Any, config: TrainConfig) -> None:
    """Refuses a train key that another kind of run, or an earlier run, holds."""
    key = config.key
    if key in dataset.list_runs() and key not in dataset.list_runs(method=METHOD):
        raise DequityError(
            f"run key {key!r} is taken by another kind of run; pick another train key"
        )
    exists = (
        any(
            (config.run_dir / framework.checkpoint_name).exists()
            for framework in FRAMEWORKS.values()
        )
        or key in dataset.list_runs()
    )
    if config.resume is None and not config.overwrite and exists:
        raise DequityError(
            f"training run {key!r} exists ({config.run_dir}); pass overwrite=True "
            "(--overwrite), resume it (--resume), or choose another train key"
        )


def _evaluate(config: TrainConfig, data: RunData, trained: TrainedRun) -> dict[str, Any] | None:
    """Predicts on the validation view and evaluates it; None when there is nothing to do."""
    record, dataset = trained.record, data.dataset
    if not config.evaluate or data.val_view is None:
        return None
    eval_key = record["eval_key"]
    if eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    trained.predict(data.val_view, record["predictions_field"])
    evaluation = evaluate_predictions(
        data.val_view,
        record["predictions_field"],
        config.label_field,
        eval_key,
        data.classes,
        progress=config.progress,
    )
    if trained.metrics:
        trained.metrics[-1]["val_mAP"] = evaluation["mAP"]
    (config.run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    return evaluation


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

    Every framework's run ends here, so their runs compare alike.

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


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
