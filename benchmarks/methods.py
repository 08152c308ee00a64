"""Likelihood estimators compared by the benchmarks.

Each takes ``(n, d)`` embeddings and returns ``(likelihood, labels)``;
``labels`` is None for estimators without a cluster step. All but the
paper's and FiftyOne Brain's run the library's own
:func:`dequity.pipeline.estimate.estimate_likelihood`. FiftyOne Brain's scores are
turned into likelihoods (higher = more common) so that every row is read
the same way: ``1 - uniqueness``, and representativeness as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np

from dequity.defaults import DEFAULT_CLUSTERING, DEFAULT_NOISE
from dequity.pipeline import views as dv
from dequity.pipeline.clustering import cluster, clustering_params
from dequity.pipeline.estimate import estimate_likelihood
from dequity.pipeline.likelihood import scaled_likelihood
from dequity.pipeline.projection import project

Estimate = tuple[np.ndarray, np.ndarray | None]
Estimator = Callable[[np.ndarray], Estimate]


def paper(x: np.ndarray, eps: float = 1.0, noise: str = "cluster") -> Estimate:
    """The paper: sklearn t-SNE 3-D (PCA init, perplexity 30), DBSCAN(eps, 10).

    Unlike ``compute_dequity``, it does not refuse a clustering that is all
    noise: the benchmarks score that outcome (every likelihood equal).
    """
    labels = cluster(project(x, "tsne"), "dbscan", eps=eps, min_samples=10)
    return scaled_likelihood(labels, noise=noise), labels


def pca(
    x: np.ndarray,
    clustering: str = DEFAULT_CLUSTERING,
    noise: str = DEFAULT_NOISE,
    n_components: int = 50,
    **params,
) -> Estimate:
    """PCA (50 components), then ``clustering`` with ``noise`` (the library's defaults)."""
    points = project(x, "pca", n_components=min(n_components, x.shape[1]))
    labels, p = estimate_likelihood(points, clustering, noise, **params)
    return p, (labels if labels.size else None)


def default(x: np.ndarray) -> Estimate:
    """The default: PCA-50 + HDBSCAN clusters, noise to the nearest, times k-NN crowding ** 0.3."""
    return pca(x)


def any_view(x: np.ndarray, views: str = "content", **params) -> Estimate:
    """The default with its views (``views="content"`` or ``"ranked"``), as the library scores them.

    ``params`` are the whole vector's clustering parameters (as
    ``clustering_kwargs``). On vectors without the default model's layout it
    is :func:`pca` alone.
    """
    found, labels = view_likelihoods(x, views, **params)
    return dv.combine(found)[0], labels


def view_likelihoods(
    x: np.ndarray, views: str = "content", image: Estimator | None = None, **params
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``({view: values}, labels)``: the whole vector's and, where they apply, the other views'.

    ``image`` estimates the whole vector's likelihood (by default :func:`pca`
    with ``params``, the whole vector's clustering parameters, as in
    :func:`any_view`).

    Example::

        found, labels = view_likelihoods(x, "ranked")   # x: the default model's vectors
        p = np.minimum.reduce(list(found.values()))
    """
    p, labels = (image or partial(pca, **params))(x)
    if not dv.applies(x):
        return {dv.IMAGE: p}, labels
    fit_samples = clustering_params(DEFAULT_CLUSTERING)["fit_samples"]  # as compute_dequity
    return dv.score_views(x, p, views, fit_samples).values, labels


def previous_default(x: np.ndarray) -> Estimate:
    """The previous default: PCA-50 + HDBSCAN(10, min_samples 1), noise as singletons."""
    return pca(x, "hdbscan", "singleton")


def nearest(x: np.ndarray) -> Estimate:
    """PCA-50 + HDBSCAN, each noise point joins its nearest cluster (cluster sizes only)."""
    return pca(x, "hdbscan", "nearest")


def knn_density(x: np.ndarray) -> Estimate:
    """k-NN neighbourhood-count likelihood (k 30) on PCA-50, no clusters."""
    return pca(x, "knn", "nearest")


def brain_uniqueness(x: np.ndarray) -> Estimate:
    """FiftyOne Brain's ``compute_uniqueness`` on ``x``, as ``1 - uniqueness``."""
    return 1.0 - _brain("compute_uniqueness", x), None


def brain_representativeness(x: np.ndarray) -> Estimate:
    """FiftyOne Brain's ``compute_representativeness`` on ``x`` (cluster-center)."""
    return _brain("compute_representativeness", x), None


def _brain(method: str, x: np.ndarray) -> np.ndarray:
    """Scores of a FiftyOne Brain method on bare samples that carry the vectors ``x``."""
    import fiftyone as fo
    import fiftyone.brain as fob

    dataset = fo.Dataset()
    try:
        dataset.add_samples(
            [fo.Sample(filepath=f"/vectors/{i}.png") for i in range(len(x))], progress=False
        )
        logging.getLogger("fiftyone.brain").setLevel(logging.WARNING)
        getattr(fob, method)(dataset, "score", embeddings=np.asarray(x), progress=False)
        scores = np.asarray(dataset.values("score"), dtype=np.float64)
    finally:
        dataset.delete()
    # representativeness divides by its largest cluster distance, which can be 0
    return np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)


def calibrated(p: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    """Likelihoods divided by their ``quantile`` and capped at 1: ranks kept, weights spread.

    Example::

        >>> calibrated(np.array([0.1, 0.2, 0.4, 0.5]), 0.5).round(2).tolist()
        [0.33, 0.67, 1.0, 1.0]
    """
    return np.minimum(1.0, p / np.quantile(p, quantile))


def ranked(p: np.ndarray) -> np.ndarray:
    """Each likelihood as the share of samples at most as likely (the empirical CDF).

    Ranks are kept and the likelihoods spread evenly over (0, 1], whatever
    their scale: a calibration that puts views of different scales on one.

    Example::

        >>> ranked(np.array([0.01, 0.02, 0.9, 0.02])).tolist()
        [0.25, 0.75, 1.0, 0.75]
    """
    from scipy.stats import rankdata

    return rankdata(p, "max") / len(p)


def off_subspace(x: np.ndarray, n_components: int = 10, scale: float = 2.0) -> np.ndarray:
    """Likelihood from the distance to the data's ``n_components``-D PCA subspace.

    ``scale`` x the share of samples at least as far off, capped at 1: images
    of another domain sit far off the subspace the rest of the set spans.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(size=(99, 3)) * [5, 5, 0.1], [[0, 0, 9.0]]])
        >>> off_subspace(x, n_components=2).argmin()
        np.int64(99)
    """
    from sklearn.decomposition import PCA

    fit = PCA(n_components, random_state=0).fit(x)  # its randomized solver, seeded
    distance = np.linalg.norm(x - fit.inverse_transform(fit.transform(x)), axis=1)
    return np.minimum(1.0, scale * ranked(-distance))


def neighbour_distance(x: np.ndarray, k: int = 50, n_components: int = 50) -> np.ndarray:
    """Each sample's distance to its ``k``-th nearest other sample on PCA-``n_components``.

    Example::

        >>> x = np.concatenate([np.zeros((5, 3)), [[4.0, 0, 0]]])
        >>> neighbour_distance(x, k=2, n_components=2).round(1).tolist()
        [0.0, 0.0, 0.0, 0.0, 0.0, 4.0]
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n_components, k = min(n_components, *x.shape), min(k, len(x) - 1)
    points = PCA(n_components, random_state=0).fit_transform(x)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return distances[:, -1]


def soft_share(x: np.ndarray, n_components: int = 50) -> Estimate:
    """The default's whole-vector likelihood with HDBSCAN's soft membership for the share.

    Each sample's share is its expected cluster share under
    ``hdbscan.all_points_membership_vectors`` (PCA-``n_components``, the
    default clustering's ``min_cluster_size`` and ``min_samples``), times its
    k-NN crowding to the default's ``density_power``.

    Example::

        p, labels = soft_share(x)    # x: (n, d) embeddings, n > 30
    """
    import hdbscan

    from dequity.pipeline.density import knn_likelihood

    params = clustering_params(DEFAULT_CLUSTERING)
    points = project(x, "pca", n_components=min(n_components, *x.shape))
    fit = hdbscan.HDBSCAN(
        min_cluster_size=params["min_cluster_size"],
        min_samples=params["min_samples"],
        prediction_data=True,
    ).fit(points)
    labels = fit.labels_
    sizes = np.bincount(labels[labels >= 0]).astype(np.float64)
    if len(sizes) < 2:  # one cluster or none: every sample shares it
        share = np.ones(len(x))
    else:
        membership = hdbscan.all_points_membership_vectors(fit)
        membership /= np.maximum(membership.sum(axis=1, keepdims=True), 1e-12)
        share = membership @ (sizes / sizes.max())
    crowding = knn_likelihood(points, params["k"], len(x))
    return share * crowding ** params["density_power"], labels


def subsampled_default(x: np.ndarray, fit_samples: int = 2_000) -> Estimate:
    """The default fitted on ``fit_samples`` random samples (clusters and crowding)."""
    return pca(x, fit_samples=fit_samples)


DEFAULT = "default: PCA-50 + HDBSCAN, noise to nearest, x k-NN crowding ** 0.3"
PREVIOUS = "previous default: PCA-50 + HDBSCAN, noise as singletons"
REFERENCE = "paper: t-SNE 3-D + DBSCAN(eps 1, min_samples 10), noise as one cluster"
SUBSAMPLED = "default, fitted on 2k samples (fit_samples 2000)"
#: name -> estimator, in table order. The first is the reference.
CANDIDATES: dict[str, Estimator] = {
    REFERENCE: paper,
    PREVIOUS: previous_default,
    "PCA-50 + HDBSCAN, noise to nearest (cluster sizes only)": nearest,
    "k-NN density (k 30) on PCA-50": knn_density,
    DEFAULT: default,
}


def noise_share(labels: np.ndarray | None) -> float:
    """Share of samples labelled noise (0 for estimators without clusters)."""
    return 0.0 if labels is None else float(np.mean(labels < 0))
