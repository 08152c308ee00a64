"""Export a run's likelihoods and weights for other training code."""

from __future__ import annotations

import csv
import json
import pickle
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dequity.api.manage import load_dequity_results
from dequity.errors import DequityError
from dequity.pipeline.clustering import HDBSCAN_KNN
from dequity.pipeline.likelihood import cluster_sizes
from dequity.store import compat as fc

FORMATS = ("json", "csv", "pkl")
COLUMNS = ("id", "filepath", "cluster", "likelihood", "weight")
#: one row per object of an object run (``box``: relative ``[x, y, width, height]``)
OBJECT_COLUMNS = ("sample_id", "detection_id", "label", "box", "cluster", "likelihood", "weight")


def export_weights(
    samples: Any,
    run_key: str,
    path: str | Path,
    format: str | None = None,
    token_field: str | None = None,
) -> Path:
    """Write run ``run_key``'s per-sample values to ``path``.

    Formats (``format``, else the file suffix):

    - ``json``: ``{"run_key", "config", "samples": [{id, filepath, cluster,
      likelihood, weight}, ...]}``;
    - ``csv``: one row per sample with the same columns;
    - ``pkl``: the DatasetEquity authors' ``*_training_cluster_info.pkl``, a
      dict ``token -> {"cluster_id", "cluster_size", "largest_cluster_size"}``
      that their DD3D/BEVFormer forks read. The token is the image file's
      stem, or the value of ``token_field`` (e.g. a nuScenes sample token).
      Cluster sizes follow the run's noise policy, so
      ``cluster_size / largest_cluster_size`` is the run's likelihood (for
      ``clustering="hdbscan_knn"`` the size is fractional: the cluster's
      size scaled by the sample's crowding).

    For an object run (``patches_field``) the rows are objects: ``sample_id,
    detection_id, label, box, cluster, likelihood, weight``, with ``box``
    the relative ``[x, y, width, height]`` (in CSV four columns ``box_x,
    box_y, box_w, box_h``); the JSON key is ``"objects"``. The ``pkl``
    format holds images only and is refused.

    Samples without an embedding have empty values (and no ``pkl`` entry).
    Samples deleted from the dataset since the run are left out, with a
    warning. The ``pkl`` keys must be unique: file stems shared by several
    samples raise :class:`DequityError`; pass ``token_field`` then.

    Example::

        dequity.export_weights(dataset, "dequity", "kitti_weights.json")
        dequity.export_weights(dataset, "dequity", "kitti_training_cluster_info.pkl")
    """
    path = Path(path)
    format = format or path.suffix.lstrip(".").lower()
    if format not in FORMATS:
        raise DequityError(
            f"unknown export format {format!r}; use one of {FORMATS} or a path ending in one"
        )
    results = load_dequity_results(samples, run_key)
    config = results.config
    dataset = fc.root_dataset(samples)
    if results.is_object_run:
        return _export_objects(dataset, results, path, format)
    fields = ["id", "filepath", config.cluster_field, config.likelihood_field, config.weight_field]
    if token_field is not None:
        if not dataset.has_sample_field(token_field):
            raise DequityError(f"token_field {token_field!r} is not a field of the dataset")
        fields.append(token_field)
    run_ids = results.sample_ids + results.missing_ids
    run_view = dataset.select(run_ids, ordered=True)
    columns = run_view.values(fields)
    gone = len(run_ids) - len(columns[0])
    if gone:
        kept = set(columns[0])
        examples = [i for i in run_ids if i not in kept][:5]
        warnings.warn(
            f"{gone} samples of run {run_key!r} no longer exist in the dataset and are "
            f"left out of the export (e.g. {examples}); recompute the run to drop them",
            stacklevel=2,
        )
    rows = [dict(zip(COLUMNS, values)) for values in zip(*columns[:5])]
    path.parent.mkdir(parents=True, exist_ok=True)

    if format == "json":
        doc = {"run_key": run_key, "config": config.serialize(), "samples": rows}
        path.write_text(json.dumps(doc, indent=1))
    elif format == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        tokens = columns[5] if token_field else [Path(p).stem for p in columns[1]]
        _check_unique(tokens, token_field)
        path.write_bytes(pickle.dumps(_cluster_info(results, dict(zip(columns[0], tokens)))))
    return path


def _export_objects(dataset: Any, results: Any, path: Path, format: str) -> Path:
    """One row per scored object of an object run."""
    if format == "pkl":
        raise DequityError(
            f"run {results.key!r} is an object run; the authors' pkl holds one entry per "
            "image: export format 'json' or 'csv' instead"
        )
    field = results.config.patches_field
    view = dataset.select(list(dict.fromkeys(results.sample_ids)))
    ids, labels, boxes = view.values(
        [f"{field}.detections.id", f"{field}.detections.label", f"{field}.detections.bounding_box"]
    )
    found = {
        i: (label, list(map(float, box)))
        for sample in zip(ids, labels, boxes)
        for i, label, box in zip(*(v or [] for v in sample))
    }
    clusters = results.labels or [None] * len(results.object_ids)
    rows = [
        dict(zip(OBJECT_COLUMNS, (s, i, *found[i], c, p, w)))
        for s, i, c, p, w in zip(
            results.sample_ids,
            results.object_ids,
            clusters,
            results.likelihoods,
            results.weights.tolist(),
        )
        if i in found
    ]
    gone = len(results.object_ids) - len(rows)
    if gone:
        warnings.warn(
            f"{gone} objects of run {results.key!r} no longer exist in {field!r} and are "
            "left out of the export; recompute the run to drop them",
            stacklevel=3,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "json":
        doc = {"run_key": results.key, "config": results.config.serialize(), "objects": rows}
        path.write_text(json.dumps(doc, indent=1))
        return path
    header = [c for c in OBJECT_COLUMNS if c != "box"]
    header[3:3] = ["box_x", "box_y", "box_w", "box_h"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for row in rows:
            box = row.pop("box")
            writer.writerow({**row, **dict(zip(header[3:7], box))})
    return path


def _cluster_info(results: Any, token_by_id: dict[str, str]) -> dict[str, dict[str, int]]:
    if not results.labels:
        raise DequityError(
            f"run {results.key!r} used clustering='knn', which forms no clusters; the "
            "authors' pkl holds cluster sizes: export format 'json' or 'csv' instead"
        )
    sizes = cluster_sizes(results.labels, noise=results.config.noise)
    largest = int(sizes.max())
    if results.config.clustering == HDBSCAN_KNN:
        # a continuous likelihood: the size that gives it under the authors' loader
        sizes = np.asarray(results.likelihoods) * largest
    return {
        token_by_id[sample_id]: {
            "cluster_id": int(label),
            "cluster_size": size.item(),
            "largest_cluster_size": largest,
        }
        for sample_id, label, size in zip(results.sample_ids, results.labels, sizes)
        if sample_id in token_by_id
    }


def _check_unique(tokens: list[Any], token_field: str | None) -> None:
    """The pkl is keyed by token: two samples with one token would merge silently."""
    counts = Counter(tokens)
    repeated = {t: n for t, n in counts.items() if n > 1}
    if repeated:
        source = f"field {token_field!r}" if token_field else "the image file stems"
        examples = dict(list(repeated.items())[:5])
        raise DequityError(
            f"{len(repeated)} pkl keys from {source} are shared by several samples "
            f"(key: count, e.g. {examples}); pass token_field (--token-field) naming a "
            "field with a unique value per sample, such as a sample token"
        )
