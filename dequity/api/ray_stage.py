"""``compute_dequity(..., likelihood_backend="ray")``: the likelihood stage in partitions on Ray.

For collections whose vectors do not fit one machine. The vectors stay in
their field of the dataset, or in Parquet shards (:mod:`dequity.sources.shards`,
written by the Ray embedding path); no process holds them all:

1. the driver counts the vectors and finds the rows that the fit needs
   (:func:`dequity.pipeline.partitioned.fit_rows`, the local stage's own
   seeded draws), reads those vectors and fits the projection, the crowding
   radius and the reference clusters;
2. Ray tasks read one partition each (an ``_id`` range of the collection, or
   a group of shard files), project and place its samples, and return its
   tally (cluster sizes, largest crowding count); their placements stay in
   Ray's object store;
3. the driver sums the tallies; a second task per partition computes its
   samples' likelihoods and weights and stages them into the run's staging
   collection, under the claim and journal every run uses; samples that an
   earlier run scored and this one does not are found on the server and
   cleared; then the driver commits.

A task that fails fails the run, and nothing is written (the staging
collection is dropped). The run record (:class:`~dequity.store.field_results.FieldBackedResults`)
keeps the fit and the cluster sizes, not per-sample values, so the driver's
memory does not grow with the number of samples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.api.targets import ImageTarget, clear_left_fields
from dequity.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from dequity.errors import DequityError
from dequity.pipeline import partitioned as pt
from dequity.pipeline import views as dv
from dequity.pipeline.fit import LikelihoodFit
from dequity.pipeline.score import Settings
from dequity.pipeline.weights import gfl_weight
from dequity.sources.embeddings import (
    decode_stored_vectors,
    validate_embeddings_field,
    validate_vectors,
)
from dequity.sources.parse import LOCAL, RAY
from dequity.sources.ray import (
    check_resources,
    connect,
    dequity_error_in,
    embed_to_shards,
    import_ray,
)
from dequity.sources.shards import Shards
from dequity.store import compat as fc
from dequity.store import staging
from dequity.store.columns import embedding_column, run_columns
from dequity.store.dataset import Store, Writer
from dequity.store.field_results import FieldBackedResults
from dequity.store.runs import DequityResults
from dequity.store.staging import BATCH_SPAN

logger = logging.getLogger(__name__)

LIKELIHOOD_BACKENDS = (LOCAL, RAY)
#: options of the likelihood stage on Ray (``ray_options``)
RAY_STAGE_OPTIONS = ("num_workers", "num_cpus_per_worker", "address")
#: what ``ray_options`` may add when the run also embeds on Ray; ``shards``: the
#: directory the workers write the vectors to, kept after the run
RAY_EMBEDDING_OPTIONS = ("num_gpus_per_worker", "shards")
#: samples per partition: a task holds about ``rows x (dim + 60) x 4`` bytes
PARTITION_ROWS = 100_000
#: the role of the shards' vectors when a run keeps them in a field
VECTORS = "vectors"
_WHOLE_VECTOR_ONLY = "likelihood_backend='ray' scores the whole vector only; pass views=None"


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
        if isinstance(embeddings, Shards):
            raise DequityError(
                "vector shards feed the likelihood stage on Ray: pass likelihood_backend='ray' "
                "(or read them with Shards.read and pass the array)"
            )
        return
    if embeddings is None and embedding_backend != RAY:
        raise DequityError(
            "likelihood_backend='ray' reads the vectors in partitions: pass embeddings='<vector "
            "field>' or embeddings=Shards.open(<dir>), or embed on Ray first "
            "(embedding_backend='ray'), whose workers write the vectors to shards"
        )
    if embeddings is not None and not isinstance(embeddings, str | Shards):
        raise DequityError(
            "likelihood_backend='ray' reads the vectors in partitions, not from an array: "
            "pass embeddings='<vector field>' or embeddings=Shards.open(<dir>)"
        )
    for name, value in (
        ("patches_field", patches_field),
        ("group_field", group_field),
        ("collapse_near_duplicates", collapse_near_duplicates),
    ):
        if value is not None:
            raise DequityError(f"likelihood_backend='ray' does not support {name}; leave it unset")
    options = dict(ray_options or {})
    if "shards" in options and embedding_backend != RAY:
        raise DequityError(
            "ray_options 'shards' is where embedding on Ray writes the vectors; "
            "it needs embedding_backend='ray'"
        )
    accepted = RAY_STAGE_OPTIONS + (RAY_EMBEDDING_OPTIONS if embedding_backend == RAY else ())
    unknown = set(options) - set(accepted)
    if unknown:
        raise DequityError(
            f"unknown ray_options {sorted(unknown)} for likelihood_backend='ray'; "
            f"accepted: {sorted(accepted)}"
        )
    check_resources(
        options.get("num_workers", 2),
        options.get("num_cpus_per_worker", 1),
        options.get("num_gpus_per_worker", 0),
    )


@dataclass
class RayStageTarget:
    """An image run whose likelihood stage runs on Ray; no process holds every vector.

    Wraps the run's checked :class:`~dequity.api.targets.ImageTarget` and
    replaces its :meth:`run`. The vectors come from the image target's
    source: a field, :class:`~dequity.sources.shards.Shards`, or a model that
    embeds on Ray into shards first (``ray_options["shards"]``, else a
    temporary directory removed after the run).

    Example::

        target = RayStageTarget(target_for(store, "dequity", None, **inputs), {})
        target.run(writer, "dequity", config, settings, progress=True)
    """

    image: ImageTarget
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
        store, source = self.image.store, self.image.source
        options = {k: v for k, v in self.ray_options.items() if k in RAY_STAGE_OPTIONS}
        with self._vectors(settings, run_key) as vectors:
            return run_on_ray(
                store,
                writer,
                run_key,
                config,
                settings,
                vectors,
                options,
                progress,
                store_field=source.store_field,
            )

    @contextmanager
    def _vectors(self, settings: Settings, run_key: str) -> Iterator[str | Shards]:
        """The field or shards the stage reads; a model embeds into shards on Ray first."""
        source = self.image.source
        if source.field is not None or source.shards is not None:
            yield source.field if source.field is not None else source.shards
            return
        if settings.views and source.model_name == DEFAULT_MODEL:
            raise DequityError(_WHOLE_VECTOR_ONLY)  # checked before any image is embedded
        directory = self.ray_options.get("shards")
        temporary = directory is None
        if temporary:
            directory = tempfile.mkdtemp(prefix="dequity-shards-")
        try:
            yield embed_to_shards(
                self.image.store.samples,
                os.path.join(directory, run_key) if temporary else directory,
                source.model,
                batch_size=source.options.get("batch_size", DEFAULT_BATCH_SIZE),
                skip_failures=source.options.get("skip_failures", True),
                **{k: v for k, v in self.ray_options.items() if k != "shards"},
            )
        finally:
            if temporary:
                shutil.rmtree(directory, ignore_errors=True)


def run_on_ray(
    store: Store,
    writer: Writer,
    run_key: str,
    config: Any,
    settings: Settings,
    vectors: str | Shards,
    ray_options: dict,
    progress: Any = None,
    store_field: str | None = None,
) -> FieldBackedResults:
    """Score ``vectors`` (a field's name, or shards) in partitions on Ray and write the run.

    See the module doc. ``store_field``: also write the shards' vectors to
    this field.

    Example::

        with store.writing("dequity") as writer:
            run_on_ray(store, writer, "dequity", config, settings, "embedding", {})
    """
    ray = import_ray()
    source = _input(store.samples, vectors)
    rows = pt.fit_rows(source.n, settings)
    logger.info("Reading the %d vectors the fit needs, of %d...", len(rows.all), source.n)
    fit_vectors = source.fit_vectors(rows)
    if settings.views and dv.applies(fit_vectors):
        raise DequityError(_WHOLE_VECTOR_ONLY)
    config.views = None
    fit = pt.fit_partitioned(rows, fit_vectors, settings)
    del fit_vectors
    count = max(math.ceil(source.n / PARTITION_ROWS), 2 * int(ray_options.get("num_workers", 2)))
    partitions = source.partitions(count)

    connect(ray, ray_options.get("address"))
    options = {
        "num_cpus": ray_options.get("num_cpus_per_worker", 1),
        "runtime_env": {"env_vars": fc.database_env()},
        "max_retries": 2,
    }
    place_task = ray.remote(num_returns=2, **options)(_place_partition)
    stage_task = ray.remote(**options)(_stage_partition)
    logger.info("Placing %d samples in %d partitions on Ray...", source.n, len(partitions))
    fit_ref = ray.put(fit)
    placed = [place_task.remote(fit_ref, p) for p in partitions]
    total = sum(_gather(ray, [tally for tally, _ in placed], progress), pt.Tally())
    fit = pt.finish(fit, total)

    old = store.config(run_key)
    roles = ["cluster", "likelihood", "weight"] + (["rare_by"] if old and old.uses_views else [])
    columns = run_columns(config, {role: [] for role in roles})
    if store_field is not None:
        roles.append(VECTORS)
        columns.append(embedding_column(store_field, np.empty((0, 0), np.float32)))
    descriptors = {
        role: (c.name, c.kind, c.description, c.owned)
        for role, c in zip(roles, columns, strict=True)
    }
    results = FieldBackedResults(
        store.samples,
        config,
        run_key,
        fit=fit.to_dict(),
        sizes=dict(total.sizes),
        backend=config.build(),
    )

    def stage(name: str) -> None:
        logger.info("Writing fields %s on Ray...", ", ".join(c.name for c in columns))
        finished = ray.put(fit)
        gfl = (config.eta, config.gamma)
        staged = [
            stage_task.remote(rows_ref, p, finished, gfl, descriptors, name)
            for p, (_, rows_ref) in zip(partitions, placed, strict=True)
        ]
        results.missing_ids += [i for part in _gather(ray, staged, progress) for i in part]
        if old is not None:
            _stage_cleared(store, name, old.likelihood_field, columns, len(partitions))

    writer.commit(config, results, [], columns, index=config.weight_field, stage=stage)
    clear_left_fields(writer, store, old, config)
    return results


def _stage_cleared(
    store: Store, name: str, field: str, columns: list[staging.Column], after: int
) -> None:
    """Stage blanks for the samples the earlier run scored and this one does not."""
    collection = fc.sample_collection_name(fc.root_dataset(store.samples))
    for number, ids in enumerate(staging.unstaged(name, collection, field), start=after):
        cleared = [dataclasses.replace(c, values=[None] * len(ids)) for c in columns]
        staging.stage(name, ids, cleared, False, first_batch=number * BATCH_SPAN)


@dataclass(frozen=True)
class _RangePart:
    """Samples with ``lo <= _id < hi`` (None: unbounded) of a view, vectors in ``field``."""

    number: int
    view: tuple[str, list[dict]]
    field: str
    lo: Any
    hi: Any

    def read(self) -> tuple[list[str], np.ndarray | None, list[str]]:
        """``(ids, vectors, missing ids)``, read in the task's process; None: no vector."""
        samples = fc.load_view(*self.view)
        bounds = {}
        if self.lo is not None:
            bounds["$gte"] = self.lo
        if self.hi is not None:
            bounds["$lt"] = self.hi
        part = samples.match({"_id": bounds}) if bounds else samples
        seen: list = []
        present = 0

        def rows() -> Iterator[tuple[Any, Any]]:
            nonlocal present
            for sample_id, value in fc.stored_rows(part, self.field):
                seen.append(sample_id)
                present += value is not None
                yield sample_id, value

        decoded = decode_stored_vectors(rows())
        if decoded is None and not present:
            return [], None, [str(i) for i in seen]
        if decoded is None:
            raise DequityError(f"the vectors of field {self.field!r} differ in length or dtype")
        ids, vectors, present = decoded
        missing = [str(i) for i, ok in zip(ids, present, strict=True) if not ok]
        kept = [str(i) for i, ok in zip(ids, present, strict=True) if ok]
        return kept, validate_vectors(vectors), missing


@dataclass(frozen=True)
class _ShardPart:
    """Files ``files`` of ``shards``, whose samples must all belong to the view ``view``."""

    number: int
    view: tuple[str, list[dict]]
    shards: Shards
    files: tuple[str, ...]

    def read(self) -> tuple[list[str], np.ndarray | None, list[str]]:
        """``(ids, vectors, missing ids)``, read in the task's process; None: no vector."""
        ids, vectors, missing = self.shards.read(self.files)
        listed = ids + missing
        found = len(fc.load_view(*self.view).select(listed)) if listed else 0
        if found != len(listed):
            raise DequityError(
                f"{len(listed) - found} samples of the shards in {self.shards.path!r} are not "
                "in the collection; write shards of this collection (embed_to_shards)"
            )
        return ids, (validate_vectors(vectors) if ids else None), missing


@dataclass
class _FieldInput:
    """Vectors in a field of the run's samples, read by ``_id`` range."""

    samples: Any
    field: str
    n: int
    fit_ids: list = dataclasses.field(default_factory=list)

    def fit_vectors(self, rows: pt.FitRows) -> np.ndarray:
        """The vectors of the fit's rows, in order; keeps their ids to cut the partitions."""
        self.fit_ids, vectors = _fit_vectors(self.samples, self.field, rows)
        return vectors

    def partitions(self, count: int) -> list[_RangePart]:
        """``count`` ranges of ``_id``, cut at quantiles of the fit's ids."""
        ordered = sorted(self.fit_ids)
        count = max(1, min(count, len(ordered)))
        bounds = [None, *(ordered[len(ordered) * k // count] for k in range(1, count)), None]
        spec = fc.view_spec(self.samples)
        return [_RangePart(k, spec, self.field, bounds[k], bounds[k + 1]) for k in range(count)]


@dataclass
class _ShardInput:
    """Vectors in :class:`~dequity.sources.shards.Shards`, read by groups of files."""

    samples: Any
    shards: Shards

    @property
    def n(self) -> int:
        return self.shards.num_vectors

    def fit_vectors(self, rows: pt.FitRows) -> np.ndarray:
        """The vectors of the fit's rows, in order, read file by file."""
        return validate_vectors(self.shards.take(rows.all)[1])

    def partitions(self, count: int) -> list[_ShardPart]:
        """Groups of consecutive files, about ``n / count`` vectors each."""
        light = dataclasses.replace(self.shards, missing_ids=())
        groups = self.shards.groups(max(1, math.ceil(self.n / count)))
        spec = fc.view_spec(self.samples)
        return [_ShardPart(k, spec, light, files) for k, files in enumerate(groups)]


def _input(samples: Any, vectors: str | Shards) -> _FieldInput | _ShardInput:
    """Where the stage reads its vectors, checked and counted."""
    if isinstance(vectors, Shards):
        return _ShardInput(samples, vectors)
    validate_embeddings_field(samples, vectors)
    n = samples.count(vectors)
    if n == 0:
        raise DequityError(f"no sample has a value in field {vectors!r}; nothing to score")
    return _FieldInput(samples, vectors, n)


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


def _place_partition(fit: LikelihoodFit, part: _RangePart | _ShardPart) -> tuple:
    """A Ray task: the partition's tally, and its placed rows for :func:`_stage_partition`."""
    ids, vectors, missing = part.read()
    if vectors is None:  # no sample of the partition has a vector
        labels, counts = np.empty(0, np.int64), np.empty(0, np.int64)
    else:
        labels, counts, _ = pt.place(fit, vectors)
    rows = {
        "ids": ids,
        "missing": missing,
        "labels": labels.astype(np.int32),
        "counts": counts.astype(np.int32),
    }
    return pt.Tally.of(labels, counts), rows


def _stage_partition(
    rows: dict,
    part: _RangePart | _ShardPart,
    fit: LikelihoodFit,
    gfl: tuple[float, float],
    descriptors: dict[str, tuple[str, str, str, bool]],
    name: str,
) -> list[str]:
    """A Ray task: stage one partition's values, and blanks for its samples without a vector.

    ``descriptors``: ``(field, kind, description, owned)`` of each role's
    column (``VECTORS``: the shards' vectors, kept in a field). Returns the
    partition's ids without a vector.
    """
    ids, missing = rows["ids"], rows["missing"]
    likelihoods = pt.likelihoods(fit, rows["labels"], rows["counts"])
    values = {
        "cluster": rows["labels"].tolist() if len(rows["labels"]) else [None] * len(ids),
        "likelihood": likelihoods.tolist(),
        "weight": gfl_weight(likelihoods, *gfl).tolist(),
        "rare_by": [None] * len(ids),
    }
    columns = []
    for role, (field, kind, description, owned) in descriptors.items():
        if role == VECTORS:  # the first len(ids) samples: those with a vector
            held = part.shards.read(part.files)[1] if ids else []
        else:
            held = values[role] + [None] * len(missing)
        columns.append(staging.Column(field, kind, description, held, owned))
    staging.stage(name, ids + missing, columns, False, first_batch=part.number * BATCH_SPAN)
    return missing


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
