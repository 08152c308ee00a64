"""``compute_dequity``: from images (or boxes) to likelihoods and weights on a dataset.

Reads like FiftyOne Brain's ``compute_uniqueness``: check the collection and
the run key, parse the embeddings source into a target
(:mod:`dequity.api.targets`), resolve the config once (:mod:`dequity.config`),
then, holding the run key, embed, score (:mod:`dequity.pipeline.score`) and
write through the store (:mod:`dequity.store`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dequity import defaults
from dequity.api.ray_stage import RayStageTarget, check_likelihood_backend
from dequity.api.targets import target_for
from dequity.config import resolve
from dequity.errors import DequityError
from dequity.faults import fault_point
from dequity.pipeline.params import check_field_name
from dequity.sources.parse import LOCAL, RAY, RAY_OPTIONS
from dequity.sources.shards import Shards
from dequity.store.dataset import Store, rerun_if_disconnected
from dequity.store.fields import FLOAT, INT, STRING
from dequity.store.names import METHOD, field_names
from dequity.store.runs import DequityResults, DequityRunConfig


@rerun_if_disconnected
def compute_dequity(
    samples: Any,
    run_key: str = defaults.DEFAULT_RUN_KEY,
    *,
    embeddings: str | np.ndarray | Shards | None = None,
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
    likelihood_backend: str = LOCAL,
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
        embeddings: a vector field name, an ``(n, d)`` array aligned with
            ``samples``, or (with ``likelihood_backend="ray"``) Parquet vector
            shards of its samples (:class:`dequity.sources.shards.Shards`). If
            omitted, ``model`` computes them.
        model: ``"efficientnet-lite0-layers"`` (default, offline: every
            stage's pooled features), ``"efficientnet-lite0"`` (final features),
            ``"clip:ViT-B-32@laion2b_s34b_b79k"``, a ``torch.nn.Module`` or a
            FiftyOne model. See :mod:`dequity.sources.models`.
        projection: ``"pca"`` (default, 50 components), ``"tsne"`` (the
            paper: 3-D, PCA init, perplexity 30), ``"opentsne"`` or None.
        projection_kwargs: parameters of the projection.
        clustering: ``"hdbscan_knn"`` (default: HDBSCAN's cluster share
            times the sample's k-NN crowding to the power 0.3, see
            :func:`dequity.pipeline.estimate.estimate_likelihood`; ``min_cluster_size=10,
            k=30, density_power=0.3``), ``"hdbscan"`` (the cluster share
            alone), ``"dbscan"`` (the paper; ``eps=2.0, min_samples=10``) or
            ``"knn"``: no clusters, a likelihood from how many samples lie
            within the typical distance to the ``k``-th neighbour (``k=30``, see
            :func:`dequity.pipeline.density.knn_likelihood`); the cluster field
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
        ray_options: for the Ray backends: ``num_workers`` (2),
            ``num_cpus_per_worker``, ``num_gpus_per_worker`` (embedding only),
            ``address``; with both backends on Ray, ``shards``: the directory
            the workers write the vectors to (kept; default: a temporary
            directory, removed after the run).
        group_field: a field naming each sample's scene, sequence or drive
            (for a grouped dataset, its group field): a cluster's size is then
            the number of distinct groups among its members, and crowding
            counts groups, so a rare event filmed for 40 frames stays rare.
            For a video dataset, run on ``dataset.to_frames()`` with
            ``group_field="sample_id"``. Every sample needs a value.
        collapse_near_duplicates: without a group field, a cosine similarity
            in ``(0, 1]``: consecutive samples (in the collection's order, so
            sort frames by time first) whose embeddings are at least this
            similar count once (:func:`dequity.pipeline.groups.near_duplicate_groups`).
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
        views: when the vectors are the default model's (every stage of
            EfficientNet-Lite0), also score views of their final features and
            keep each sample's smallest value, so that a sample is common only
            if what it shows and how it looks are common. ``"ranked"``
            (default): the content and off-domain views, as ranks;
            ``"content"``: the content view's likelihood; ``"auto"``: the
            default's mode; None: the whole vector only. Image runs with views
            write ``<run_key>_rare_by`` (``"appearance"``, ``"content"`` or
            ``"off-domain"``, see :mod:`dequity.pipeline.views`).
        likelihood_backend: ``"local"`` (default: the likelihood stage in
            this process) or ``"ray"``: for vectors that do not fit one
            machine, the fit on the same seeded subsamples in this process and
            every sample placed and written by Ray tasks, one ``_id`` range
            or group of shards each (:mod:`dequity.api.ray_stage`). Needs
            ``embeddings`` to name a vector field or shards, or
            ``embedding_backend="ray"``, whose workers write the vectors to
            shards that the stage reads (they reach a field only with
            ``embeddings_field``); no groups, object runs or views; ``projection``
            ``"pca"`` or None and ``clustering`` ``"hdbscan_knn"``,
            ``"hdbscan"`` or ``"knn"``.
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
    store = Store.open(samples)
    _check_new_run(store, run_key, overwrite, patches_field)
    target = _target(
        store,
        run_key,
        patches_field,
        likelihood_backend,
        embeddings=embeddings,
        model=model,
        embeddings_field=embeddings_field,
        backend=embedding_backend,
        ray_options=ray_options,
        group_field=group_field,
        collapse_near_duplicates=collapse_near_duplicates,
        options=embedding_options,
    )
    config = DequityRunConfig(
        run_key=run_key,
        projection=projection,
        projection_kwargs=projection_kwargs,
        clustering=clustering,
        clustering_kwargs=clustering_kwargs,
        noise=noise,
        eta=eta,
        gamma=gamma,
        views=views,
        **target.recorded,
    )
    settings = resolve(config, target.size)
    with store.writing(run_key) as writer:
        _check_new_run(store, run_key, overwrite, patches_field)  # again, now that it is ours
        target.check(run_key)
        fault_point("claimed")
        return target.run(writer, run_key, config, settings, progress)


def _target(
    store: Store, run_key: str, patches_field: str | None, likelihood_backend: str, **inputs: Any
) -> Any:
    """What the run scores and how (:func:`dequity.api.targets.target_for`), inputs checked.

    With ``likelihood_backend="ray"``, the image run's likelihood stage runs on Ray.
    """
    ray_options = inputs["ray_options"]
    check_likelihood_backend(
        likelihood_backend,
        patches_field=patches_field,
        **{k: inputs[k] for k in ("embeddings", "group_field", "collapse_near_duplicates")},
        embedding_backend=inputs["backend"],
        ray_options=ray_options,
    )
    if likelihood_backend == RAY:  # the stage's options are not the embedding's
        embedding = {k: v for k, v in (ray_options or {}).items() if k in RAY_OPTIONS}
        inputs["ray_options"] = embedding if inputs["backend"] == RAY else None
    target = target_for(store, run_key, patches_field, **inputs)
    if likelihood_backend == RAY:
        return RayStageTarget(target, dict(ray_options or {}))
    return target


def _check_new_run(store: Store, run_key: Any, overwrite: bool, patches_field: str | None) -> None:
    """The collection has samples, the key is free (or overwritten) by a run of the same kind.

    Checked before any work, and again once the key is claimed: another process
    may have written it in between.
    """
    if len(store.samples) == 0:
        raise DequityError("the collection is empty; pass a dataset or view with samples")
    validate_run_key(store.samples, run_key, overwrite=overwrite)
    _check_same_kind(store, run_key, patches_field)


def _check_same_kind(store: Store, run_key: str, patches_field: str | None) -> None:
    """An overwrite keeps the run's kind: image run for image run, same boxes for an object run."""
    old = store.config(run_key)
    if old is None:
        return
    old_field = getattr(old, "patches_field", None)
    if old_field != patches_field:
        kind = f"an object run on {old_field!r}" if old_field else "an image run"
        raise DequityError(
            f"run {run_key!r} is {kind}; overwrite replaces a run of the same kind only. "
            f"Delete it first (dequity.delete_dequity_run(dataset, {run_key!r})) or choose "
            "another run_key"
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

    field_types = dict(zip(field_names(run_key).values(), (INT, FLOAT, FLOAT, STRING), strict=True))
    Store(samples).check_fields_free(field_types, run_key)
