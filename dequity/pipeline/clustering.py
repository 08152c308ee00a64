"""Clustering of projected embeddings into groups of similar images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.params import Integer, Param, Real, resolve_params
from dequity.pipeline.projection import BACKEND, use_cuml
from dequity.pipeline.subsample import FIT_SAMPLES, subsample_rows

#: ``hdbscan.HDBSCAN``: no distance threshold to tune, robust to density.
HDBSCAN = "hdbscan"
#: scikit-learn DBSCAN, as in the paper (eps depends on the projection scale).
DBSCAN = "dbscan"
#: no clusters: a continuous k-NN density likelihood (:mod:`dequity.pipeline.density`).
KNN = "knn"
#: HDBSCAN clusters, each sample's share scaled by its k-NN crowding
#: (:func:`dequity.pipeline.estimate.estimate_likelihood`): continuous within clusters.
HDBSCAN_KNN = "hdbscan_knn"
CLUSTERINGS = (HDBSCAN_KNN, HDBSCAN, DBSCAN, KNN)

_HDBSCAN: dict[str, Param] = {
    # min_samples=1: real image embeddings form continua rather than blobs;
    # HDBSCAN's default (min_samples = min_cluster_size) labels most of such
    # a set noise, while 1 keeps fidelity on mixtures (see README benchmarks).
    "min_cluster_size": Param(10, check=Integer(2)),
    "min_samples": Param(1),
    # above this many points HDBSCAN (whose cost grows about as n^1.6 in
    # 50-D) is fitted on a random subsample of this size and every other
    # point takes the label of its nearest fitted point
    "fit_samples": Param(FIT_SAMPLES, check=Integer(2, optional=True), estimator=False),
    "cluster_selection_epsilon": Param(),
    "cluster_selection_method": Param(),
    "metric": Param(),
    "alpha": Param(),
    "allow_single_cluster": Param(flag=True),
    "backend": BACKEND,
}
#: the k-NN crowding that HDBSCAN_KNN multiplies into the cluster shares
_DENSITY: dict[str, Param] = {
    "k": Param(30, check=Integer(1), estimator=False),
    "density_power": Param(0.3, check=Real(0, 1, note="0: cluster sizes only"), estimator=False),
}
#: parameters of HDBSCAN_KNN that are not HDBSCAN's
DENSITY_KEYS = tuple(_DENSITY)
#: the parameters of each clustering, with dequity's defaults
PARAMETERS: dict[str, dict[str, Param]] = {
    HDBSCAN_KNN: {**_HDBSCAN, **_DENSITY},
    HDBSCAN: _HDBSCAN,
    DBSCAN: {
        "eps": Param(2.0, check=Real(0, closed=False)),
        "min_samples": Param(10, check=Integer(2)),
        "metric": Param(),
        "algorithm": Param(cpu_only=True),
        "leaf_size": Param(cpu_only=True),
        "p": Param(cpu_only=True),
        "n_jobs": Param(cpu_only=True),
        "backend": BACKEND,
    },
    # neighbours counted among the same seeded subsample above fit_samples
    KNN: {"k": _DENSITY["k"], "fit_samples": _HDBSCAN["fit_samples"]},
}


def validate_clustering(method: str) -> None:
    """Raise :class:`DequityError` unless ``method`` is a known clustering."""
    if method not in CLUSTERINGS:
        raise DequityError(f"clustering must be one of {CLUSTERINGS}, got {method!r}")


def clustering_params(method: str, kwargs: dict | None = None) -> dict:
    """The full parameters of a clustering: defaults updated by ``kwargs``.

    Example::

        >>> clustering_params("dbscan", {"eps": 1.5})
        {'eps': 1.5, 'min_samples': 10}
    """
    validate_clustering(method)
    params = resolve_params(PARAMETERS[method], kwargs, "clustering_kwargs", method)
    fit = params.get("fit_samples")
    if fit is not None and "min_cluster_size" in params and fit < 2 * params["min_cluster_size"]:
        raise DequityError(
            f"fit_samples must be None or an integer >= 2 * min_cluster_size, got {fit!r}"
        )
    cpu_only = _cpu_only(method, params)
    if params.get("backend") == "cuml" and cpu_only:
        raise DequityError(
            f"{cpu_only} are scikit-learn/hdbscan options that cuML's {method} "
            "lacks; drop them or use backend='sklearn'"
        )
    return params


def _cpu_only(method: str, params: dict) -> list[str]:
    """The options in ``params`` that only the CPU implementation takes."""
    return sorted(k for k in params if PARAMETERS[method][k].cpu_only)


def _size_key(method: str) -> str:
    """The parameter that sets the smallest cluster."""
    return "min_samples" if method == DBSCAN else "min_cluster_size"


def check_enough_samples(num_samples: int, method: str, params: dict) -> None:
    """Raise unless ``num_samples`` is enough for the clustering to form a cluster.

    Example::

        check_enough_samples(len(dataset), "hdbscan", clustering_params("hdbscan"))
    """
    if method != KNN:
        key = _size_key(method)
        needed = int(params[key])
        if num_samples < needed:
            raise DequityError(
                f"{num_samples} samples are fewer than the {needed} that {method} "
                f"needs to form a cluster; add samples or lower {key}"
            )
    if "k" in params and num_samples <= params["k"]:
        raise DequityError(
            f"{num_samples} samples are too few for k={params['k']} neighbours; "
            "add samples or lower k"
        )


def cluster(points: np.ndarray, method: str = HDBSCAN, **kwargs: Any) -> np.ndarray:
    """Cluster ``(n, k)`` points; returns int labels, ``-1`` for noise.

    ``backend`` (a key of ``kwargs``): ``"sklearn"`` (default: scikit-learn
    DBSCAN, the ``hdbscan`` package), ``"cuml"`` (RAPIDS cuML on the GPU) or
    ``"auto"`` (cuML when it is installed and sees a GPU, else the CPU).

    Example::

        >>> rng = np.random.default_rng(0)
        >>> pts = np.concatenate([rng.normal(0, 0.1, (30, 2)),
        ...                       rng.normal(5, 0.1, (15, 2))])
        >>> np.sort(np.bincount(cluster(pts, "hdbscan", min_cluster_size=5)))  # ids arbitrary
        array([15, 30])
        >>> big = np.concatenate([rng.normal(0, 0.1, (3000, 2)),
        ...                       rng.normal(5, 0.1, (1500, 2))])
        >>> np.sort(np.bincount(cluster(big, "hdbscan", fit_samples=1000)))   # faster
        array([1500, 3000])
    """
    if method == KNN:
        raise DequityError(
            "clustering 'knn' forms no clusters; use "
            "dequity.pipeline.density.knn_likelihood(points, k)"
        )
    return cluster_with(points, method, clustering_params(method, kwargs))


def cluster_with(
    points: np.ndarray,
    method: str,
    params: Mapping[str, Any],
    nearest_rows: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`cluster` with parameters already resolved by :func:`clustering_params`.

    ``nearest_rows`` (each point's nearest point of the seeded subsample, as
    :func:`dequity.pipeline.density.crowding` finds it with ``nearest=True``)
    spares subsampled HDBSCAN its own search for them.

    Example::

        >>> pts = np.random.default_rng(0).normal(size=(40, 2))
        >>> cluster_with(pts, "dbscan", clustering_params("dbscan", {"eps": 5.0})).tolist()[:3]
        [0, 0, 0]
    """
    params = dict(params)
    backend = params.pop("backend", "sklearn")
    points = np.asarray(points)
    check_enough_samples(len(points), method, params)
    if method == HDBSCAN_KNN:  # the clusters are HDBSCAN's; the density is applied later
        for key in DENSITY_KEYS:
            params.pop(key)
    if method == DBSCAN:
        if use_cuml(backend, supported=not _cpu_only(DBSCAN, params)):
            from cuml.cluster import DBSCAN as DBSCANClass

            params["output_type"] = "numpy"
        else:
            from sklearn.cluster import DBSCAN as DBSCANClass

        return np.asarray(DBSCANClass(**params).fit_predict(points), dtype=np.int64)
    params["gpu"] = use_cuml(backend)
    fit_samples = params.pop("fit_samples")
    if fit_samples is None or len(points) <= fit_samples:
        return _hdbscan(points, params)
    return _subsampled_hdbscan(points, params, fit_samples, nearest_rows)


def assign_noise(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels in which each noise point takes the label of its nearest clustered point.

    Used by ``noise="nearest"``: every sample then counts in a cluster. When
    every point is noise the labels come back unchanged.

    Example::

        >>> pts = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [0.5], [4.0]])
        >>> assign_noise(pts, np.array([0, 0, 0, 1, 1, -1, -1]))
        array([0, 0, 0, 1, 1, 0, 1])
    """
    labels = np.asarray(labels, dtype=np.int64)
    noise = labels < 0
    out = labels.copy()
    if noise.any() and not noise.all():
        points = np.asarray(points)
        out[noise] = _nearest_labels(points[~noise], labels[~noise], points[noise])
    return out


def _nearest_labels(reference: np.ndarray, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The label of each ``query`` point's nearest ``reference`` point."""
    from sklearn.metrics import pairwise_distances_argmin

    return labels[pairwise_distances_argmin(query, reference)]


def _hdbscan(points: np.ndarray, params: dict) -> np.ndarray:
    params = dict(params)
    if params.pop("gpu", False):
        from cuml.cluster import HDBSCAN as CumlHDBSCAN

        model = CumlHDBSCAN(output_type="numpy", **params)
        return np.asarray(model.fit_predict(np.asarray(points, np.float32)), dtype=np.int64)
    import hdbscan
    from sklearn.neighbors import KDTree

    # Prim's exact minimum spanning tree on a k-d tree: the partitions of the Boruvka
    # tree that HDBSCAN picks by default, in about two thirds of the time on the
    # <= FIT_SAMPLES points it is fitted on (``benchmarks/likelihood_stage.py``)
    metric = params.get("metric", "euclidean")
    algorithm = "prims_kdtree" if metric in KDTree.valid_metrics else "best"
    model = hdbscan.HDBSCAN(algorithm=algorithm, core_dist_n_jobs=-1, **params)
    return np.asarray(model.fit_predict(points), dtype=np.int64)


def _subsampled_hdbscan(
    points: np.ndarray, params: dict, fit_samples: int, nearest_rows: np.ndarray | None
) -> np.ndarray:
    """HDBSCAN on ``fit_samples`` random points; the others join their nearest one.

    Cluster sizes are then counted over all points, so likelihoods keep their
    meaning; groups smaller than about ``min_cluster_size / fit_samples`` of
    the data come out as noise (the rarest samples).
    """
    rows = subsample_rows(len(points), fit_samples)
    fitted = _hdbscan(points[rows], params)
    if nearest_rows is None:
        labels = _nearest_labels(points[rows], fitted, points)
    else:
        label_of_row = np.full(len(points), -1, dtype=np.int64)
        label_of_row[rows] = fitted
        labels = label_of_row[nearest_rows]
    labels[rows] = fitted
    return labels
