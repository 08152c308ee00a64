"""Likelihood estimators compared by the benchmarks.

Each takes ``(n, d)`` embeddings and returns ``(likelihood, labels)``;
``labels`` is None for estimators without a cluster step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dequity.clustering import assign_noise, cluster
from dequity.density import knn_likelihood
from dequity.likelihood import scaled_likelihood
from dequity.projection import project

Estimate = tuple[np.ndarray, np.ndarray | None]
Estimator = Callable[[np.ndarray], Estimate]


def paper(x: np.ndarray, eps: float = 1.0, noise: str = "cluster") -> Estimate:
    """The paper: sklearn t-SNE 3-D (PCA init, perplexity 30), DBSCAN(eps, 10)."""
    labels = cluster(project(x, "tsne"), "dbscan", eps=eps, min_samples=10)
    return scaled_likelihood(labels, noise=noise), labels


def pca_hdbscan(x: np.ndarray, k: int = 50) -> Estimate:
    """PCA-k then HDBSCAN(min_cluster_size 10, min_samples 1), singleton noise."""
    labels = cluster(project(x, "pca", n_components=k), "hdbscan")
    return scaled_likelihood(labels), labels


def opentsne_hdbscan(x: np.ndarray) -> Estimate:
    """openTSNE 2-D (after PCA-50) then HDBSCAN, singleton noise."""
    labels = cluster(project(x, "opentsne"), "hdbscan")
    return scaled_likelihood(labels), labels


def pca_hdbscan_nearest(x: np.ndarray) -> Estimate:
    """The default, then each noise point joins its nearest clustered point's cluster."""
    points = project(x, "pca")
    labels = assign_noise(points, cluster(points, "hdbscan"))
    return scaled_likelihood(labels, noise="nearest"), labels


def knn_density(x: np.ndarray, k: int = 30) -> Estimate:
    """k-NN neighbourhood-count likelihood on PCA-50, no cluster step."""
    return knn_likelihood(project(x, "pca"), k=k), None


def subsample_hdbscan(x: np.ndarray, fit_max: int = 2_000) -> Estimate:
    """PCA-50, HDBSCAN on ``fit_max`` random samples, the rest by nearest neighbour.

    ``dequity.cluster(..., fit_samples=fit_max)``: every sample takes the label
    of its nearest clustered sample; cluster sizes are counted over all samples.
    """
    labels = cluster(project(x, "pca"), "hdbscan", fit_samples=fit_max)
    return scaled_likelihood(labels), labels


#: name -> estimator, in table order. The first is the reference.
CANDIDATES: dict[str, Estimator] = {
    "paper: t-SNE 3-D + DBSCAN(eps 1, min_samples 10), noise as one cluster": paper,
    "default: PCA-50 + HDBSCAN(10, min_samples 1, fit_samples 5k)": pca_hdbscan,
    "PCA-20 + HDBSCAN": lambda x: pca_hdbscan(x, 20),
    "PCA-10 + HDBSCAN": lambda x: pca_hdbscan(x, 10),
    "openTSNE 2-D + HDBSCAN": opentsne_hdbscan,
    "default, noise joins the nearest cluster (noise='nearest')": pca_hdbscan_nearest,
    "k-NN density (k 30) on PCA-50": knn_density,
    "k-NN density (k 10) on PCA-50": lambda x: knn_density(x, 10),
    "PCA-50 + HDBSCAN fitted on 2k samples + 1-NN (fit_samples 2000)": subsample_hdbscan,
}
REFERENCE = next(iter(CANDIDATES))
DEFAULT = "default: PCA-50 + HDBSCAN(10, min_samples 1, fit_samples 5k)"
SUBSAMPLED = "PCA-50 + HDBSCAN fitted on 2k samples + 1-NN (fit_samples 2000)"


def noise_share(labels: np.ndarray | None) -> float:
    """Share of samples labelled noise (0 for estimators without clusters)."""
    return 0.0 if labels is None else float(np.mean(labels < 0))
