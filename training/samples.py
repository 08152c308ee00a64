"""The samples a training run reads: a dataset or saved view, its split, draw weights.

Example::

    samples = load_samples("kitti", view="daytime")
    train_view, val_view = split_view(samples, train_tag="train", val_tag="val")
    draw = sampling_probabilities(train_view, "dequity_weight")
"""

from __future__ import annotations

import random
from typing import Any

import torch

from dequity.errors import DequityError
from dequity.store import compat as fc

__all__ = ["load_samples", "sampling_probabilities", "split_view"]


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


def sampling_probabilities(train_view: Any, field: str, power: float = 1.0) -> torch.Tensor:
    """Non-negative draw weights of the training images, in the view's order.

    The values of the numeric ``field`` raised to ``power``; a DequityError
    when one is missing, negative or not finite, or all are zero. With a
    negative ``power`` (a likelihood turned into a draw weight), zeros take
    the smallest positive value, so the rarest images are drawn most but
    finitely often.

    Example::

        draw = sampling_probabilities(train_view, "dequity_weight")
        sampler = WeightedRandomSampler(draw, len(draw))
        rare_first = sampling_probabilities(train_view, "dequity_likelihood", power=-0.5)
    """
    values = train_view.values(field)
    if any(v is None for v in values):
        raise DequityError(f"some training samples have no {field!r}; set it on every sample")
    draw = torch.as_tensor(values, dtype=torch.double)
    if not torch.isfinite(draw).all() or (draw < 0).any() or draw.sum() <= 0:
        raise DequityError(f"{field!r} must hold finite values >= 0, not all zero")
    if power < 0:
        draw = draw.clamp(min=draw[draw > 0].min())
    return draw**power
