"""Where a run's embeddings come from: a field, an array or a model, checked once."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from dequity.errors import DequityError
from dequity.pipeline.params import check_field_name, check_number
from dequity.sources import embeddings as de
from dequity.sources.models import model_name, resolve_precision
from dequity.sources.shards import Shards
from dequity.store import compat as fc
from dequity.store.names import field_names

#: ``"local"``: batched DataLoader inference in this process; ``"ray"``: one
#: actor per worker on a Ray cluster.
LOCAL, RAY = "local", "ray"
EMBEDDING_BACKENDS = (LOCAL, RAY)
EMBEDDING_OPTIONS = ("batch_size", "num_workers", "skip_failures", "device", "precision")
RAY_OPTIONS = ("num_workers", "num_cpus_per_worker", "num_gpus_per_worker", "address")
_LOCAL_ONLY = ("num_workers", "device", "precision")


@dataclasses.dataclass(frozen=True)
class EmbeddingSource:
    """A checked request for embeddings; :meth:`load` produces them.

    Exactly one of ``array``, ``field``, ``shards`` and ``model`` is set.
    ``store_field`` is where computed embeddings are kept for later runs (None:
    not kept). ``shards`` feed only the likelihood stage on Ray
    (:mod:`dequity.api.ray_stage`).
    """

    array: np.ndarray | None = None
    field: str | None = None
    model: Any = None
    shards: Shards | None = None
    store_field: str | None = None
    backend: str = LOCAL
    ray_options: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def model_name(self) -> str | None:
        """The model's name as recorded in the run config; None for given embeddings."""
        return None if self.model is None else model_name(self.model)

    @property
    def recorded_field(self) -> str | None:
        """The field the run's embeddings live in afterwards, if any."""
        return self.field or self.store_field

    def load(self, samples: Any, progress: Any = None) -> de.Embeddings:
        """The embeddings of ``samples``: read, checked or computed."""
        if self.field is not None:
            return de.from_field(samples, self.field)
        if self.array is not None:
            return de.from_array(samples, self.array)
        if self.backend == RAY:
            from dequity.sources.ray import embed_with_ray

            return embed_with_ray(
                samples,
                self.model,
                batch_size=self.options.get("batch_size", DEFAULT_BATCH_SIZE),
                skip_failures=self.options.get("skip_failures", True),
                **self.ray_options,
            )
        return de.from_model(samples, self.model, progress=progress, **self.options)


def parse_embeddings(
    samples: Any,
    run_key: str,
    embeddings: str | np.ndarray | Shards | None = None,
    model: Any = None,
    embeddings_field: str | None = None,
    backend: str = LOCAL,
    ray_options: dict | None = None,
    options: dict | None = None,
) -> EmbeddingSource:
    """Check the arguments of :func:`dequity.compute_dequity` that say how to embed.

    Raises :class:`DequityError` naming the problem before any image is read.

    Example::

        source = parse_embeddings(dataset, "dequity", model="efficientnet-lite0")
        emb = source.load(dataset)
    """
    options = dict(options or {})
    unknown = set(options) - set(EMBEDDING_OPTIONS)
    if unknown:
        raise DequityError(
            f"unknown arguments {sorted(unknown)}; embedding options are "
            f"{sorted(EMBEDDING_OPTIONS)}"
        )
    if embeddings is not None and model is not None:
        raise DequityError("pass either embeddings or model, not both")
    _check_options(options)
    _check_backend(backend, ray_options, embeddings, options)
    if "precision" in options:
        resolve_precision(options["precision"], options.get("device"))
    if embeddings_field is not None:
        check_field_name("embeddings_field", embeddings_field)

    if isinstance(embeddings, str):
        de.validate_embeddings_field(samples, embeddings)
        return EmbeddingSource(field=embeddings)
    if embeddings is not None and not isinstance(embeddings, Shards):
        return EmbeddingSource(array=embeddings, store_field=embeddings_field)
    if embeddings_field is not None:
        if embeddings_field in field_names(run_key).values():
            raise DequityError(f"embeddings_field {embeddings_field!r} is one of the run's fields")
        if fc.root_dataset(samples).has_sample_field(embeddings_field):
            de.validate_embeddings_field(samples, embeddings_field)
    if embeddings is not None:
        return EmbeddingSource(shards=embeddings, store_field=embeddings_field)
    return EmbeddingSource(
        model=model if model is not None else DEFAULT_MODEL,
        store_field=embeddings_field,
        backend=backend,
        ray_options=dict(ray_options or {}),
        options=options,
    )


def _check_options(options: dict) -> None:
    if "batch_size" in options:
        check_number("batch_size", options["batch_size"], minimum=1, integer=True)
    if options.get("num_workers") is not None:
        check_number("num_workers", options["num_workers"], minimum=0, integer=True)
    if not isinstance(options.get("skip_failures", True), bool):
        raise DequityError(f"skip_failures must be True or False, got {options['skip_failures']!r}")
    device = options.get("device")
    if device is not None and not isinstance(device, str):
        raise DequityError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")


def _check_backend(backend: str, ray_options: dict | None, embeddings: Any, options: dict) -> None:
    if backend not in EMBEDDING_BACKENDS:
        raise DequityError(
            f"embedding_backend must be one of {EMBEDDING_BACKENDS}, got {backend!r}"
        )
    if backend == LOCAL:
        if ray_options:
            raise DequityError("ray_options need embedding_backend='ray'")
        return
    if embeddings is not None:
        raise DequityError("embedding_backend='ray' computes embeddings; do not pass embeddings")
    unknown = set(ray_options or {}) - set(RAY_OPTIONS)
    if unknown:
        raise DequityError(
            f"unknown ray_options {sorted(unknown)}; accepted: {sorted(RAY_OPTIONS)}"
        )
    local_only = sorted(set(_LOCAL_ONLY) & set(options))
    if local_only:
        raise DequityError(
            f"{local_only} apply to the local backend; with Ray use "
            "ray_options={'num_workers': ..., 'num_gpus_per_worker': ...}"
        )
