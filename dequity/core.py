"""``compute_dequity``: from images to likelihoods and weights on a dataset."""

from __future__ import annotations

import logging
from typing import Any

import fiftyone.core.validation as fov
import numpy as np

from dequity import clustering as dc
from dequity import embeddings as de
from dequity import fields as df
from dequity import projection as dp
from dequity.defaults import (
    DEFAULT_CLUSTERING,
    DEFAULT_MODEL,
    DEFAULT_NOISE,
    DEFAULT_PROJECTION,
)
from dequity.errors import DequityError
from dequity.estimate import estimate_likelihood
from dequity.likelihood import validate_noise_policy
from dequity.models import model_name, resolve_precision
from dequity.runs import METHOD, DequityResults, DequityRunConfig, field_names
from dequity.weights import DEFAULT_ETA, DEFAULT_GAMMA, gfl_weight, validate_gfl_params

logger = logging.getLogger(__name__)

_EMBEDDING_OPTIONS = {"batch_size", "num_workers", "skip_failures", "device", "precision"}
EMBEDDING_BACKENDS = ("local", "ray")
_RAY_OPTIONS = {"num_workers", "num_cpus_per_worker", "num_gpus_per_worker", "address"}


def compute_dequity(
    samples: Any,
    run_key: str = "dequity",
    *,
    embeddings: str | np.ndarray | None = None,
    model: Any = None,
    projection: str | None = DEFAULT_PROJECTION,
    projection_kwargs: dict | None = None,
    clustering: str = DEFAULT_CLUSTERING,
    clustering_kwargs: dict | None = None,
    noise: str = DEFAULT_NOISE,
    eta: float = DEFAULT_ETA,
    gamma: float = DEFAULT_GAMMA,
    overwrite: bool = False,
    progress: Any = None,
    embeddings_field: str | None = None,
    embedding_backend: str = "local",
    ray_options: dict | None = None,
    **embedding_options: Any,
) -> DequityResults:
    """Cluster the images of ``samples`` and store likelihoods and weights.

    Writes three fields on every sample of ``samples``:
    ``<run_key>_cluster`` (cluster id, -1 for noise), ``<run_key>_likelihood``
    (the paper's eq. 3) and ``<run_key>_weight`` (the Generalized Focal Loss
    weight, eq. 4), and records a FiftyOne run ``run_key`` holding the full
    config. Nothing is written unless the whole computation succeeds.

    Args:
        samples: a FiftyOne dataset or view; only its samples are touched.
        run_key: the run's name, a Python identifier; prefixes the fields.
        embeddings: a vector field name, or an ``(n, d)`` array aligned with
            ``samples``. If omitted, ``model`` computes them.
        model: ``"efficientnet-lite0-layers"`` (default, offline: every
            stage's pooled features), ``"efficientnet-lite0"`` (final features),
            ``"clip:ViT-B-32@laion2b_s34b_b79k"``, a ``torch.nn.Module`` or a
            FiftyOne model. See :mod:`dequity.models`.
        projection: ``"pca"`` (default, 50 components), ``"tsne"`` (the
            paper: 3-D, PCA init, perplexity 30), ``"opentsne"`` or None.
        projection_kwargs: parameters of the projection.
        clustering: ``"hdbscan"`` (default, ``min_cluster_size=10``),
            ``"dbscan"`` (the paper; ``eps=2.0, min_samples=10``) or
            ``"knn"``: no clusters, a likelihood from how many samples lie
            within the typical distance to the ``k``-th neighbour (``k=30``, see
            :func:`dequity.density.knn_likelihood`); the cluster field
            stays empty.
        clustering_kwargs: parameters of the clustering.
        noise: ``"singleton"`` (default: a noise point is a cluster of one,
            the rarest), ``"cluster"`` (the authors' code) or ``"nearest"``
            (each noise point joins the cluster of its nearest clustered
            sample; no sample is left noise).
        eta, gamma: Generalized Focal Loss parameters.
        overwrite: replace an existing run with the same key.
        progress: FiftyOne progress setting (True/False/None/callable).
        embeddings_field: store computed embeddings in this field for reuse.
        embedding_backend: ``"local"`` (default: batched DataLoader inference
            in this process) or ``"ray"``: the model runs on a Ray cluster, one
            actor per worker (``pip install 'dequity[ray]'``).
        ray_options: for the Ray backend: ``num_workers`` (2),
            ``num_cpus_per_worker``, ``num_gpus_per_worker``, ``address``.
        **embedding_options: ``batch_size`` (32), ``num_workers``,
            ``skip_failures`` (True: unreadable images get no weight, with a
            warning; False: raise), ``device`` (``"cpu"``, ``"cuda"``) and
            ``precision`` (``"auto"``: fp16 autocast on CUDA, fp32 on CPU;
            ``"fp32"``, ``"fp16"``, ``"bf16"``).

    Returns:
        the run's :class:`DequityResults`

    Example::

        import fiftyone as fo, dequity
        ds = fo.load_dataset("kitti")
        res = dequity.compute_dequity(ds, "dequity", model="efficientnet-lite0")
        ds.sort_by("dequity_weight", reverse=True)   # rarest images first
        # the paper's configuration:
        dequity.compute_dequity(ds, "paper", embeddings="embedding",
                                projection="tsne", clustering="dbscan",
                                clustering_kwargs={"eps": 2.0, "min_samples": 10},
                                noise="cluster")
    """
    fov.validate_collection(samples)
    config, store_field = _validate_request(
        samples,
        run_key,
        embeddings,
        model,
        projection,
        projection_kwargs,
        clustering,
        clustering_kwargs,
        noise,
        eta,
        gamma,
        overwrite,
        embeddings_field,
        embedding_backend,
        ray_options,
        embedding_options,
    )

    emb = _get_embeddings(
        samples, embeddings, model, progress, embedding_backend, ray_options, embedding_options
    )
    logger.info("Projecting %d embeddings (%s)...", len(emb.sample_ids), projection)
    points = dp.project(emb.vectors, projection, **config.projection_kwargs)
    logger.info("Likelihoods (%s)...", clustering)
    labels, likelihoods = estimate_likelihood(points, clustering, noise, **config.clustering_kwargs)
    weights = gfl_weight(likelihoods, eta, gamma)

    results = DequityResults(
        samples,
        config,
        run_key,
        sample_ids=emb.sample_ids,
        labels=labels.tolist(),
        likelihoods=likelihoods.tolist(),
        points=_points_2d(points).tolist(),
        missing_ids=emb.missing_ids,
    )
    _commit(samples, run_key, config, results, weights, emb, store_field, overwrite, progress)
    logger.info("dequity run %r: %s", run_key, _short_summary(results))
    return results


def _validate_request(
    samples: Any,
    run_key: str,
    embeddings: Any,
    model: Any,
    projection: str | None,
    projection_kwargs: dict | None,
    clustering: str,
    clustering_kwargs: dict | None,
    noise: str,
    eta: float,
    gamma: float,
    overwrite: bool,
    embeddings_field: str | None,
    embedding_backend: str,
    ray_options: dict | None,
    embedding_options: dict,
) -> tuple[DequityRunConfig, str | None]:
    """Check every argument before any work; return the run config."""
    validate_run_key(samples, run_key, overwrite=overwrite)
    if len(samples) == 0:
        raise DequityError("the collection is empty; pass a dataset or view with samples")
    unknown = set(embedding_options) - _EMBEDDING_OPTIONS
    if unknown:
        raise DequityError(
            f"unknown arguments {sorted(unknown)}; embedding options are "
            f"{sorted(_EMBEDDING_OPTIONS)}"
        )
    if embeddings is not None and model is not None:
        raise DequityError("pass either embeddings or model, not both")
    _validate_backend(embedding_backend, ray_options, embeddings, embedding_options)
    if "precision" in embedding_options:
        resolve_precision(embedding_options["precision"], embedding_options.get("device"))
    validate_noise_policy(noise)
    validate_gfl_params(eta, gamma)
    projection_params = dp.projection_params(projection, projection_kwargs)
    clustering_params = dc.clustering_params(clustering, clustering_kwargs)
    dc.check_enough_samples(len(samples), clustering, clustering_params)

    embeddings_source = embeddings if isinstance(embeddings, str) else None
    if embeddings_source is not None:
        de.validate_embeddings_field(samples, embeddings_source)
        store_field = None
    else:
        store_field = embeddings_field
        if store_field is not None and embeddings is None:
            if store_field in field_names(run_key).values():
                raise DequityError(f"embeddings_field {store_field!r} is one of the run's fields")
            if samples._root_dataset.has_sample_field(store_field):
                de.validate_embeddings_field(samples, store_field)

    config = DequityRunConfig(
        run_key=run_key,
        embeddings_field=embeddings_source or store_field,
        model=None if embeddings is not None else model_name(model or DEFAULT_MODEL),
        projection=projection,
        projection_kwargs=projection_params,
        clustering=clustering,
        clustering_kwargs=clustering_params,
        noise=noise,
        eta=eta,
        gamma=gamma,
    )
    return config, store_field


def validate_run_key(samples: Any, run_key: Any, overwrite: bool = False) -> None:
    """Raise :class:`DequityError` unless ``run_key`` can name a new dequity run.

    The key must be an identifier, not used by another kind of run, not used
    by a dequity run unless ``overwrite``, and its fields must not hold other
    data.

    Example::

        dequity.validate_run_key(dataset, "dequity", overwrite=True)
    """
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise DequityError(
            f"run_key must be a Python identifier such as 'dequity', got {run_key!r}"
        )
    if run_key in samples.list_runs():
        if run_key not in samples.list_runs(method=METHOD):
            raise DequityError(
                f"run key {run_key!r} belongs to another kind of run; choose another run_key"
            )
        if not overwrite:
            raise DequityError(
                f"a dequity run {run_key!r} already exists; pass overwrite=True "
                "(--overwrite) to replace it, or choose another run_key"
            )

    field_types = {
        name: kind
        for name, kind in zip(field_names(run_key).values(), (df.INT, df.FLOAT, df.FLOAT))
    }
    df.check_fields_free(samples, field_types, run_key)


def _validate_backend(
    backend: str, ray_options: dict | None, embeddings: Any, options: dict
) -> None:
    if backend not in EMBEDDING_BACKENDS:
        raise DequityError(
            f"embedding_backend must be one of {EMBEDDING_BACKENDS}, got {backend!r}"
        )
    if backend == "local":
        if ray_options:
            raise DequityError("ray_options need embedding_backend='ray'")
        return
    if embeddings is not None:
        raise DequityError("embedding_backend='ray' computes embeddings; do not pass embeddings")
    unknown = set(ray_options or {}) - _RAY_OPTIONS
    if unknown:
        raise DequityError(
            f"unknown ray_options {sorted(unknown)}; accepted: {sorted(_RAY_OPTIONS)}"
        )
    local_only = {"num_workers", "device", "precision"} & set(options)
    if local_only:
        raise DequityError(
            f"{sorted(local_only)} apply to the local backend; with Ray use "
            "ray_options={'num_workers': ..., 'num_gpus_per_worker': ...}"
        )


def _get_embeddings(
    samples: Any,
    embeddings: Any,
    model: Any,
    progress: Any,
    backend: str,
    ray_options: dict | None,
    options: dict,
) -> de.Embeddings:
    if isinstance(embeddings, str):
        return de.from_field(samples, embeddings)
    if embeddings is not None:
        return de.from_array(samples, embeddings)
    if backend == "ray":
        from dequity.ray_embeddings import embed_with_ray

        return embed_with_ray(
            samples,
            model if model is not None else DEFAULT_MODEL,
            batch_size=options.get("batch_size", 32),
            skip_failures=options.get("skip_failures", True),
            **(ray_options or {}),
        )
    return de.from_model(samples, model, progress=progress, **options)


def _points_2d(points: np.ndarray) -> np.ndarray:
    """2-D coordinates for plots: the first two projected axes."""
    if points.shape[1] >= 2:
        return points[:, :2]
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))


def _commit(
    samples: Any,
    run_key: str,
    config: DequityRunConfig,
    results: DequityResults,
    weights: np.ndarray,
    emb: de.Embeddings,
    store_field: str | None,
    overwrite: bool,
    progress: Any,
) -> None:
    """Write fields, index and run record, all or nothing."""
    fields = config.fields + ([store_field] if store_field else [])
    ids = emb.sample_ids
    with df.transaction(samples, fields, run_key):
        stale: dict[str, None] = {}
        if overwrite and samples.has_run(run_key):
            old = samples.load_run_results(run_key)
            stale = dict.fromkeys(set(old.sample_ids + old.missing_ids) - set(ids))
            df.DequityRun.delete_run(samples, run_key, cleanup=False)
        df.declare_field(
            samples,
            config.cluster_field,
            df.INT,
            "dequity cluster id of the sample's image (-1: noise)",
            info={"run_key": run_key},
        )
        df.declare_field(
            samples,
            config.likelihood_field,
            df.FLOAT,
            "dequity likelihood: size of the sample's cluster / size of the largest",
            info={"run_key": run_key},
        )
        df.declare_field(
            samples,
            config.weight_field,
            df.FLOAT,
            "dequity Generalized Focal Loss weight (eta + (1 - p)**gamma) / (eta + 1)",
            info={"run_key": run_key},
        )
        cleared = list(stale) + emb.missing_ids
        clusters = results.labels or [None] * len(ids)  # "knn" forms no clusters
        df.write_scalars(
            samples,
            ids + cleared,
            {
                config.cluster_field: clusters + [None] * len(cleared),
                config.likelihood_field: results.likelihoods + [None] * len(cleared),
                config.weight_field: weights.tolist() + [None] * len(cleared),
            },
            progress,
        )
        if store_field:
            df.declare_field(samples, store_field, df.VECTOR, "image embedding")
            df.write_values(samples, store_field, dict(zip(ids, emb.vectors)), progress)
        samples._root_dataset.create_index(config.weight_field)
        config.build().register_run(samples, run_key, overwrite=False, cleanup=False)
        config.build().save_run_results(samples, run_key, results)


def _short_summary(results: DequityResults) -> str:
    s = results.summary()
    return (
        f"{s['num_samples']} samples, {s['num_clusters']} clusters, "
        f"{s['noise_fraction']:.1%} noise, weights {s['min_weight']:.3f}..{s['max_weight']:.3f}"
    )


def load_dequity_results(samples: Any, run_key: str = "dequity") -> DequityResults:
    """Load the results of dequity run ``run_key`` from ``samples``' dataset.

    Example::

        res = dequity.load_dequity_results(fo.load_dataset("kitti"), "dequity")
        print(res.summary())
    """
    if run_key not in samples.list_runs(method=METHOD):
        raise DequityError(
            f"no dequity run {run_key!r} on this dataset; runs: "
            f"{list_dequity_runs(samples)}. Compute one with dequity.compute_dequity"
        )
    return samples.load_run_results(run_key)


def list_dequity_runs(samples: Any) -> list[str]:
    """Keys of the dequity runs on ``samples``' dataset.

    Example::

        dequity.list_dequity_runs(dataset)   # ['dequity', 'paper']
    """
    return samples.list_runs(method=METHOD)


def delete_dequity_run(samples: Any, run_key: str) -> None:
    """Delete dequity run ``run_key`` and the fields it wrote.

    Example::

        dequity.delete_dequity_run(dataset, "paper")
    """
    load_dequity_results(samples, run_key)
    samples._root_dataset.delete_run(run_key)


def rename_dequity_run(samples: Any, run_key: str, new_run_key: str) -> None:
    """Rename dequity run ``run_key``; its fields are renamed to match.

    Example::

        dequity.rename_dequity_run(dataset, "dequity", "dequity_clip")
        # fields are now dequity_clip_cluster/_likelihood/_weight
    """
    load_dequity_results(samples, run_key)
    if not isinstance(new_run_key, str) or not new_run_key.isidentifier():
        raise DequityError(f"new run key must be a Python identifier, got {new_run_key!r}")
    if samples.has_run(new_run_key):
        raise DequityError(f"a run {new_run_key!r} already exists; choose another key")
    df.check_fields_free(
        samples, dict.fromkeys(field_names(new_run_key).values(), object), new_run_key
    )
    samples._root_dataset.rename_run(run_key, new_run_key)
