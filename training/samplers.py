"""Weighted sampling: the DatasetEquity weights as draw probabilities, for any framework.

Sampling and loss weighting give the same expected gradient: drawing image
``i`` with probability ``w_i / sum_j w_j`` and averaging its unweighted loss
has the expectation ``sum_i w_i * l_i / sum_j w_j``, the weighted loss with
weights normalised to mean 1. They differ in variance and in what a batch
holds: sampling repeats images (an epoch of ``N`` draws with replacement
shows only about ``1 - 1/e``, 63 %, of the distinct images when the weights
are equal) and leaves others out, so its gradient estimate is noisier; loss
weighting sees every image once per epoch and only scales its term. Sampling
needs no change to the loss, so it works with any trainer whose data loader
accepts a sampler (torch ``WeightedRandomSampler``) or a repeat factor per
image (detectron2, mmdet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from dequity import list_dequity_runs
from dequity.defaults import DEFAULT_RUN_KEY
from dequity.errors import DequityError
from dequity.store import compat as fc

__all__ = ["repeat_factors", "run_weight_field", "sample_weights", "weighted_sampler"]


def run_weight_field(view: Any, run_key: str = DEFAULT_RUN_KEY) -> str:
    """The sample field holding the weights of dequity run ``run_key`` (from its config).

    Example::

        run_weight_field(dataset, "dequity")  # 'dequity_weight'
    """
    dataset = fc.root_dataset(view)
    runs = list_dequity_runs(dataset)  # finishes a run whose commit was cut short
    if run_key not in runs:
        raise DequityError(
            f"dataset {dataset.name!r} has no dequity run {run_key!r}; its dequity runs are "
            f"{runs}; compute one with `dequity compute --dataset {dataset.name} "
            f"--run-key {run_key}` (dequity.compute_dequity(dataset, run_key={run_key!r}))"
        )
    field = dataset.get_run_info(run_key).config.weight_field
    if not dataset.has_sample_field(field):
        raise DequityError(
            f"dequity run {run_key!r} names the weight field {field!r}, which the dataset no "
            f"longer has; recompute the run with dequity.compute_dequity(dataset, "
            f"run_key={run_key!r}, overwrite=True)"
        )
    return field


def sample_weights(view: Any, run_key: str = DEFAULT_RUN_KEY) -> np.ndarray:
    """The weights of dequity run ``run_key``, one per sample in the view's order (float64).

    Raises :class:`DequityError` when a sample has none, or a weight is
    negative or not finite, or all are 0.

    Example::

        w = sample_weights(dataset.match_tags("train"), "dequity")
    """
    field = run_weight_field(view, run_key)
    values = view.values(field)
    missing = sum(v is None for v in values)
    if missing:
        raise DequityError(
            f"{missing} of the {len(values)} samples of the view have no {field!r}; "
            f"recompute run {run_key!r} on the whole dataset with `dequity compute`"
        )
    if not values:
        raise DequityError("the view is empty; there is nothing to sample")
    weights = np.asarray(values, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise DequityError(f"{field!r} must hold finite values >= 0, not all zero")
    return weights


def weighted_sampler(
    view: Any,
    run_key: str = DEFAULT_RUN_KEY,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler drawing each image with probability proportional to its weight.

    Indices follow the view's order, which is the order of
    ``view.to_torch(...)`` (and so of :func:`training.detection_dataset`).
    Draws are with replacement; ``num_samples`` (default: the view's size)
    is the number of draws per epoch.

    Example::

        ds = training.detection_dataset(train_view, "ground_truth")
        loader = DataLoader(ds, batch_size=8, collate_fn=training.collate_detection,
                            sampler=training.weighted_sampler(train_view, "dequity"))
    """
    weights = torch.as_tensor(sample_weights(view, run_key), dtype=torch.double)
    count = len(weights) if num_samples is None else int(num_samples)
    if count < 1:
        raise DequityError(f"num_samples must be >= 1, got {num_samples}")
    return WeightedRandomSampler(weights, count, replacement=True, generator=generator)


def repeat_factors(view: Any, run_key: str = DEFAULT_RUN_KEY) -> torch.Tensor:
    """Per-image repeat factors proportional to the weights, the smallest positive one 1.

    A float32 tensor in the view's order, ``w_i / min_{w_j > 0} w_j``: the
    form of detectron2's ``RepeatFactorTrainingSampler(repeat_factors)`` (which
    repeats image ``i`` ``floor(r_i)`` times plus once more with probability
    ``r_i - floor(r_i)``, so in expectation ``r_i`` times, each epoch) and of
    the list that mmdet's ``ClassBalancedDataset._get_repeat_factors`` returns
    (``.tolist()``; mmdet repeats ``ceil(r_i)`` times, so its repeats are
    proportional to the weights only up to that rounding). An image of weight
    0 gets 0 (never drawn). The frameworks' datasets must list the images in
    the view's order (e.g. exported from the view).

    Example::

        from detectron2.data.samplers import RepeatFactorTrainingSampler
        sampler = RepeatFactorTrainingSampler(training.repeat_factors(train_view, "dequity"))
        # mmdet: a ClassBalancedDataset subclass whose _get_repeat_factors returns
        # training.repeat_factors(train_view, "dequity").tolist()
    """
    weights = sample_weights(view, run_key)
    smallest = weights[weights > 0].min()
    return torch.as_tensor(weights / smallest, dtype=torch.float32)
