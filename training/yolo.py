"""Ultralytics YOLO with DatasetEquity weights: export, weighted training, predictions.

:func:`export_yolo` writes a view in YOLO format with FiftyOne's exporter
(``images/<split>``, ``labels/<split>``, ``dataset.yaml``) and the weights
beside it (``dequity_weights.csv``: one row per image, with its sample id).
:func:`fit_yolo` is the ``"yolo"`` framework's step of a run
(:mod:`training.runner` loads, splits, evaluates and records around it;
:func:`training.train_yolo` runs it whole): it trains a YOLO detector whose
per-image loss is multiplied by the image's weight (:mod:`training.yolo_loss`);
``sampling_field`` instead, or as well, draws images in proportion to a
field. :func:`yolo_predict` stores a checkpoint's detections on a view. The
runner writes the same run folder, run record, predictions
(``<train_key>_predictions``) and evaluation (``<train_key>_eval``) as for
the torchvision framework, so :func:`training.compare_runs` compares runs of both.

Offline: the model is built from a YAML that ships inside the ``ultralytics``
package (default ``yolov8n.yaml``, trained from scratch) or loaded from a
local ``.pt`` file (``weights``); plots, AMP checks and every other
download are off, and ``YOLO_OFFLINE=1`` is set unless already set.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from dequity.errors import DequityError
from training.config import TrainConfig
from training.datasets import check_image_weights, resolve_classes, sample_weight
from training.detectors import DEFAULT_DETECTOR
from training.framework import RunData, TrainedRun, epoch_metrics, run_record, seed_everything
from training.samples import sampling_probabilities

__all__ = [
    "DEFAULT_YOLO_MODEL",
    "YOLO_CHECKPOINT",
    "check_yolo_config",
    "export_yolo",
    "fit_yolo",
    "read_weights",
    "view_weights",
    "yolo_predict",
]

#: the small YOLO configuration, trained from scratch (ships with ultralytics)
DEFAULT_YOLO_MODEL = "yolov8n.yaml"
#: the run's last YOLO weights, in the run folder
YOLO_CHECKPOINT = "yolo.pt"
WEIGHTS_FILE = "dequity_weights.csv"


def view_weights(
    view: Any,
    weight_field: str | None = "dequity_weight",
    *,
    likelihood_field: str | None = None,
    eta: float | None = None,
    gamma: float | None = None,
) -> list[float]:
    """One loss weight per sample of ``view``, in its order (1.0 without a weight field).

    ``eta``/``gamma`` recompute the weights from the likelihood field (by
    default the one the dequity run that wrote ``weight_field`` wrote).

    Example::

        weights = view_weights(dataset.match_tags("train"), "dequity_weight")
    """
    likelihood_field = check_image_weights(view, weight_field, likelihood_field, eta, gamma)
    if eta is not None or gamma is not None:
        return [
            sample_weight({"likelihood": p, "id": i}, eta, gamma)[0]
            for i, p in zip(view.values("id"), view.values(likelihood_field))
        ]
    if weight_field is None:
        return [1.0] * len(view)
    return [
        sample_weight({"weight": w, "id": i}, None, None)[0]
        for i, w in zip(view.values("id"), view.values(weight_field))
    ]


def export_yolo(
    view: Any,
    export_dir: str | Path,
    *,
    label_field: str = "ground_truth",
    classes: Sequence[str] | None = None,
    split: str = "train",
    weights: Sequence[float] | None = None,
    weight_field: str | None = "dequity_weight",
    export_media: bool | str = True,
) -> Path:
    """Exports ``view`` as YOLO split ``split`` with FiftyOne's exporter, weights beside it.

    Writes ``images/<split>/``, ``labels/<split>/`` and ``dataset.yaml``
    (``fo.types.YOLOv5Dataset``; export several splits into one folder
    for train and val), and appends one row per image to
    ``dequity_weights.csv`` (``split, image, sample_id, filepath, weight``;
    ``image`` relative to ``export_dir``). ``weights`` (one per sample, in
    the view's order) overrides ``weight_field``; ``weight_field=None`` writes
    weight 1. ``export_media="symlink"`` links the images instead of
    copying them. Returns the path of ``dataset.yaml``.

    Example::

        yaml_path = export_yolo(train_view, "yolo_data", classes=["car", "person"])
        export_yolo(val_view, "yolo_data", classes=["car", "person"], split="val")
    """
    import fiftyone.utils.yolo as fouy

    export_dir = Path(export_dir)
    classes = resolve_classes(view, label_field, classes)
    if len(view) == 0:
        raise DequityError(f"the view to export as split {split!r} is empty")
    if weights is None:
        weights = view_weights(view, weight_field)
    elif len(weights) != len(view):
        raise DequityError(f"need one weight per sample: {len(weights)} for {len(view)} samples")
    exported: list[tuple[str, str]] = []

    class _Exporter(fouy.YOLOv5DatasetExporter):
        """FiftyOne's YOLOv5 exporter, noting where each image went."""

        def export_sample(self, image_or_path, label, metadata=None):  # noqa: D102
            media = self._media_exporter
            export = media.export

            def noting(path):
                out = export(path)
                exported.append((path, out[0]))
                return out

            media.export = noting
            try:
                super().export_sample(image_or_path, label, metadata=metadata)
            finally:
                media.export = export

    view.export(
        dataset_exporter=_Exporter(
            str(export_dir), split=split, classes=list(classes), export_media=export_media
        ),
        label_field=label_field,
        progress=False,
    )
    if len(exported) != len(view):
        raise DequityError(f"exported {len(exported)} of {len(view)} images; check the media")
    rows = [
        {
            "split": split,
            "image": os.path.relpath(out, os.path.abspath(export_dir)),
            "sample_id": sample_id,
            "filepath": source,
            "weight": float(weight),
        }
        for (source, out), sample_id, weight in zip(exported, view.values("id"), weights)
    ]
    _append_rows(export_dir / WEIGHTS_FILE, rows, split)
    return export_dir / "dataset.yaml"


def _append_rows(path: Path, rows: list[dict[str, Any]], split: str) -> None:
    """Replaces ``split``'s rows of the weights file with ``rows``."""
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["split"] != split]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", "image", "sample_id", "filepath", "weight"])
        writer.writeheader()
        writer.writerows(kept + rows)


def read_weights(export_dir: str | Path, split: str | None = None) -> dict[str, float]:
    """``{image key: weight}`` from an export's ``dequity_weights.csv``.

    Keys are :func:`training.yolo_loss.image_key` of each image, the keys the
    weighted trainer looks images up by.

    Example::

        weights = read_weights("yolo_data", "train")
    """
    from training.yolo_loss import image_key

    export_dir = Path(export_dir)
    path = export_dir / WEIGHTS_FILE
    if not path.exists():
        raise DequityError(f"{path} is missing; export the data with training.yolo.export_yolo")
    with open(path, newline="") as f:
        return {
            image_key(export_dir / r["image"]): float(r["weight"])
            for r in csv.DictReader(f)
            if split is None or r["split"] == split
        }


def _yolo_model(config: TrainConfig) -> str:
    """The run's model: a local ``.pt`` (``weights``), or a model YAML (``detector``)."""
    default = config.detector in (None, "", DEFAULT_DETECTOR)
    model = str(config.weights or (DEFAULT_YOLO_MODEL if default else config.detector))
    if model.endswith(".pt") and not Path(model).is_file():
        raise DequityError(
            f"YOLO weights {model} are not a local file; pass the path of a .pt file "
            f"(nothing is downloaded), or a model YAML such as {DEFAULT_YOLO_MODEL} to train "
            "from scratch"
        )
    if not model.endswith((".pt", ".yaml", ".yml")):
        raise DequityError(
            f"with framework='yolo' the detector is a YOLO model YAML (e.g. {DEFAULT_YOLO_MODEL}) "
            f"and weights a local .pt file, got {model!r}"
        )
    return model


def _yolo_overrides(
    config: TrainConfig, data_yaml: Path, epochs: int, project: Path
) -> dict[str, Any]:
    """Ultralytics settings of a run: the run's optimiser, no downloads, files in ``project``."""
    return {
        "model": _yolo_model(config),
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": config.image_size,
        "batch": config.batch_size,
        "nbs": config.batch_size,  # one optimiser step per batch, as in the torchvision framework
        "device": config.device,
        "workers": config.num_workers,
        "seed": config.seed,
        "deterministic": False,
        "optimizer": "AdamW",
        "lr0": config.lr,
        "lrf": 1.0,  # constant learning rate
        "momentum": 0.9,
        "weight_decay": config.weight_decay,
        "warmup_epochs": 0.0,
        "pretrained": False,
        "amp": False,  # the AMP check downloads a model
        "plots": False,  # plots download a font
        "val": False,  # dequity evaluates with FiftyOne; Ultralytics validates the last epoch
        "project": str(project),
        "name": "ultralytics",
        "exist_ok": True,
        "verbose": False,
    }


def yolo_predict(
    weights: str | Path,
    view: Any,
    field: str,
    classes: Sequence[str],
    *,
    image_size: int = 640,
    device: str = "cpu",
    batch_size: int = 8,
    conf: float = 0.05,
    progress: bool = False,
) -> int:
    """Runs a YOLO checkpoint on ``view`` and stores ``Detections`` in ``field``.

    Class ``k`` of the model is ``classes[k]``. Returns the number of samples.

    Kept instead of ``view.apply_model`` with ``fiftyone.utils.ultralytics``'
    ``FiftyOneYOLOModel``: it letterboxes every image to a square while
    Ultralytics' ``predict`` pads a batch of same-size images only to a stride
    multiple, which changed the box count of 40 of 40 demo frames (63 to 79 at
    ``conf=0.001``, 320 px) and took 1.4x as long; its ``rect=True`` override
    matched (to 6e-8, 1.1x the time) but fails on a batch of mixed aspect ratios.

    Example::

        yolo_predict("runs/yolo/yolo.pt", val_view, "yolo_predictions", ["car", "person"])
    """
    import fiftyone.core.labels as fol
    from tqdm.auto import tqdm

    from training.yolo_loss import YOLO  # offline settings first

    model = YOLO(str(weights), task="detect")
    ids, paths = view.values("id"), view.values("filepath")
    values = {}
    bar = tqdm(total=len(ids), desc="predict", disable=not progress, leave=False)
    for start in range(0, len(ids), batch_size):
        chunk = paths[start : start + batch_size]
        results = model.predict(
            chunk, imgsz=image_size, device=device, conf=conf, verbose=False, save=False
        )
        for sample_id, result in zip(ids[start : start + batch_size], results):
            boxes = result.boxes
            dets = [
                fol.Detection(
                    label=classes[int(k)],
                    bounding_box=[x1, y1, x2 - x1, y2 - y1],
                    confidence=float(c),
                )
                for (x1, y1, x2, y2), k, c in zip(
                    boxes.xyxyn.tolist(), boxes.cls.tolist(), boxes.conf.tolist()
                )
            ]
            values[sample_id] = fol.Detections(detections=dets)
        bar.update(len(chunk))
    bar.close()
    view.set_values(field, values, key_field="id")
    return len(values)


def check_yolo_config(config: TrainConfig) -> None:
    """Refuses settings a YOLO run cannot train, before any sample is read.

    Example::

        check_yolo_config(TrainConfig(framework="yolo", resume="runs/a"))  # DequityError
    """
    if config.resume is not None:
        raise DequityError("resume is not supported with framework='yolo'; train a new run")
    if config.weight_level != "image":
        raise DequityError("framework='yolo' weights whole images; use weight_level='image'")
    _yolo_model(config)


def fit_yolo(config: TrainConfig, data: RunData) -> TrainedRun:
    """Trains an Ultralytics YOLO detector with per-image weights; the runner's ``fit``.

    ``config.detector`` is a model YAML (default :data:`DEFAULT_YOLO_MODEL`,
    trained from scratch) and ``config.weights`` an optional local ``.pt`` to
    start from; ``steps`` round up to whole epochs. The training view is
    exported into ``<run_dir>/yolo_data`` and Ultralytics writes into
    ``<run_dir>/ultralytics``; the last weights are copied to
    ``<run_dir>/yolo.pt``, which the returned run predicts with
    (:func:`yolo_predict`).

    Example::

        trained = fit_yolo(TrainConfig(framework="yolo", epochs=10, image_size=320), data)
    """
    from training.yolo_loss import WeightedDetectionTrainer, image_key

    train_view, val_view = data.train_view, data.val_view
    weights = view_weights(
        train_view,
        config.weight_field,
        likelihood_field=config.likelihood_field,
        eta=config.eta,
        gamma=config.gamma,
    )
    draw = None
    if config.sampling_field is not None:
        power = config.sampling_power
        draw = sampling_probabilities(train_view, config.sampling_field, power).tolist()
    run_dir = config.run_dir
    data_dir = run_dir / "yolo_data"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(run_dir / "ultralytics", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_yaml = export_yolo(
        train_view, data_dir, label_field=config.label_field, classes=data.classes, weights=weights
    )
    # Ultralytics needs a validation split; without one it checks on the training images
    export_yolo(
        val_view if val_view is not None else train_view,
        data_dir,
        label_field=config.label_field,
        classes=data.classes,
        split="val",
        weight_field=None,
    )
    loss_weights = read_weights(data_dir, "train")
    sampling = None
    if draw is not None:
        sampling = {
            image_key(data_dir / r): p for r, p in zip(_split_images(data_dir, "train"), draw)
        }
    batches = math.ceil(len(train_view) / config.batch_size)
    epochs = math.ceil(config.steps / batches) if config.steps else (config.epochs or 1)
    record = run_record(config, data)
    record.update(
        framework="yolo",
        detector=_yolo_model(config),
        epochs=epochs,
        run_dir=str(run_dir.resolve()),
    )
    (run_dir / "config.json").write_text(json.dumps(record, indent=2))

    seed_everything(config.seed)
    rows: list[dict[str, Any]] = []
    logger = logging.getLogger("ultralytics")
    level = logger.level
    if not config.progress:
        logger.setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        trainer = WeightedDetectionTrainer(
            overrides=_yolo_overrides(config, data_yaml, epochs, run_dir),
            image_weights=loss_weights,
            sampling=sampling,
            normalize=config.normalize_weights,
            seed=config.seed,
        )
        _only_own_callbacks(trainer)
        trainer.add_callback("on_train_batch_end", lambda t: rows.append(_step_row(t, len(rows))))
        trainer.train()
    finally:
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    checkpoint = run_dir / YOLO_CHECKPOINT
    shutil.copyfile(trainer.last, checkpoint)

    metrics = [
        epoch_metrics(e, max(r["step"] for r in group), True, seconds / epochs, group)
        for e, group in enumerate(_by_epoch(rows))
    ]
    return TrainedRun(
        record=record,
        metrics=metrics,
        step_rows=rows,
        checkpoint=checkpoint,
        predict=partial(
            yolo_predict,
            checkpoint,
            classes=data.classes,
            image_size=config.image_size,
            device=config.device,
            batch_size=config.batch_size,
            progress=config.progress,
        ),
    )


def _only_own_callbacks(trainer: Any) -> None:
    """Drops Ultralytics' integrations (HUB, MLflow, W&B, TensorBoard, Ray Tune, ...).

    They would write outside the run folder or reach the network; the
    trainer's own callbacks and any added later stay.
    """
    for event, functions in trainer.callbacks.items():
        trainer.callbacks[event] = [
            f for f in functions if not _integration(getattr(f, "__module__", None) or "")
        ]


def _integration(module: str) -> bool:
    if module == "ultralytics.utils.events":  # usage analytics
        return True
    return module.startswith("ultralytics.utils.callbacks.") and not module.endswith(".base")


def _split_images(data_dir: Path, split: str) -> list[str]:
    with open(data_dir / WEIGHTS_FILE, newline="") as f:
        return [r["image"] for r in csv.DictReader(f) if r["split"] == split]


def _step_row(trainer: Any, done: int) -> dict[str, Any]:
    """One ``steps.csv`` row from the trainer after a batch."""
    from ultralytics.utils.torch_utils import unwrap_model

    items = {k: float(v) for k, v in (trainer.loss_items or {}).items()}
    criterion = unwrap_model(trainer.model).criterion
    row = {"step": done + 1, "epoch": trainer.epoch + 1, "loss": sum(items.values()), **items}
    row["mean_weight"] = getattr(criterion, "last_mean_weight", None)
    return row


def _by_epoch(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["epoch"], []).append(row)
    return list(groups.values())
