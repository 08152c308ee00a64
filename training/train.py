"""Train a torchvision detector on a FiftyOne view with DatasetEquity weights.

A run folder holds ``config.json``, ``metrics.json``/``metrics.csv`` (one row
per epoch), ``steps.csv`` (one row per step), ``checkpoint.pt``,
``loss_curve.png`` and ``evaluation.json``. The run is also recorded on the
dataset (``dataset.list_runs()``), its predictions on the validation view are
stored in ``<train_key>_predictions`` and evaluated under ``<train_key>_eval``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from dequity.errors import DequityError
from training.datasets import (
    DEFAULT_WEIGHT_FIELD,
    FiftyOneTorchDataset,
    collate_detection,
    detection_dataset,
    resolve_classes,
)
from training.detectors import DEFAULT_DETECTOR, build_detector
from training.evaluate import evaluate_predictions, predict
from training.losses import weight_image_losses
from training.plots import plot_loss_curve
from training.records import METHOD, record_training_run

__all__ = ["TrainingResult", "load_samples", "split_view", "train_detector"]


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
        root = dataset._root_dataset
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


def _sampling_probabilities(train_view: Any, field: str) -> torch.Tensor:
    """Non-negative draw weights of the training images, in the view's order."""
    values = train_view.values(field)
    if any(v is None for v in values):
        raise DequityError(f"some training samples have no {field!r}; set it on every sample")
    draw = torch.as_tensor(values, dtype=torch.double)
    if not torch.isfinite(draw).all() or (draw < 0).any() or draw.sum() <= 0:
        raise DequityError(f"{field!r} must hold finite values >= 0, not all zero")
    return draw


def _load_checkpoint(resume: str | Path) -> dict[str, Any]:
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise DequityError(f"no checkpoint at {path}; pass a run folder or its checkpoint.pt")
    return torch.load(path, map_location="cpu", weights_only=False)


def train_detector(
    samples: Any,
    *,
    train_key: str | None = None,
    view: str | None = None,
    label_field: str = "ground_truth",
    classes: Sequence[str] | None = None,
    weight_field: str | None = DEFAULT_WEIGHT_FIELD,
    likelihood_field: str | None = None,
    eta: float | None = None,
    gamma: float | None = None,
    normalize_weights: bool = False,
    sampling_field: str | None = None,
    train_tag: str | None = None,
    val_tag: str | None = None,
    val_fraction: float = 0.2,
    detector: str = DEFAULT_DETECTOR,
    weights: str | None = None,
    weights_backbone: str | None = None,
    image_size: int = 512,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 4,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    device: str = "cpu",
    seed: int = 0,
    num_workers: int = 0,
    vectorize: bool = False,
    output_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    evaluate: bool = True,
    progress: bool = True,
) -> TrainingResult:
    """Trains a detector on ``samples`` with per-image DatasetEquity weights.

    ``weight_field=None`` trains the unweighted baseline; ``eta``/``gamma``
    recompute the weights from the likelihood field; ``normalize_weights``
    divides each batch's weights by their mean (see :mod:`training.losses`).
    ``vectorize`` loads the label and weight fields once up front instead of
    per image (faster for small images, more memory).
    ``sampling_field`` resamples instead: each batch draws training images
    with replacement, with probability proportional to that numeric field.
    ``steps`` (or else ``epochs``, default 1) is the total including a resumed
    run's; ``resume`` is a run folder or checkpoint, and a resumed run starts a
    fresh pass over the data. Returns a :class:`TrainingResult`; the run is
    also recorded on the dataset under ``train_key``.

    Example::

        result = train_detector(dataset, train_key="dequity", classes=["person", "car"],
                                steps=2000, image_size=512, device="cuda")
        baseline = train_detector(dataset, train_key="baseline", weight_field=None, ...)
    """
    samples = load_samples(samples, view)
    dataset = samples._root_dataset
    if train_key is None:
        train_key = "baseline" if weight_field is None and eta is None else "dequity_train"
    if not train_key.isidentifier():
        raise DequityError(f"train_key must be a valid identifier, got {train_key!r}")
    if steps is not None and steps < 1 or epochs is not None and epochs < 1:
        raise DequityError("steps and epochs must be >= 1")
    if train_key in dataset.list_runs() and train_key not in dataset.list_runs(method=METHOD):
        raise DequityError(
            f"run key {train_key!r} is taken by another kind of run; pick another train key"
        )
    run_dir = Path(output_dir) if output_dir is not None else Path("runs") / train_key
    checkpoint_path = run_dir / "checkpoint.pt"
    if (
        resume is None
        and not overwrite
        and (checkpoint_path.exists() or train_key in dataset.list_runs())
    ):
        raise DequityError(
            f"training run {train_key!r} exists ({run_dir}); pass overwrite=True "
            "(--overwrite), resume it (--resume), or choose another train key"
        )
    state = _load_checkpoint(resume) if resume is not None else None

    classes = resolve_classes(samples, label_field, classes)
    train_view, val_view = split_view(
        samples, train_tag=train_tag, val_tag=val_tag, val_fraction=val_fraction, seed=seed
    )
    weighted = weight_field is not None or eta is not None or gamma is not None
    train_data = detection_dataset(
        train_view,
        label_field,
        classes,
        weight_field=weight_field,
        likelihood_field=likelihood_field,
        eta=eta,
        gamma=gamma,
        train=True,
        vectorize=vectorize,
    )
    config = {
        "train_key": train_key,
        "dataset": dataset.name,
        "view": view,
        "label_field": label_field,
        "classes": classes,
        "weight_field": weight_field,
        "likelihood_field": likelihood_field,
        "eta": eta,
        "gamma": gamma,
        "normalize_weights": normalize_weights,
        "sampling_field": sampling_field,
        "train_tag": train_tag,
        "val_tag": val_tag,
        "val_fraction": val_fraction,
        "num_train": len(train_view),
        "num_val": len(val_view) if val_view is not None else 0,
        "detector": detector,
        "weights": weights,
        "weights_backbone": weights_backbone,
        "image_size": image_size,
        "steps": steps,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": "AdamW",
        "device": device,
        "seed": seed,
        "num_workers": num_workers,
        "run_dir": str(run_dir.resolve()),
        "predictions_field": f"{train_key}_predictions",
        "eval_key": f"{train_key}_eval",
        "torch": torch.__version__,
    }

    _seed_everything(seed)
    model = build_detector(
        detector,
        len(classes) + 1,
        image_size=image_size,
        weights=weights,
        weights_backbone=weights_backbone,
    )
    if weighted:
        weight_image_losses(model, normalize=normalize_weights)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    step, epoch, metrics, step_rows = 0, 0, [], []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch = state["step"], state["epoch"]
        metrics, step_rows = state.get("metrics", []), state.get("step_rows", [])
        for group in optimizer.param_groups:
            group["lr"] = lr
        _seed_everything(seed + epoch)

    draw = None if sampling_field is None else _sampling_probabilities(train_view, sampling_field)
    batches_per_epoch = math.ceil(len(train_data) / batch_size)
    total_steps = steps if steps is not None else (epochs or 1) * batches_per_epoch
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc=f"train {train_key}", disable=not progress)
    model.train()
    while step < total_steps:
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        sampler = (
            RandomSampler(train_data, generator=generator)
            if draw is None
            else WeightedRandomSampler(draw, len(train_data), generator=generator)
        )
        loader = DataLoader(
            train_data,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_detection,
            worker_init_fn=FiftyOneTorchDataset.worker_init,
            drop_last=len(train_data) >= batch_size,
        )
        start, epoch_rows = time.perf_counter(), []
        for images, targets in loader:
            images = [image.to(device) for image in images]
            losses = model(images, [_to(t, device) for t in targets])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise DequityError(
                    f"the loss became {float(loss)} at step {step + 1}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            step += 1
            row = {"step": step, "epoch": epoch + 1, "loss": loss.item()}
            row.update({k: v.item() for k, v in losses.items()})
            row["mean_weight"] = float(torch.stack([t["weight"] for t in targets]).mean())
            epoch_rows.append(row)
            step_rows.append(row)
            recent = [r["loss"] for r in step_rows[-20:]]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            bar.update(1)
            if step >= total_steps:
                break
        finished = len(epoch_rows) == len(loader)
        epoch_metrics = {
            "epoch": epoch + 1,
            "step": step,
            "complete": finished,
            "seconds": round(time.perf_counter() - start, 3),
        }
        for name in epoch_rows[0] if epoch_rows else ():
            if name not in ("step", "epoch"):
                epoch_metrics[name] = sum(r[name] for r in epoch_rows) / len(epoch_rows)
        metrics.append(epoch_metrics)
        epoch += 1 if finished else 0
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "config": config,
                "metrics": metrics,
                "step_rows": step_rows,
            },
            checkpoint_path,
        )
        if not finished:
            break
    bar.close()

    evaluation = None
    if evaluate and val_view is not None:
        dataset_eval = config["eval_key"]
        if dataset_eval in dataset.list_evaluations():
            dataset.delete_evaluation(dataset_eval)
        predict(
            model,
            val_view,
            config["predictions_field"],
            classes,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        evaluation = evaluate_predictions(
            val_view,
            config["predictions_field"],
            label_field,
            dataset_eval,
            classes,
            progress=progress,
        )
        if metrics:
            metrics[-1]["val_mAP"] = evaluation["mAP"]
        (run_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_csv(run_dir / "metrics.csv", metrics)
    if step_rows:
        _write_csv(run_dir / "steps.csv", step_rows)
        plot_loss_curve(
            [r["step"] for r in step_rows],
            [r["loss"] for r in step_rows],
            run_dir / "loss_curve.png",
            title=f"{train_key}: training loss",
        )
    record_training_run(
        dataset,
        train_key,
        config,
        {
            "metrics": metrics,
            "evaluation": evaluation,
            "run_dir": config["run_dir"],
            "checkpoint": str(checkpoint_path.resolve()),
        },
    )
    return TrainingResult(
        train_key=train_key,
        run_dir=run_dir,
        config=config,
        metrics=metrics,
        evaluation=evaluation,
        checkpoint=checkpoint_path,
        step_losses=[r["loss"] for r in step_rows],
    )
