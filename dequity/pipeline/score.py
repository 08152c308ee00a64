"""A run's array stages, top to bottom: project, estimate, add the other views.

:class:`Settings` holds the stage parameters resolved once per call
(:func:`dequity.config.resolve`); :func:`score` runs every stage on an
``(n, d)`` array and returns what a run stores. Pure numpy: no FiftyOne, no
database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.pipeline import views as dv
from dequity.pipeline.estimate import estimate_with
from dequity.pipeline.projection import project_with

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The parameters of a run's stages, checked and complete.

    Example::

        settings = dequity.config.resolve(config, len(dataset))
        settings.clustering_params["min_cluster_size"]   # 10
    """

    projection: str | None
    projection_params: Mapping[str, Any]
    clustering: str
    clustering_params: Mapping[str, Any]
    noise: str
    #: the views' mode (:data:`dequity.pipeline.views.MODES`), None: the whole vector only
    views: str | None


@dataclass
class Scored:
    """What the stages found: per sample, and the fit that places new samples.

    ``labels`` is empty for ``"knn"``; ``views`` holds each view's values
    when the views were scored (``likelihoods`` is then their minimum) and
    ``views_mode`` their mode; ``fit`` is None when new samples cannot be
    placed (t-SNE, groups).
    """

    labels: np.ndarray
    likelihoods: np.ndarray
    points: np.ndarray
    fit: dict | None
    views: dict[str, list[float]] | None
    views_mode: str | None = None


def score(vectors: np.ndarray, settings: Settings, groups: np.ndarray | None = None) -> Scored:
    """Project, cluster and score ``(n, d)`` ``vectors`` as ``settings`` say.

    ``groups`` (one id per row, or None) make cluster sizes and crowding
    count distinct groups (:mod:`dequity.pipeline.groups`).

    Example::

        >>> from dequity.pipeline.clustering import clustering_params
        >>> from dequity.pipeline.projection import projection_params
        >>> s = Settings("pca", projection_params("pca", {"n_components": 5}), "hdbscan",
        ...              clustering_params("hdbscan"), "nearest", views=None)
        >>> x = np.random.default_rng(0).normal(size=(200, 16))
        >>> scored = score(x, s)
        >>> scored.likelihoods.shape, scored.points.shape
        ((200,), (200, 2))
    """
    logger.info("Projecting %d embeddings (%s)...", len(vectors), settings.projection)
    points, transform = project_with(vectors, settings.projection, settings.projection_params)
    logger.info("Likelihoods (%s)...", settings.clustering)
    result = estimate_with(
        points, settings.clustering, settings.noise, groups, settings.clustering_params
    )
    likelihoods, views = result.likelihoods, None
    if settings.views and dv.applies(vectors):
        logger.info("Likelihoods of the other views (%s)...", settings.views)
        fit_samples = settings.clustering_params.get("fit_samples")
        views = dv.score_views(vectors, likelihoods, settings.views, fit_samples, groups)
        likelihoods = views.likelihoods
    fit = None
    if transform is not None and groups is None:
        result.fit.projection = transform
        fit = result.fit.to_dict()
        if views is not None:
            fit.update(views.fits)
    if views is None:
        return Scored(result.labels, likelihoods, points_2d(points), fit, None)
    values = {name: v.tolist() for name, v in views.values.items()}
    return Scored(result.labels, likelihoods, points_2d(points), fit, values, settings.views)


def points_2d(points: np.ndarray) -> np.ndarray:
    """2-D coordinates for plots: the first two projected axes (padded with zeros).

    Example::

        >>> points_2d(np.ones((3, 1))).tolist()
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    """
    if points.shape[1] >= 2:
        return points[:, :2]
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
