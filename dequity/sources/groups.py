"""Where a run's groups come from: a field of the samples, or near-duplicate frames.

The group ids are then counted by the array stages (:mod:`dequity.pipeline.groups`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.groups import group_codes, missing_groups, near_duplicate_groups


def check_group_field(samples: Any, group_field: str | None) -> None:
    """Raise :class:`DequityError` when ``group_field`` is missing from ``samples``."""
    if group_field is None:
        return
    if not samples.has_field(group_field):
        raise DequityError(
            f"the samples have no field {group_field!r} to group by; pass one of "
            f"{sorted(samples.get_field_schema())}, or collapse_near_duplicates=0.95 "
            "to count runs of near-identical frames once"
        )
    values = samples.values(_value_path(samples, group_field))
    missing = sum(v is None for v in values)
    if missing:
        raise missing_groups(missing, len(values), group_field)


def _value_path(samples: Any, group_field: str) -> str:
    """The path of the group's value: a ``Group`` field's id, else the field itself."""
    import fiftyone as fo

    field = samples.get_field(group_field)
    if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type, fo.Group):
        return f"{group_field}.id"
    return group_field


def sample_groups(
    samples: Any,
    embeddings: Any,
    group_field: str | None,
    collapse_near_duplicates: float | None,
) -> np.ndarray | None:
    """One group code per embedded sample (aligned with ``embeddings.sample_ids``), or None.

    For a FiftyOne grouped dataset's group field (a ``Group``), the group is its id.

    Example::

        groups = sample_groups(dataset, emb, "scene_id", None)
    """
    if collapse_near_duplicates is not None:
        return near_duplicate_groups(embeddings.vectors, collapse_near_duplicates)
    if group_field is None:
        return None
    ids, values = samples.values(["id", _value_path(samples, group_field)])
    by_id = dict(zip(ids, values))
    return group_codes([by_id[i] for i in embeddings.sample_ids], group_field)
