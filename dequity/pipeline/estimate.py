"""From projected points to each sample's likelihood, for every clustering method."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline import clustering as dc
from dequity.pipeline.density import crowding
from dequity.pipeline.fit import LikelihoodFit, LinearProjection
from dequity.pipeline.likelihood import NOISE_NEAREST, scaled_likelihood
from dequity.pipeline.subsample import FIT_SAMPLES, subsample_rows


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
      by the sample's k-NN crowding (:func:`dequity.pipeline.density.knn_likelihood`)
      to the power ``density_power``. The share says how common a sample's
      kind is; the crowding ranks samples within a cluster and sets apart
      sparse kinds that HDBSCAN merged into a large cluster.
    * ``"hdbscan"``, ``"dbscan"``: the share alone.
    * ``"knn"``: the crowding alone; ``labels`` is empty.

    ``noise`` is the policy for samples the clustering leaves as noise
    (:data:`dequity.pipeline.likelihood.NOISE_POLICIES`); ``params`` are the
    clustering's (:func:`dequity.pipeline.clustering.clustering_params`). With
    ``groups`` (one id per sample, e.g. a scene), shares and crowding count
    distinct groups instead of samples (:mod:`dequity.pipeline.groups`).

    Example::

        >>> rng = np.random.default_rng(0)
        >>> pts = np.concatenate([rng.normal(0, 1, (300, 5)), rng.normal(20, 1, (30, 5))])
        >>> labels, p = estimate_likelihood(pts, "hdbscan_knn", "nearest")
        >>> bool(p[:300].mean() > 5 * p[300:].mean())
        True
    """
    result = estimate(points, clustering, noise, groups, **params)
    return result.labels, result.likelihoods


@dataclass
class Estimate:
    """Labels and likelihoods of projected points, and the fit that places new ones."""

    labels: np.ndarray
    likelihoods: np.ndarray
    fit: LikelihoodFit


def estimate(
    points: np.ndarray,
    clustering: str,
    noise: str,
    groups: np.ndarray | None = None,
    **params: Any,
) -> Estimate:
    """:func:`estimate_likelihood`, with the run's :class:`~dequity.pipeline.fit.LikelihoodFit`.

    The fit's reference is the crowding reference (or, without crowding, the
    same seeded subsample of ``fit_samples`` points, else every point) with
    the samples' final labels; its projection is the identity until the
    caller sets the one it used.

    Example::

        >>> pts = np.random.default_rng(0).normal(size=(300, 4))
        >>> e = estimate(pts, "hdbscan_knn", "nearest")
        >>> len(e.fit.reference), e.fit.max_count == e.fit.max_count
        (300, True)
    """
    return estimate_with(
        points, clustering, noise, groups, dc.clustering_params(clustering, params)
    )


def estimate_with(
    points: np.ndarray,
    clustering: str,
    noise: str,
    groups: np.ndarray | None,
    params: Mapping[str, Any],
) -> Estimate:
    """:func:`estimate` with parameters already resolved by
    :func:`~dequity.pipeline.clustering.clustering_params`.

    Example::

        >>> pts = np.random.default_rng(0).normal(size=(100, 3))
        >>> e = estimate_with(pts, "knn", "nearest", None, {"k": 5, "fit_samples": None})
        >>> len(e.likelihoods), len(e.labels)
        (100, 0)
    """
    points = np.asarray(points)
    power = 1.0 if clustering == dc.KNN else float(params.get("density_power", 0.0))
    counts = None
    if power > 0:  # first: its pass over the samples also finds what clustering needs
        counts = crowding(
            points,
            params["k"],
            params.get("fit_samples"),
            groups,
            nearest=clustering in (dc.HDBSCAN, dc.HDBSCAN_KNN),
        )
    if clustering == dc.KNN:
        labels = np.empty(0, dtype=np.int64)
    else:
        nearest = None if counts is None else counts.nearest_rows
        labels = dc.cluster_with(points, clustering, params, nearest)
        if noise == NOISE_NEAREST:
            labels = dc.assign_noise(points, labels)
        _check_labels(labels, clustering, params)
    likelihoods = (
        np.ones(len(points))
        if clustering == dc.KNN
        else scaled_likelihood(labels, noise=noise, groups=groups)
    )
    if counts is not None:
        likelihoods = likelihoods * counts.likelihood() ** power
        rows = counts.reference_rows
    else:
        rows = subsample_rows(len(points), params.get("fit_samples") or FIT_SAMPLES)
    fit = LikelihoodFit(
        projection=LinearProjection(),
        reference=points[rows].astype(np.float64),
        reference_labels=labels[rows] if len(labels) else labels,
        sizes=dict(Counter(labels.tolist())) if len(labels) else {},
        noise=noise,
        density_power=power,
        radius=None if counts is None else counts.radius,
        max_count=None if counts is None else int(counts.counts.max()),
        far_distance=far_distance(points[rows]),
        self_counted=len(rows) == len(points),
    )
    return Estimate(labels, likelihoods, fit)


def far_distance(reference: np.ndarray) -> float:
    """The 99th percentile of each reference point's distance to its nearest other one.

    Example::

        >>> far_distance(np.array([[0.0], [1.0], [3.0]]))
        1.98
    """
    from sklearn.neighbors import NearestNeighbors

    if len(reference) < 3:
        return float("inf")
    index = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(reference)
    return float(np.quantile(index.kneighbors(reference)[0][:, 1], 0.99))


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
