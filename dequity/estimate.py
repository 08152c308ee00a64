"""From projected points to each sample's likelihood, for every clustering method."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dequity import clustering as dc
from dequity.density import knn_likelihood
from dequity.errors import DequityError
from dequity.likelihood import NOISE_NEAREST, scaled_likelihood


def estimate_likelihood(
    points: np.ndarray,
    clustering: str,
    noise: str,
    groups: np.ndarray | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, likelihoods)`` of ``(n, d)`` projected points.

    * ``"hdbscan_knn"`` (default): HDBSCAN's clusters give each sample its
      cluster's share ``|C| / max |C|`` (the paper's eq. 3); it is multiplied
      by the sample's k-NN crowding (:func:`dequity.density.knn_likelihood`)
      to the power ``density_power``. The share says how common a sample's
      kind is; the crowding ranks samples within a cluster and sets apart
      sparse kinds that HDBSCAN merged into a large cluster.
    * ``"hdbscan"``, ``"dbscan"``: the share alone.
    * ``"knn"``: the crowding alone; ``labels`` is empty.

    ``noise`` is the policy for samples the clustering leaves as noise
    (:data:`dequity.likelihood.NOISE_POLICIES`); ``params`` are the
    clustering's (:func:`dequity.clustering.clustering_params`). With
    ``groups`` (one id per sample, e.g. a scene), shares and crowding count
    distinct groups instead of samples (:mod:`dequity.groups`).

    Example::

        >>> rng = np.random.default_rng(0)
        >>> pts = np.concatenate([rng.normal(0, 1, (300, 5)), rng.normal(20, 1, (30, 5))])
        >>> labels, p = estimate_likelihood(pts, "hdbscan_knn", "nearest")
        >>> bool(p[:300].mean() > 5 * p[300:].mean())
        True
    """
    params = dc.clustering_params(clustering, params)
    if clustering == dc.KNN:
        return np.empty(0, dtype=np.int64), knn_likelihood(points, groups=groups, **params)
    labels = dc.cluster(points, clustering, **params)
    if noise == NOISE_NEAREST:
        labels = dc.assign_noise(points, labels)
    _check_labels(labels, clustering, params)
    likelihoods = scaled_likelihood(labels, noise=noise, groups=groups)
    if clustering == dc.HDBSCAN_KNN and params["density_power"] > 0:
        crowding = knn_likelihood(points, params["k"], params["fit_samples"], groups)
        likelihoods = likelihoods * crowding ** params["density_power"]
    return labels, likelihoods


def _check_labels(labels: np.ndarray, clustering: str, params: dict) -> None:
    if (labels < 0).all():
        hint = (
            f"raise eps (now {params['eps']}) or lower min_samples (now "
            f"{params['min_samples']}); DBSCAN's eps depends on the scale of the "
            "projection, which changes with the number of samples"
            "; or use clustering='hdbscan_knn'"
            if clustering == dc.DBSCAN
            else f"lower min_cluster_size (now {params['min_cluster_size']}) or "
            f"min_samples (now {params.get('min_samples')})"
        )
        raise DequityError(
            f"{clustering} labelled every sample noise, so all weights would be equal; {hint}"
        )
    if len(set(labels.tolist()) - {-1}) == 1 and not (labels < 0).any():
        warnings.warn(
            "the clustering found a single cluster: every sample has the same cluster "
            "share; lower min_cluster_size / eps to separate appearances",
            stacklevel=4,
        )
