"""Training a torchvision detector with DatasetEquity weights: the ``"torchvision"`` framework.

:func:`fit_torchvision` is this framework's step of a run
(:mod:`training.runner` loads, splits, evaluates and records around it). It
builds the detector (:func:`training.detectors.build_detector`) with the
weighted losses of :mod:`training.losses`, trains it with AdamW on the
training view (or on cached backbone features, :mod:`training.features`),
and after every (partial) epoch saves ``checkpoint.pt`` and
``checkpoint.json`` (:mod:`training.checkpoints`), from which a run resumes.

Example::

    result = training.train_detector(dataset, framework="torchvision", steps=500)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from dequity.errors import DequityError
from training.checkpoints import checkpoint_file, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.datasets import FiftyOneTorchDataset, collate_detection, detection_dataset
from training.detectors import build_detector
from training.evaluate import predict
from training.framework import RunData, TrainedRun, epoch_metrics, run_record, seed_everything
from training.losses import weight_image_losses
from training.samples import sampling_probabilities

__all__ = ["fit_torchvision"]


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
    train_data: Any
    record: dict[str, Any]
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    state: _Progress
    draw: torch.Tensor | None = None


def _to(target: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}


def _save_checkpoint(run: _Run) -> None:
    """The model and optimizer tensors, and the run's progress beside them."""
    state = run.state
    save_checkpoint(
        run.config.checkpoint,
        {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()},
        {
            "step": state.step,
            "epoch": state.epoch,
            "config": run.record,
            "metrics": state.metrics,
            "step_rows": state.step_rows,
        },
    )


def _resume(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float
) -> _Progress:
    """Loads a checkpoint into ``model`` and ``optimizer``; the new ``lr`` applies."""
    tensors, meta = load_checkpoint(path)
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = lr
    return _Progress(
        meta["step"], meta["epoch"], meta.get("metrics", []), meta.get("step_rows", [])
    )


def _prepare(config: TrainConfig, data: RunData) -> _Run:
    """Checks the checkpoint to resume, builds the data, model and optimizer, resumes.

    Writes the run folder's ``config.json``; nothing else is written yet.
    """
    classes, train_view = data.classes, data.train_view
    checkpoint = checkpoint_file(config.resume) if config.resume is not None else None
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
        else sampling_probabilities(train_view, config.sampling_field, config.sampling_power)
    )
    record = run_record(config, data)

    seed_everything(config.seed)
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
        seed_everything(config.seed + state.epoch)

    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / "config.json").write_text(json.dumps(record, indent=2))
    return _Run(config, train_data, record, model, params, optimizer, state, draw)


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
        state.metrics.append(epoch_metrics(state.epoch, state.step, finished, seconds, epoch_rows))
        state.epoch += 1 if finished else 0
        _save_checkpoint(run)
        if not finished:
            break
    bar.close()


def fit_torchvision(config: TrainConfig, data: RunData) -> TrainedRun:
    """Trains a torchvision detector on the run's training view; the runner's ``fit``.

    Resumes from ``config.resume`` when given and saves a checkpoint after
    every (partial) epoch. The :class:`training.framework.TrainedRun` it
    returns predicts with the trained model (:func:`training.evaluate.predict`).

    Example::

        trained = fit_torchvision(TrainConfig(steps=100, weight_field=None), data)
    """
    run = _prepare(config, data)
    _train_loop(run)
    return TrainedRun(
        record=run.record,
        metrics=run.state.metrics,
        step_rows=run.state.step_rows,
        checkpoint=config.checkpoint,
        predict=partial(
            predict,
            run.model,
            classes=data.classes,
            batch_size=config.batch_size,
            device=config.device,
            progress=config.progress,
        ),
    )
