"""``compute_dequity(..., likelihood_backend="ray")``: the likelihood stage in partitions on Ray.

For collections whose vectors do not fit one machine. The vectors stay in
their field; no process holds them all:

1. the driver counts the samples with a vector, streams their ids once to
   find the rows that the fit needs (:func:`dequity.pipeline.partitioned.fit_rows`,
   the local stage's own seeded draws), reads those vectors and fits the
   projection, the crowding radius and the reference clusters;
2. Ray tasks read one ``_id`` range of the collection each, project and place
   its samples, and return its tally (cluster sizes, largest crowding count);
   their placements stay in Ray's object store;
3. the driver sums the tallies; a second task per range computes its samples'
   likelihoods and weights and stages them into the run's staging collection,
   under the claim and journal every run uses, then the driver commits.

A task that fails fails the run, and nothing is written (the staging
collection is dropped). The driver still holds, per sample, the id,
cluster, likelihood and 2-D point that the run record stores, so its memory
grows with the number of samples, by far less than the vectors'.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.api.targets import ImageTarget, clear_left_fields, replaced_samples
from dequity.errors import DequityError
from dequity.pipeline import clustering as dc
from dequity.pipeline import partitioned as pt
from dequity.pipeline import views as dv
from dequity.pipeline.fit import LikelihoodFit
from dequity.pipeline.score import Settings, points_2d
from dequity.pipeline.weights import gfl_weight
from dequity.sources.embeddings import (
    decode_stored_vectors,
    validate_embeddings_field,
    validate_vectors,
)
from dequity.sources.parse import LOCAL, RAY
from dequity.sources.ray import check_resources, connect, dequity_error_in, import_ray
from dequity.store import compat as fc
from dequity.store import staging
from dequity.store.columns import run_columns
from dequity.store.dataset import Store, Writer
from dequity.store.runs import DequityResults
from dequity.store.staging import BATCH_SPAN

logger = logging.getLogger(__name__)

LIKELIHOOD_BACKENDS = (LOCAL, RAY)
#: options of the likelihood stage on Ray (``ray_options``)
RAY_STAGE_OPTIONS = ("num_workers", "num_cpus_per_worker", "address")
#: samples per partition: a task holds about ``rows x (dim + 60) x 4`` bytes
PARTITION_ROWS = 100_000


def check_likelihood_backend(
    backend: str,
    *,
    embeddings: Any,
    patches_field: str | None,
    group_field: str | None,
    collapse_near_duplicates: float | None,
    embedding_backend: str,
    ray_options: dict | None,
) -> None:
    """Raise :class:`DequityError` unless a run can use likelihood stage ``backend``.

    Example::

        check_likelihood_backend("ray", embeddings="vec", patches_field=None,
                                 group_field=None, collapse_near_duplicates=None,
                                 embedding_backend="local", ray_options={"num_workers": 4})
    """
    if backend not in LIKELIHOOD_BACKENDS:
        raise DequityError(
            f"likelihood_backend must be one of {LIKELIHOOD_BACKENDS}, got {backend!r}"
        )
    if backend == LOCAL:
        return
    if not isinstance(embeddings, str):
        raise DequityError(
            "likelihood_backend='ray' reads the vectors from a field in partitions: pass "
            "embeddings='<vector field>' (store computed embeddings with embeddings_field=... "
            "in an earlier run)"
        )
    if embedding_backend != LOCAL:
        raise DequityError(
            "likelihood_backend='ray' reads stored vectors; embed first (with "
            "embedding_backend='ray' and embeddings_field=...), then run it on that field"
        )
    for name, value in (
        ("patches_field", patches_field),
        ("group_field", group_field),
        ("collapse_near_duplicates", collapse_near_duplicates),
    ):
        if value is not None:
            raise DequityError(f"likelihood_backend='ray' does not support {name}; leave it unset")
    options = dict(ray_options or {})
    unknown = set(options) - set(RAY_STAGE_OPTIONS)
    if unknown:
        raise DequityError(
            f"unknown ray_options {sorted(unknown)} for likelihood_backend='ray'; "
            f"accepted: {sorted(RAY_STAGE_OPTIONS)}"
        )
    check_resources(options.get("num_workers", 2), options.get("num_cpus_per_worker", 1))


@dataclass
class RayStageTarget:
    """An image run whose likelihood stage runs on Ray; the vectors stay in ``field``.

    Wraps the run's checked :class:`~dequity.api.targets.ImageTarget` and
    replaces its :meth:`run`.

    Example::

        target = RayStageTarget(target_for(store, "dequity", None, **inputs), "vec", {})
        target.run(writer, "dequity", config, settings, progress=True)
    """

    image: ImageTarget
    field: str
    ray_options: dict

    @property
    def recorded(self) -> dict[str, Any]:
        """What the run's config records about the input."""
        return self.image.recorded

    @property
    def size(self) -> int:
        """How many items the run scores."""
        return self.image.size

    def check(self, run_key: str) -> None:
        """Raise :class:`DequityError` if the samples cannot take the run."""
        self.image.check(run_key)

    def run(
        self, writer: Writer, run_key: str, config: Any, settings: Settings, progress: Any
    ) -> DequityResults:
        """The run, its likelihood stage on Ray (:func:`run_on_ray`)."""
        pt.check_partitionable(settings)
        store = self.image.store
        options = self.ray_options
        return run_on_ray(store, writer, run_key, config, settings, self.field, options, progress)


@dataclass(frozen=True)
class _Partition:
    """Samples with ``lo <= _id < hi`` of the run's collection (None: unbounded)."""

    number: int
    lo: Any
    hi: Any


def run_on_ray(
    store: Store,
    writer: Writer,
    run_key: str,
    config: Any,
    settings: Settings,
    field: str,
    ray_options: dict,
    progress: Any = None,
) -> DequityResults:
    """Score the vectors of ``field`` in partitions on Ray and write the run (see the module doc).

    Example::

        with store.writing("dequity") as writer:
            run_on_ray(store, writer, "dequity", config, settings, "embedding", {})
    """
    ray = import_ray()
    samples = store.samples
    validate_embeddings_field(samples, field)
    n = samples.count(field)
    if n == 0:
        raise DequityError(f"no sample has a value in field {field!r}; nothing to score")
    rows = pt.fit_rows(n, settings)
    logger.info("Reading the %d vectors the fit needs, of %d...", len(rows.all), n)
    fit_ids, fit_vectors = _fit_vectors(samples, field, rows)
    if settings.views and dv.applies(fit_vectors):
        raise DequityError("likelihood_backend='ray' scores the whole vector only; pass views=None")
    config.views = None
    fit = pt.fit_partitioned(rows, fit_vectors, settings)
    count = max(math.ceil(n / PARTITION_ROWS), 2 * int(ray_options.get("num_workers", 2)))
    partitions = _partitions(fit_ids, count)

    connect(ray, ray_options.get("address"))
    options = {
        "num_cpus": ray_options.get("num_cpus_per_worker", 1),
        "runtime_env": {"env_vars": fc.database_env()},
        "max_retries": 2,
    }
    place_task = ray.remote(num_returns=2, **options)(_place_partition)
    stage_task = ray.remote(**options)(_stage_partition)
    spec = {"view": fc.view_spec(samples), "field": field}
    logger.info("Placing %d samples in %d partitions on Ray...", n, len(partitions))
    fit_ref = ray.put(fit)
    placed = [place_task.remote(spec, fit_ref, p) for p in partitions]
    tallies = _gather(ray, [tally for tally, _ in placed], progress)
    fit = pt.finish(fit, sum(tallies, pt.Tally()))

    old = store.config(run_key)
    roles = ["cluster", "likelihood", "weight"] + (["rare_by"] if old and old.uses_views else [])
    columns = run_columns(config, {role: [] for role in roles})
    descriptors = [
        (r, (c.name, c.kind, c.description, c.owned)) for r, c in zip(roles, columns, strict=True)
    ]
    results = DequityResults(samples, config, run_key, fit=fit.to_dict(), backend=config.build())

    def stage(name: str) -> None:
        logger.info("Writing fields %s on Ray...", ", ".join(c.name for c in columns))
        finished = ray.put(fit)
        gfl = (config.eta, config.gamma)
        staged = [
            stage_task.remote(rows_ref, finished, gfl, descriptors, name, p.number)
            for p, (_, rows_ref) in zip(partitions, placed, strict=True)
        ]
        _collect(results, _gather(ray, staged, progress))
        cleared = replaced_samples(store, run_key, results.sample_ids) + results.missing_ids
        if cleared:
            blank = run_columns(config, {role: [] for role in roles}, blanks=len(cleared))
            staging.stage(name, cleared, blank, False, first_batch=len(partitions) * BATCH_SPAN)

    writer.commit(config, results, [], columns, index=config.weight_field, stage=stage)
    clear_left_fields(writer, store, old, config)
    return results


def _fit_vectors(samples: Any, field: str, rows: pt.FitRows) -> tuple[list, np.ndarray]:
    """Ids and vectors of the fit's rows (positions among the samples with a vector)."""
    wanted = rows.all
    ids: list = []
    position = 0
    at = 0
    for sample_id, present in fc.presence_rows(samples, field):
        if not present:
            continue
        if at < len(wanted) and position == wanted[at]:
            ids.append(sample_id)
            at += 1
        position += 1
    if len(ids) != len(wanted):
        raise DequityError(
            f"field {field!r} changed while it was read (samples added or removed); run again"
        )
    by_id = samples.select([str(i) for i in ids], ordered=False)
    decoded = decode_stored_vectors(fc.stored_rows(by_id, field), len(ids))
    if decoded is None:
        raise DequityError(
            f"the vectors of field {field!r} differ in length or dtype; "
            "likelihood_backend='ray' needs one length and dtype"
        )
    found, vectors, _ = decoded
    order = {sample_id: i for i, sample_id in enumerate(found)}
    return ids, validate_vectors(vectors[[order[i] for i in ids]])


def _partitions(ids: list, count: int) -> list[_Partition]:
    """``count`` ranges of ``_id`` with about as many samples each, cut at quantiles of ``ids``."""
    ordered = sorted(ids)
    count = max(1, min(count, len(ordered)))
    cuts = [ordered[len(ordered) * k // count] for k in range(1, count)]
    bounds = [None, *cuts, None]
    return [_Partition(k, bounds[k], bounds[k + 1]) for k in range(count)]


def _read_partition(spec: dict, partition: _Partition) -> tuple[list, np.ndarray | None, list]:
    """``(ids, vectors, missing ids)`` of one partition, read in the task's process.

    ``vectors`` is None when no sample of the partition has one.
    """
    samples = fc.load_view(*spec["view"])
    bounds = {}
    if partition.lo is not None:
        bounds["$gte"] = partition.lo
    if partition.hi is not None:
        bounds["$lt"] = partition.hi
    part = samples.match({"_id": bounds}) if bounds else samples
    seen: list = []
    present = 0

    def rows() -> Iterator[tuple[Any, Any]]:
        nonlocal present
        for sample_id, value in fc.stored_rows(part, spec["field"]):
            seen.append(sample_id)
            present += value is not None
            yield sample_id, value

    decoded = decode_stored_vectors(rows())
    if decoded is None and not present:
        return [], None, [str(i) for i in seen]
    if decoded is None:
        raise DequityError(f"the vectors of field {spec['field']!r} differ in length or dtype")
    ids, vectors, present = decoded
    missing = [str(i) for i, ok in zip(ids, present, strict=True) if not ok]
    kept = [str(i) for i, ok in zip(ids, present, strict=True) if ok]
    return kept, validate_vectors(vectors), missing


def _place_partition(spec: dict, fit: LikelihoodFit, partition: _Partition) -> tuple:
    """A Ray task: the partition's tally, and its placed rows for :func:`_stage_partition`."""
    ids, vectors, missing = _read_partition(spec, partition)
    if vectors is None:  # no sample of the range has a vector
        labels, counts, points = np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 2))
    else:
        labels, counts, points = pt.place(fit, vectors)
    rows = {
        "ids": ids,
        "missing": missing,
        "labels": labels.astype(np.int32),
        "counts": counts.astype(np.int32),
        "points": points_2d(points).astype(np.float32),
    }
    return pt.Tally.of(labels, counts), rows


def _stage_partition(
    rows: dict,
    fit: LikelihoodFit,
    gfl: tuple[float, float],
    descriptors: list[tuple[str, tuple[str, str, str, bool]]],
    name: str,
    number: int,
) -> dict:
    """A Ray task: stage one partition's values; return what the run record keeps of them.

    ``descriptors``: ``(role, (field, kind, description, owned))`` of each column.
    """
    likelihoods = pt.likelihoods(fit, rows["labels"], rows["counts"])
    values = {
        "cluster": rows["labels"].tolist() if len(rows["labels"]) else [None] * len(rows["ids"]),
        "likelihood": likelihoods.tolist(),
        "weight": gfl_weight(likelihoods, *gfl).tolist(),
        "rare_by": [None] * len(rows["ids"]),
    }
    columns = [
        staging.Column(n, kind, description, values[role], owned)
        for role, (n, kind, description, owned) in descriptors
    ]
    staging.stage(name, rows["ids"], columns, False, first_batch=number * BATCH_SPAN)
    return {
        "ids": rows["ids"],
        "missing": rows["missing"],
        "labels": rows["labels"],
        "likelihoods": likelihoods,
        "points": rows["points"],
    }


def _collect(results: DequityResults, parts: list[dict]) -> None:
    """Fill the run record's per-sample values from the staged partitions."""
    results.sample_ids = [i for p in parts for i in p["ids"]]
    results.missing_ids = [i for p in parts for i in p["missing"]]
    if results.config.clustering != dc.KNN:
        results.labels = np.concatenate([p["labels"] for p in parts]).astype(int).tolist()
    results.likelihoods = np.concatenate([p["likelihoods"] for p in parts]).tolist()
    results.points = np.concatenate([p["points"] for p in parts]).astype(float).tolist()


def _gather(ray: Any, refs: list, progress: Any) -> list:
    """The tasks' values in order, with a progress bar; one :class:`DequityError` on a failure."""
    import fiftyone.core.utils as fou

    pending = list(refs)
    try:
        with fou.ProgressBar(total=len(refs), progress=progress) as pb:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                pb.update(len(done))
        return ray.get(refs)
    except Exception as e:
        raise dequity_error_in(e) or DequityError(
            f"the likelihood stage on Ray failed: {str(e).strip().splitlines()[-1:]}; check "
            "that every worker has dequity installed and can reach the database"
        ) from e
