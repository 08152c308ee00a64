"""``compute_dequity``: from images to likelihoods and weights on a dataset."""

from __future__ import annotations

import logging
from typing import Any

import fiftyone.core.validation as fov
import numpy as np

from dequity import claims, defaults
from dequity import clustering as dc
from dequity import commit as dcommit
from dequity import embeddings as de
from dequity import fields as df
from dequity import fiftyone_compat as fc
from dequity import groups as dg
from dequity import objects as dobj
from dequity import projection as dp
from dequity import views as dv
from dequity.errors import DequityError, rerun_if_disconnected
from dequity.estimate import estimate
from dequity.faults import fault_point
from dequity.likelihood import validate_noise_policy
from dequity.runs import (
    FIELD_DESCRIPTIONS,
    METHOD,
    DequityResults,
    DequityRun,
    DequityRunConfig,
    field_names,
)
from dequity.sources import LOCAL, parse_embeddings
from dequity.validation import check_estimators, check_field_name
from dequity.weights import validate_gfl_params

logger = logging.getLogger(__name__)


@rerun_if_disconnected
def compute_dequity(
    samples: Any,
    run_key: str = defaults.DEFAULT_RUN_KEY,
    *,
    embeddings: str | np.ndarray | None = None,
    model: Any = None,
    projection: str | None = defaults.DEFAULT_PROJECTION,
    projection_kwargs: dict | None = None,
    clustering: str = defaults.DEFAULT_CLUSTERING,
    clustering_kwargs: dict | None = None,
    noise: str = defaults.DEFAULT_NOISE,
    eta: float = defaults.DEFAULT_ETA,
    gamma: float = defaults.DEFAULT_GAMMA,
    overwrite: bool = False,
    progress: Any = None,
    embeddings_field: str | None = None,
    embedding_backend: str = LOCAL,
    ray_options: dict | None = None,
    group_field: str | None = None,
    collapse_near_duplicates: float | None = None,
    patches_field: str | None = None,
    views: str | None = defaults.DEFAULT_VIEWS,
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
        clustering: ``"hdbscan_knn"`` (default: HDBSCAN's cluster share
            times the sample's k-NN crowding to the power 0.3, see
            :func:`dequity.estimate.estimate_likelihood`; ``min_cluster_size=10,
            k=30, density_power=0.3``), ``"hdbscan"`` (the cluster share
            alone), ``"dbscan"`` (the paper; ``eps=2.0, min_samples=10``) or
            ``"knn"``: no clusters, a likelihood from how many samples lie
            within the typical distance to the ``k``-th neighbour (``k=30``, see
            :func:`dequity.density.knn_likelihood`); the cluster field
            stays empty.
        clustering_kwargs: parameters of the clustering.
        noise: ``"nearest"`` (default: each noise point joins the cluster of
            its nearest clustered sample; no sample is left noise),
            ``"singleton"`` (a noise point is a cluster of one, the rarest)
            or ``"cluster"`` (the authors' code).
        eta, gamma: Generalized Focal Loss parameters.
        overwrite: replace an existing run with the same key.
        progress: FiftyOne progress setting (True/False/None/callable).
        embeddings_field: store computed embeddings in this field for reuse.
        embedding_backend: ``"local"`` (default: batched DataLoader inference
            in this process) or ``"ray"``: the model runs on a Ray cluster, one
            actor per worker (``pip install 'dequity[ray]'``).
        ray_options: for the Ray backend: ``num_workers`` (2),
            ``num_cpus_per_worker``, ``num_gpus_per_worker``, ``address``.
        group_field: a field naming each sample's scene, sequence or drive
            (for a grouped dataset, its group field): a cluster's size is then
            the number of distinct groups among its members, and crowding
            counts groups, so a rare event filmed for 40 frames stays rare.
            For a video dataset, run on ``dataset.to_frames()`` with
            ``group_field="sample_id"``. Every sample needs a value.
        collapse_near_duplicates: without a group field, a cosine similarity
            in ``(0, 1]``: consecutive samples (in the collection's order, so
            sort frames by time first) whose embeddings are at least this
            similar count once (:func:`dequity.groups.near_duplicate_groups`).
        patches_field: a ``Detections`` field: score each box instead of each
            image (an object run). Each box is embedded from its crop (the
            box grown by 10 % of its side on each side, clipped to the
            image; cut while the image is decoded, one read per image), and
            each box's ``Detection`` gets the attributes
            ``<run_key>_cluster``, ``<run_key>_likelihood`` and
            ``<run_key>_weight``; each sample's ``<run_key>_weight`` is the
            largest weight of its boxes (None for a sample without a scored
            box). Boxes that are empty, degenerate or under 4 pixels wide or
            high are skipped with one warning that counts them.
            ``embeddings`` may then name a vector attribute of the
            Detections, or be an ``(n_boxes, d)`` array with one row per box
            of the field in collection order (samples in order, each
            sample's boxes in list order, skipped boxes included).
        views: ``"auto"`` (default): when the vectors are the default model's
            (every stage of EfficientNet-Lite0), also score their final
            features alone and keep each sample's smaller likelihood, so that
            a sample is common only if both what it shows and how it looks
            are common; image runs then write ``<run_key>_rare_by``
            (``"content"`` or ``"appearance"``, see :mod:`dequity.views`).
            None: the whole vector only.
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
        # one likelihood and weight per box of "ground_truth":
        dequity.compute_dequity(ds, "objects", patches_field="ground_truth")
        ds.to_patches("ground_truth").sort_by("ground_truth.objects_weight", reverse=True)
        # the paper's configuration:
        dequity.compute_dequity(ds, "paper", embeddings="embedding",
                                projection="tsne", clustering="dbscan",
                                clustering_kwargs={"eps": 2.0, "min_samples": 10},
                                noise="cluster", views=None)
    """
    fov.validate_collection(samples)
    _check_not_generated(samples)
    dcommit.recover_dataset(samples)
    validate_run_key(samples, run_key, overwrite=overwrite)
    _check_same_kind(samples, run_key, patches_field)
    if len(samples) == 0:
        raise DequityError("the collection is empty; pass a dataset or view with samples")
    config_kwargs = dict(
        projection=projection,
        projection_kwargs=projection_kwargs,
        clustering=clustering,
        clustering_kwargs=clustering_kwargs,
        noise=noise,
        eta=eta,
        gamma=gamma,
        views=views,
    )
    if patches_field is not None:
        return _compute_objects(
            samples,
            run_key,
            patches_field,
            embeddings=embeddings,
            model=model,
            overwrite=overwrite,
            progress=progress,
            checks=(embeddings_field, embedding_backend, ray_options, group_field),
            collapse_near_duplicates=collapse_near_duplicates,
            config_kwargs=config_kwargs,
            embedding_options=embedding_options,
        )
    source = parse_embeddings(
        samples,
        run_key,
        embeddings,
        model,
        embeddings_field=embeddings_field,
        backend=embedding_backend,
        ray_options=ray_options,
        options=embedding_options,
    )
    config = DequityRunConfig(
        run_key=run_key,
        embeddings_field=source.recorded_field,
        model=source.model_name,
        group_field=group_field,
        collapse_near_duplicates=collapse_near_duplicates,
        **config_kwargs,
    )
    validate_config(config, len(samples))
    dg.check_group_field(samples, group_field)
    run = config.build()

    with dcommit.claim_run(samples, run_key) as claim:
        # another process may have written this key since the checks above
        validate_run_key(samples, run_key, overwrite=overwrite)
        fault_point("claimed")
        emb = source.load(samples, progress)
        results = _estimate(samples, run_key, run, emb)
        _commit(claim, samples, results, emb, source.store_field, progress)
    logger.info("dequity run %r: %s", run_key, _short_summary(results))
    return results


def _compute_objects(
    samples: Any,
    run_key: str,
    patches_field: str,
    *,
    embeddings: str | np.ndarray | None,
    model: Any,
    overwrite: bool,
    progress: Any,
    checks: tuple,
    collapse_near_duplicates: float | None,
    config_kwargs: dict,
    embedding_options: dict,
) -> DequityResults:
    """:func:`compute_dequity` with ``patches_field``: values per box (:mod:`dequity.objects`)."""
    embeddings_field, backend, ray_options, group_field = checks
    dobj.check_patches_field(samples, patches_field)
    dobj.check_options(group_field, collapse_near_duplicates, embeddings_field)
    if backend != "local" or ray_options:
        raise DequityError("object runs embed crops locally; leave embedding_backend='local'")
    if embeddings is not None and model is not None:
        raise DequityError("pass either embeddings or model, not both")
    if isinstance(embeddings, str):
        _check_object_vectors(samples, patches_field, embeddings)
    source = parse_embeddings(samples, run_key, None, model, options=embedding_options)
    config = DequityRunConfig(
        run_key=run_key,
        embeddings_field=embeddings if isinstance(embeddings, str) else None,
        model=source.model_name if embeddings is None else None,
        patches_field=patches_field,
        **config_kwargs,
    )
    names = [config.cluster_field, config.likelihood_field, config.weight_field]
    dobj.check_attributes_free(samples, patches_field, run_key, names)
    objs = dobj.usable_objects(samples, patches_field)
    validate_config(config, len(objs.object_ids))
    run = config.build()
    with dcommit.claim_run(samples, run_key) as claim:
        validate_run_key(samples, run_key, overwrite=overwrite)
        dobj.check_attributes_free(samples, patches_field, run_key, names)
        fault_point("claimed")
        emb = dobj.object_embeddings(
            samples,
            patches_field,
            objs,
            embeddings,
            source.model if embeddings is None else None,
            progress=progress,
            **source.options,
        )
        sample_of = dict(zip(objs.object_ids, objs.sample_ids))
        scored = de.Embeddings(emb.vectors, [sample_of[i] for i in emb.sample_ids], [])
        results = _estimate(samples, run_key, run, scored)
        results.object_ids = list(emb.sample_ids)
        results.fit = None  # update_dequity places images, not objects
        scope = list(objs.all_sample_ids)
        if samples.has_run(run_key):
            scope += samples.load_run_results(run_key).sample_ids
        dobj.commit_object_run(claim, samples, results, config, scope=scope, progress=progress)
    logger.info("dequity object run %r: %s", run_key, _short_summary(results))
    return results


def _check_same_kind(samples: Any, run_key: str, patches_field: str | None) -> None:
    """An overwrite keeps the run's kind: image run for image run, same boxes for an object run."""
    if run_key not in samples.list_runs(method=METHOD):
        return
    old = samples.get_run_info(run_key).config
    old_field = getattr(old, "patches_field", None)
    if old_field != patches_field:
        kind = f"an object run on {old_field!r}" if old_field else "an image run"
        raise DequityError(
            f"run {run_key!r} is {kind}; overwrite replaces a run of the same kind only. "
            f"Delete it first (dequity.delete_dequity_run(dataset, {run_key!r})) or choose "
            "another run_key"
        )


def _check_object_vectors(samples: Any, patches_field: str, attribute: str) -> None:
    """Raise unless the Detections of ``patches_field`` have vector attribute ``attribute``."""
    path = f"{patches_field}.detections.{attribute}"
    if samples.count(path) == 0:
        raise DequityError(
            f"no Detection of {patches_field!r} has an attribute {attribute!r}; name a vector "
            "attribute of the boxes, pass an (n_boxes, d) array, or omit embeddings to "
            "embed the crops with model"
        )


def _check_not_generated(samples: Any) -> None:
    """Frames, patches and clips views hold copies, not the dataset's samples: refuse them."""
    if fc.is_generated_view(samples):
        raise DequityError(
            "dequity runs on a dataset or a view of its samples, not on frames, patches or "
            "clips views; clone the view into a dataset first (view.clone()). For video "
            "frames, count each video once: compute_dequity(dataset.to_frames("
            "sample_frames=True).clone(), group_field='sample_id')"
        )


def validate_config(config: DequityRunConfig, num_samples: int) -> None:
    """Check ``config`` for a run on ``num_samples`` samples; fill in every parameter.

    Raises :class:`DequityError` naming the first bad value. Afterwards the
    config holds the full projection and clustering parameters, defaults
    included, as they are stored with the run.

    Example::

        config = DequityRunConfig(clustering="dbscan", clustering_kwargs={"eps": 1.5})
        validate_config(config, len(dataset))
        config.clustering_kwargs   # {'eps': 1.5, 'min_samples': 10}
    """
    validate_noise_policy(config.noise)
    dv.validate_views(config.views)
    validate_gfl_params(config.eta, config.gamma)
    config.eta, config.gamma = float(config.eta), float(config.gamma)
    for name in ("projection_kwargs", "clustering_kwargs"):
        kwargs = getattr(config, name)
        if not isinstance(kwargs, dict):
            raise DequityError(f"{name} must be a dict, got {kwargs!r}")
    config.projection_kwargs = dp.projection_params(config.projection, config.projection_kwargs)
    config.clustering_kwargs = dc.clustering_params(config.clustering, config.clustering_kwargs)
    check_estimators(
        config.projection, config.projection_kwargs, config.clustering, config.clustering_kwargs
    )
    dg.check_grouping(config.group_field, config.collapse_near_duplicates)
    dc.check_enough_samples(num_samples, config.clustering, config.clustering_kwargs)


def _estimate(samples: Any, run_key: str, run: DequityRun, emb: de.Embeddings) -> DequityResults:
    """Project, cluster and score ``emb`` as ``run``'s config says."""
    config = run.config
    logger.info("Projecting %d embeddings (%s)...", len(emb.sample_ids), config.projection)
    points, transform = dp.fit_projection(
        emb.vectors, config.projection, **config.projection_kwargs
    )
    groups = dg.sample_groups(samples, emb, config.group_field, config.collapse_near_duplicates)
    logger.info("Likelihoods (%s)...", config.clustering)
    result = estimate(points, config.clustering, config.noise, groups, **config.clustering_kwargs)
    likelihoods, views, content = result.likelihoods, None, None
    if config.views == dv.AUTO and dv.applies(emb.vectors):
        logger.info("Likelihoods of the content view...")
        fit_samples = config.clustering_kwargs.get("fit_samples")
        content = dv.content_view(emb.vectors, fit_samples, groups)
        views = {"image": likelihoods.tolist(), "content": content.likelihoods.tolist()}
        likelihoods = dv.combine(result.likelihoods, content.likelihoods)[0]
    config.views = dv.CONTENT if content is not None else None
    fit = None
    if transform is not None and groups is None:  # what update_dequity needs
        result.fit.projection = transform
        fit = result.fit.to_dict()
        if content is not None:
            fit[dv.CONTENT] = content.fit.to_dict()
    return DequityResults(
        samples,
        config,
        run_key,
        sample_ids=emb.sample_ids,
        labels=result.labels.tolist(),
        likelihoods=likelihoods.tolist(),
        points=_points_2d(points).tolist(),
        missing_ids=emb.missing_ids,
        fit=fit,
        views=views,
        backend=run,
    )


def validate_run_key(samples: Any, run_key: Any, overwrite: bool = False) -> None:
    """Raise :class:`DequityError` unless ``run_key`` can name a new dequity run.

    The key must be an identifier, not used by another kind of run, not used
    by a dequity run unless ``overwrite``, and its fields must not hold other
    data.

    Example::

        dequity.validate_run_key(dataset, "dequity", overwrite=True)
    """
    check_field_name("run_key", run_key)
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

    field_types = dict(
        zip(field_names(run_key).values(), (df.INT, df.FLOAT, df.FLOAT, df.STRING), strict=True)
    )
    df.check_fields_free(samples, field_types, run_key)


def _points_2d(points: np.ndarray) -> np.ndarray:
    """2-D coordinates for plots: the first two projected axes."""
    if points.shape[1] >= 2:
        return points[:, :2]
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))


def _commit(
    claim: Any,
    samples: Any,
    results: DequityResults,
    emb: de.Embeddings,
    store_field: str | None,
    progress: Any,
) -> None:
    """Write fields, index and run record, all or nothing (see :mod:`dequity.commit`)."""
    config = results.config
    ids = emb.sample_ids
    stale: list[str] = []
    explained_before = False
    if samples.has_run(results.key):
        old = samples.load_run_results(results.key)
        stale = list(set(old.sample_ids + old.missing_ids) - set(ids))
        explained_before = old.config.uses_content_view
    cleared = stale + emb.missing_ids
    blanks = [None] * len(cleared)
    columns = [
        dcommit.Column(
            config.cluster_field,
            "int",
            FIELD_DESCRIPTIONS["cluster"],
            (results.labels or [None] * len(ids)) + blanks,  # "knn" forms no clusters
        ),
        dcommit.Column(
            config.likelihood_field,
            "float",
            FIELD_DESCRIPTIONS["likelihood"],
            results.likelihoods + blanks,
        ),
        dcommit.Column(
            config.weight_field,
            "float",
            FIELD_DESCRIPTIONS["weight"],
            results.weights.tolist() + blanks,
        ),
    ]
    if config.uses_content_view or explained_before:  # an overwrite leaves no old reason
        columns.append(
            dcommit.Column(
                config.rare_by_field,
                "str",
                FIELD_DESCRIPTIONS["rare_by"],
                (results.rare_by or [None] * len(ids)) + blanks,
                owned=config.uses_content_view,
            )
        )
    if store_field:  # the first len(ids) samples: those with an embedding
        columns.append(
            dcommit.Column(store_field, "vector", "image embedding", emb.vectors, owned=False)
        )
    dcommit.commit_run(
        claim,
        samples,
        results.key,
        config,
        results,
        ids + cleared,
        columns,
        index=config.weight_field,
        progress=progress,
    )
    if explained_before and not config.uses_content_view:
        # the commit emptied it; a kill before this line leaves only empty values
        fc.root_dataset(samples).delete_sample_field(config.rare_by_field)


def _short_summary(results: DequityResults) -> str:
    s = results.summary()
    return (
        f"{s['num_samples']} samples, {s['num_clusters']} clusters, "
        f"{s['noise_fraction']:.1%} noise, weights {s['min_weight']:.3f}..{s['max_weight']:.3f}"
    )


def load_dequity_results(samples: Any, run_key: str = defaults.DEFAULT_RUN_KEY) -> DequityResults:
    """Load the results of dequity run ``run_key`` from ``samples``' dataset.

    Example::

        res = dequity.load_dequity_results(fo.load_dataset("kitti"), "dequity")
        print(res.summary())
    """
    dcommit.recover_dataset(samples)
    writer = dcommit.writer_of(samples, run_key)
    if run_key not in samples.list_runs(method=METHOD):
        busy = f" (it is being computed by {claims.describe(writer)})" if writer else ""
        raise DequityError(
            f"no dequity run {run_key!r} on this dataset{busy}; runs: "
            f"{samples.list_runs(method=METHOD)}. Compute one with dequity.compute_dequity"
        )
    if writer is not None and writer.get("phase") == "committing":
        raise DequityError(
            f"run {run_key!r} is being written by {claims.describe(writer)}; try again in a moment"
        )
    return samples.load_run_results(run_key)


def list_dequity_runs(samples: Any) -> list[str]:
    """Keys of the dequity runs on ``samples``' dataset.

    Example::

        dequity.list_dequity_runs(dataset)   # ['dequity', 'paper']
    """
    dcommit.recover_dataset(samples)
    return samples.list_runs(method=METHOD)


@rerun_if_disconnected
def delete_dequity_run(samples: Any, run_key: str) -> None:
    """Delete dequity run ``run_key`` and the fields it wrote.

    Example::

        dequity.delete_dequity_run(dataset, "paper")
    """
    load_dequity_results(samples, run_key)
    dataset = fc.root_dataset(samples)
    with dcommit.claim_run(dataset, run_key) as claim:
        load_dequity_results(dataset, run_key)
        dcommit.delete_run(claim, dataset, run_key)


@rerun_if_disconnected
def rename_dequity_run(samples: Any, run_key: str, new_run_key: str) -> None:
    """Rename dequity run ``run_key``; its fields are renamed to match.

    Example::

        dequity.rename_dequity_run(dataset, "dequity", "dequity_clip")
        # fields are now dequity_clip_cluster/_likelihood/_weight
    """
    load_dequity_results(samples, run_key)
    check_field_name("new run key", new_run_key)
    if samples.has_run(new_run_key):
        raise DequityError(f"a run {new_run_key!r} already exists; choose another key")
    dataset = fc.root_dataset(samples)
    with dcommit.claim_run(dataset, run_key) as claim, dcommit.claim_run(dataset, new_run_key):
        load_dequity_results(dataset, run_key)
        if dataset.has_run(new_run_key):
            raise DequityError(f"a run {new_run_key!r} already exists; choose another key")
        df.check_fields_free(
            dataset, dict.fromkeys(field_names(new_run_key).values(), object), new_run_key
        )
        dcommit.rename_run(claim, dataset, run_key, new_run_key)
