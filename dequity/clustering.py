"""Clustering of projected embeddings into groups of similar images."""

from __future__ import annotations

from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.projection import use_cuml, validate_backend

#: ``hdbscan.HDBSCAN``: no distance threshold to tune, robust to density.
HDBSCAN = "hdbscan"
#: scikit-learn DBSCAN, as in the paper (eps depends on the projection scale).
DBSCAN = "dbscan"
#: no clusters: a continuous k-NN density likelihood (:mod:`dequity.density`).
KNN = "knn"
#: HDBSCAN clusters, each sample's share scaled by its k-NN crowding
#: (:func:`dequity.estimate.estimate_likelihood`): continuous within clusters.
HDBSCAN_KNN = "hdbscan_knn"
CLUSTERINGS = (HDBSCAN_KNN, HDBSCAN, DBSCAN, KNN)
#: parameters of HDBSCAN_KNN that are not HDBSCAN's
DENSITY_KEYS = ("k", "density_power")
_ASSIGN_ROWS = 65_536

_DEFAULTS: dict[str, dict[str, Any]] = {
    # min_samples=1: real image embeddings form continua rather than blobs;
    # HDBSCAN's default (min_samples = min_cluster_size) labels most of such
    # a set noise, while 1 keeps fidelity on mixtures (see README benchmarks).
    # fit_samples: above this many points HDBSCAN (whose cost grows about as
    # n^1.6 in 50-D) is fitted on a random subsample of this size and every
    # other point takes the label of its nearest fitted point.
    HDBSCAN: {"min_cluster_size": 10, "min_samples": 1, "fit_samples": 5_000},
    HDBSCAN_KNN: {
        "min_cluster_size": 10,
        "min_samples": 1,
        "fit_samples": 5_000,
        "k": 30,
        "density_power": 0.5,
    },
    DBSCAN: {"eps": 2.0, "min_samples": 10},
    KNN: {"k": 30},
}
_EXTRA_KEYS: dict[str, set[str]] = {
    HDBSCAN: {
        "cluster_selection_epsilon",
        "cluster_selection_method",
        "metric",
        "alpha",
        "allow_single_cluster",
    },
    DBSCAN: {"metric", "algorithm", "leaf_size", "p", "n_jobs"},
    KNN: set(),
}
_EXTRA_KEYS[HDBSCAN_KNN] = _EXTRA_KEYS[HDBSCAN]


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
    params = dict(_DEFAULTS[method])
    accepted = set(params) | _EXTRA_KEYS[method] | ({"backend"} if method != KNN else set())
    unknown = set(kwargs or {}) - accepted
    if unknown:
        raise DequityError(
            f"unknown clustering_kwargs {sorted(unknown)} for clustering "
            f"{method!r}; accepted: {sorted(accepted)}"
        )
    params.update(kwargs or {})
    _validate_values(method, params)
    return params


def _validate_values(method: str, params: dict) -> None:
    if method in (KNN, HDBSCAN_KNN):
        k = params["k"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DequityError(f"k must be an integer >= 1, got {k!r}")
    if method == KNN:
        return
    if method == HDBSCAN_KNN:
        power = params["density_power"]
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 <= power <= 1:
            raise DequityError(
                f"density_power must be a number in [0, 1] (0: cluster sizes only), got {power!r}"
            )
    size_key = _size_key(method)
    size = params[size_key]
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise DequityError(f"{size_key} must be an integer >= 2, got {size!r}")
    fit = params.get("fit_samples")
    if (
        method != DBSCAN
        and fit is not None
        and (not isinstance(fit, (int, np.integer)) or fit < 2 * size)
    ):
        raise DequityError(
            f"fit_samples must be None or an integer >= 2 * min_cluster_size, got {fit!r}"
        )
    if method == DBSCAN and not (isinstance(params["eps"], (int, float)) and params["eps"] > 0):
        raise DequityError(f"eps must be a number > 0, got {params['eps']!r}")
    if "backend" in params:
        validate_backend(params["backend"])
        cpu_only = sorted(_CPU_ONLY[method] & set(params))
        if params["backend"] == "cuml" and cpu_only:
            raise DequityError(
                f"{cpu_only} are scikit-learn/hdbscan options that cuML's {method} "
                "lacks; drop them or use backend='sklearn'"
            )


# options of the CPU implementations that cuML's do not take
_CPU_ONLY: dict[str, set[str]] = {
    HDBSCAN: set(),
    HDBSCAN_KNN: set(),
    DBSCAN: {"algorithm", "leaf_size", "p", "n_jobs"},
}


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
        >>> np.bincount(cluster(pts, "hdbscan", min_cluster_size=5))
        array([15, 30])
        >>> big = np.concatenate([rng.normal(0, 0.1, (3000, 2)),
        ...                       rng.normal(5, 0.1, (1500, 2))])
        >>> np.bincount(cluster(big, "hdbscan", fit_samples=1000))   # faster
        array([1500, 3000])
    """
    if method == KNN:
        raise DequityError(
            "clustering 'knn' forms no clusters; use dequity.density.knn_likelihood(points, k)"
        )
    params = clustering_params(method, kwargs)
    backend = params.pop("backend", "sklearn")
    points = np.asarray(points)
    check_enough_samples(len(points), method, params)
    if method == HDBSCAN_KNN:  # the clusters are HDBSCAN's; the density is applied later
        for key in DENSITY_KEYS:
            params.pop(key)
    if method == DBSCAN:
        if use_cuml(backend, supported=not _CPU_ONLY[DBSCAN] & set(params)):
            from cuml.cluster import DBSCAN as DBSCANClass

            params["output_type"] = "numpy"
        else:
            from sklearn.cluster import DBSCAN as DBSCANClass

        return np.asarray(DBSCANClass(**params).fit_predict(points), dtype=np.int64)
    params["gpu"] = use_cuml(backend)
    fit_samples = params.pop("fit_samples")
    if fit_samples is None or len(points) <= fit_samples:
        return _hdbscan(points, params)
    return _subsampled_hdbscan(points, params, fit_samples)


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
    """The label of each ``query`` point's nearest ``reference`` point (chunked brute force)."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(reference)
    out = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), _ASSIGN_ROWS):
        chunk = query[start : start + _ASSIGN_ROWS]
        nearest = index.kneighbors(chunk, return_distance=False)[:, 0]
        out[start : start + len(chunk)] = labels[nearest]
    return out


def _hdbscan(points: np.ndarray, params: dict) -> np.ndarray:
    params = dict(params)
    if params.pop("gpu", False):
        from cuml.cluster import HDBSCAN as CumlHDBSCAN

        model = CumlHDBSCAN(output_type="numpy", **params)
        return np.asarray(model.fit_predict(np.asarray(points, np.float32)), dtype=np.int64)
    import hdbscan

    model = hdbscan.HDBSCAN(core_dist_n_jobs=-1, **params)
    return np.asarray(model.fit_predict(points), dtype=np.int64)


def _subsampled_hdbscan(points: np.ndarray, params: dict, fit_samples: int) -> np.ndarray:
    """HDBSCAN on ``fit_samples`` random points; the others join their nearest one.

    Cluster sizes are then counted over all points, so likelihoods keep their
    meaning; groups smaller than about ``min_cluster_size / fit_samples`` of
    the data come out as noise (the rarest samples).
    """
    rng = np.random.default_rng(51)
    rows = np.sort(rng.choice(len(points), fit_samples, replace=False))
    fitted = _hdbscan(points[rows], params)
    labels = _nearest_labels(points[rows], fitted, points)
    labels[rows] = fitted
    return labels
