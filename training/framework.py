"""How a training framework plugs into the runner, and the steps every framework shares.

The runner (:mod:`training.runner`) loads and splits the samples into a
:class:`RunData` and hands it, with the :class:`training.config.TrainConfig`,
to the ``fit`` of the :class:`Framework` that ``config.framework`` names in
its registry. ``fit`` trains, writes ``config.json`` and the checkpoint, and
returns a :class:`TrainedRun`: the run's record, metrics, step rows,
checkpoint and a ``predict`` function. The runner then evaluates the
predictions on the validation view and records the run the same way for
every framework. Frameworks build the record with :func:`run_record`, seed
with :func:`seed_everything` and summarise each epoch with
:func:`epoch_metrics`, so their runs compare alike.

Example::

    def fit_mine(config: TrainConfig, data: RunData) -> TrainedRun: ...

    # an entry of training.runner.FRAMEWORKS (its name in training.config.FRAMEWORK_NAMES)
    "mine": Framework(fit=fit_mine, checkpoint_name="mine.pt"),
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig

__all__ = [
    "Framework",
    "RunData",
    "TrainedRun",
    "epoch_metrics",
    "run_record",
    "seed_everything",
]


@dataclass(frozen=True)
class RunData:
    """The samples of a run, loaded and split by the runner.

    Example::

        data = RunData(dataset, ["car", "person"], train_view, val_view=None)
    """

    dataset: Any
    classes: list[str]
    train_view: Any
    val_view: Any | None


@dataclass
class TrainedRun:
    """What a framework's ``fit`` gives back to the runner.

    ``predict(view, field)`` stores the trained model's ``Detections`` of
    ``view`` in ``field``; the runner evaluates them.

    Example::

        trained = TrainedRun(record, metrics, step_rows, run_dir / "model.pt", predict)
    """

    record: dict[str, Any]
    metrics: list[dict[str, Any]]
    step_rows: list[dict[str, Any]]
    checkpoint: Path
    predict: Callable[[Any, str], int]


@dataclass(frozen=True)
class Framework:
    """A framework the runner trains with: its ``fit`` and its checkpoint's file name.

    ``check(config)``, when given, refuses settings the framework cannot
    train before any sample is read. ``checkpoint_name`` is the checkpoint's
    name in the run folder; a run folder holding any framework's checkpoint
    is not overwritten without ``overwrite``.

    Example::

        Framework(fit=fit_yolo, checkpoint_name="yolo.pt", check=check_yolo_config)
    """

    fit: Callable[[TrainConfig, RunData], TrainedRun]
    checkpoint_name: str
    check: Callable[[TrainConfig], None] | None = None


def run_record(config: TrainConfig, data: RunData) -> dict[str, Any]:
    """The run's settings as written to ``config.json`` and recorded on the dataset.

    A framework updates the entries it decides itself (e.g. YOLO's ``epochs``).

    Example::

        record = run_record(config, data)
        record["eval_key"]  # '<train key>_eval'
    """
    key, dataset, classes = config.key, data.dataset, data.classes
    num_train = len(data.train_view)
    num_val = len(data.val_view) if data.val_view is not None else 0
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
        "sampling_power": config.sampling_power,
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


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's random generators.

    Example::

        seed_everything(config.seed)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_metrics(
    epoch: int, step: int, finished: bool, seconds: float, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """One ``metrics.csv`` row: the epoch's mean of every loss column of ``rows``.

    ``epoch`` counts from 0, ``step`` is the run's step count at the epoch's
    end, ``finished`` whether the epoch ran to its end.

    Example::

        epoch_metrics(0, 6, True, 12.5, rows)  # {'epoch': 1, 'step': 6, 'loss': ..., ...}
    """
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
