"""Groups of samples that count once: scenes, sequences, runs of near-duplicate frames.

Frames of one video are not independent draws: forty frames of one rare
event form a dense cluster and would make the event look common. When
samples carry a group (a scene or sequence id), a cluster's size is the
number of distinct groups among its members, and k-NN crowding counts
distinct groups in a sample's neighbourhood. Without a group field,
:func:`near_duplicate_groups` makes groups of consecutive frames whose
embeddings are near duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dequity.errors import DequityError


def group_codes(values: Sequence[Any], field: str = "group_field") -> np.ndarray:
    """Integer codes ``0..G-1`` of each sample's group value.

    Raises :class:`DequityError` when a value is missing: every sample must
    belong to a group, or the samples without one would count as nothing.

    Example::

        >>> group_codes(["b", "a", "b", "c"]).tolist()
        [1, 0, 1, 2]
    """
    missing = sum(v is None for v in values)
    if missing:
        raise missing_groups(missing, len(values), field)
    try:
        _, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    except (TypeError, ValueError) as e:
        raise DequityError(f"{field!r} must hold one hashable id per sample: {e}") from None
    return codes.astype(np.int64)


def missing_groups(missing: int, total: int, field: str) -> DequityError:
    return DequityError(
        f"{missing} of {total} samples have no value in {field!r}; set it on every "
        f"sample, or run on the samples that have one: samples.exists({field!r})"
    )


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise DequityError(f"collapse_near_duplicates must be a number, got {threshold!r}")
    if not 0 < threshold <= 1:
        raise DequityError(
            f"collapse_near_duplicates is a cosine similarity in (0, 1], got {threshold}; "
            "0.95 merges only near-identical consecutive frames"
        )


def near_duplicate_groups(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Groups of consecutive rows whose cosine similarity stays at or above ``threshold``.

    Rows are taken in order (e.g. the frames of a video by time): a new group
    starts wherever a row's cosine similarity to the row before falls below
    ``threshold``. Similarities are those of the centred rows (their mean
    removed), so that what every frame of a fixed camera shares does not
    count. ``threshold`` lies in ``(0, 1]``; the higher, the fewer frames are
    merged.

    Example::

        >>> v = np.array([[1.0, 0.0], [0.99, 0.05], [-1.0, 0.1], [-0.98, 0.1]])
        >>> near_duplicate_groups(v, 0.95).tolist()
        [0, 0, 1, 1]
    """
    _check_threshold(threshold)
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise DequityError(f"vectors must have shape (num_samples, dim), got {x.shape}")
    x = x - x.mean(axis=0)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = np.einsum("ij,ij->i", unit[1:], unit[:-1])
    return np.concatenate([[0], np.cumsum(similarity < threshold)]).astype(np.int64)


def distinct_groups_per_label(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For each sample, the number of distinct groups among the samples sharing its label.

    Example::

        >>> distinct_groups_per_label(np.array([0, 0, 0, 1]), np.array([5, 5, 6, 5])).tolist()
        [2, 2, 2, 1]
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.shape != groups.shape:
        raise DequityError(f"{len(groups)} group ids for {len(labels)} samples")
    pairs = np.unique(np.stack([labels, groups]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    return counts[np.searchsorted(ids, labels)]


def check_grouping(group_field: str | None, collapse_near_duplicates: float | None) -> None:
    """Raise :class:`DequityError` for a bad or contradictory grouping request."""
    if group_field is not None and collapse_near_duplicates is not None:
        raise DequityError(
            "pass group_field or collapse_near_duplicates, not both: with a group field "
            "the groups are known; near-duplicate collapsing is for data without one"
        )
    if group_field is not None and (not isinstance(group_field, str) or not group_field):
        raise DequityError(f"group_field must be a field name, got {group_field!r}")
    if collapse_near_duplicates is not None:
        _check_threshold(collapse_near_duplicates)
