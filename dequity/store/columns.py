"""The values a write sets: one builder for image, object, update and reweight writes.

A write (:meth:`dequity.store.dataset.Writer.commit`) takes sample ids and
:class:`~dequity.store.commit.Column` values aligned with them. Every kind of
write builds them here, from the run's config and the values by role
(``cluster``, ``likelihood``, ``weight``, ``rare_by``), so a field's name, kind
and description are decided in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dequity.pipeline.weights import gfl_weight
from dequity.store.names import (
    FIELD_DESCRIPTIONS,
    KINDS,
    OBJECT_DESCRIPTIONS,
    SAMPLE_WEIGHT_DESCRIPTION,
)
from dequity.store.staging import Column, ObjectColumns


def run_columns(
    config: Any,
    values: Mapping[str, Sequence[Any]],
    blanks: int = 0,
) -> list[Column]:
    """One column per role in ``values``, padded with ``blanks`` cleared values.

    ``values[role][i]`` is the value for the commit's ``i``-th id (None
    clears it); a shorter list covers the first ids. ``rare_by`` is owned by
    the run only while it scores views; written by a run that no
    longer does, it clears what an earlier run left.

    Example::

        run_columns(config, {"likelihood": p, "weight": w})   # a write of two fields
        run_columns(config, {"weight": w})                    # a reweight
    """
    columns = []
    for role, role_values in values.items():
        columns.append(
            Column(
                getattr(config, f"{role}_field"),
                KINDS[role],
                FIELD_DESCRIPTIONS[role],
                list(role_values) + [None] * blanks,
                owned=role != "rare_by" or config.uses_views,
            )
        )
    return columns


def embedding_column(field: str, vectors: np.ndarray) -> Column:
    """The column that keeps computed image embeddings in ``field`` for later runs.

    Example::

        embedding_column("embedding", emb.vectors)
    """
    return Column(field, "vector", "image embedding", vectors, owned=False)


def object_columns(
    config: Any, results: Any, scope: Sequence[str] = ()
) -> tuple[list[str], list[Column], ObjectColumns]:
    """``(sample ids, sample columns, object columns)`` of an object run's write.

    Every Detection of ``config.patches_field`` on the samples ``scope`` and
    on the samples of the run's objects gets the run's attributes, or loses
    them if the run did not score it; each sample's weight field is its
    largest object weight (None without a scored object). Weights follow
    ``config``'s ``eta`` and ``gamma``.

    Example::

        ids, columns, objects = object_columns(results.config, results)
    """
    weights = gfl_weight(np.asarray(results.likelihoods), config.eta, config.gamma)
    labels = results.labels or [None] * len(results.object_ids)
    names = (config.cluster_field, config.likelihood_field, config.weight_field)
    per_sample: dict[str, dict[str, list]] = {}
    for sample_id, object_id, label, p, w in zip(
        results.sample_ids, results.object_ids, labels, results.likelihoods, weights.tolist()
    ):
        entry = per_sample.setdefault(sample_id, {"ids": [], **{n: [] for n in names}})
        entry["ids"].append(object_id)
        for name, value in zip(names, (label, p, w)):
            entry[name].append(value)
    ids = list(dict.fromkeys([*scope, *per_sample]))
    sample_weights = [
        max(per_sample[i][config.weight_field]) if i in per_sample else None for i in ids
    ]
    roles = ("cluster", "likelihood", "weight")
    attributes = [
        (name, KINDS[role], OBJECT_DESCRIPTIONS[role], True) for name, role in zip(names, roles)
    ]
    sample_column = Column(config.weight_field, "float", SAMPLE_WEIGHT_DESCRIPTION, sample_weights)
    objects = ObjectColumns(config.patches_field, attributes, [per_sample.get(i) for i in ids])
    return ids, [sample_column], objects
