"""The likelihood stage as a fit on a subsample and passes over partitions of the rest.

For vectors that do not fit one machine (``likelihood_backend="ray"``, see
:mod:`dequity.api.ray_stage`). Above ``fit_samples`` samples the local stage
already fits PCA, the crowding radius and HDBSCAN on seeded subsamples and
then only *places* every sample: its nearest reference point gives its
cluster, and the reference points within the radius its crowding. Here the
same steps are split so that no step needs every vector at once:

1. :func:`fit_rows`: the rows (positions among the samples with a vector)
   whose vectors the fit needs: PCA's draw and the reference draw, the very
   draws the local stage makes;
2. :func:`fit_partitioned`: the projection, the crowding radius and the
   reference points' clusters, from those vectors;
3. :func:`place`: one partition's clusters and crowding counts, and its
   :class:`Tally` (cluster sizes, largest count);
4. :func:`finish`: the run's fit once every partition's tally is summed;
5. :func:`likelihoods`: one partition's likelihoods under the finished fit.

The likelihoods match the local stage's except where a sample's nearest
reference point is noise: the local stage gives it the cluster of its nearest
clustered sample among all samples, this one among the reference points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline import clustering as dc
from dequity.pipeline.density import count_and_nearest, crowding
from dequity.pipeline.estimate import far_distance
from dequity.pipeline.fit import LikelihoodFit, LinearProjection
from dequity.pipeline.likelihood import NOISE_NEAREST, NOISE_SINGLETON
from dequity.pipeline.projection import PCA, fit_pca_on, pca_rows
from dequity.pipeline.score import Settings
from dequity.pipeline.subsample import subsample_rows

#: clusterings whose fit places samples by their nearest reference point
PARTITIONED_CLUSTERINGS = (dc.HDBSCAN_KNN, dc.HDBSCAN, dc.KNN)


@dataclass(frozen=True)
class FitRows:
    """Rows of the ``n`` samples with a vector that the fit reads (sorted positions)."""

    n: int
    projection: np.ndarray
    reference: np.ndarray

    @property
    def all(self) -> np.ndarray:
        """Every row the fit needs, sorted and unique."""
        return np.union1d(self.projection, self.reference)


def check_partitionable(settings: Settings) -> None:
    """Raise :class:`DequityError` unless ``settings`` can be fitted on a subsample and placed.

    Example::

        check_partitionable(dequity.config.resolve(config, len(dataset)))
    """
    if settings.projection not in (PCA, None):
        raise DequityError(
            f"projection={settings.projection!r} has no map for new points, so the likelihood "
            "stage cannot run in partitions; use projection='pca' (or None) with "
            "likelihood_backend='ray'"
        )
    if settings.clustering not in PARTITIONED_CLUSTERINGS:
        raise DequityError(
            f"clustering={settings.clustering!r} cannot place samples by a fitted reference; "
            f"use one of {list(PARTITIONED_CLUSTERINGS)} with likelihood_backend='ray'"
        )
    if settings.clustering_params.get("fit_samples") is None:
        raise DequityError(
            "clustering_kwargs fit_samples=None fits on every sample, which the likelihood "
            "stage in partitions cannot do; leave fit_samples at its default or set a number"
        )


def fit_rows(n: int, settings: Settings) -> FitRows:
    """The rows of ``n`` samples whose vectors :func:`fit_partitioned` needs.

    Example::

        >>> from dequity.pipeline.clustering import clustering_params
        >>> s = Settings(None, {}, "hdbscan_knn", clustering_params("hdbscan_knn"), "nearest", None)
        >>> len(fit_rows(20_000, s).reference)
        5000
    """
    projection = np.empty(0, np.int64)
    if settings.projection == PCA:
        params = settings.projection_params
        projection = pca_rows(n, params.get("fit_samples", 100_000), params.get("random_state"))
    reference = subsample_rows(n, settings.clustering_params["fit_samples"])
    return FitRows(n, projection, reference)


def fit_partitioned(
    rows: FitRows, vectors: dict[int, np.ndarray] | np.ndarray, settings: Settings
) -> LikelihoodFit:
    """The fit of :func:`fit_rows`' rows: projection, radius, reference clusters; no sizes yet.

    ``vectors`` holds the vector of each row of ``rows.all``, in that order.

    Example::

        fit = fit_partitioned(rows, vectors_at_rows, settings)
        labels, counts, tally = place(fit, partition_vectors)
    """
    x = np.asarray(vectors, np.float32)
    position = {int(r): i for i, r in enumerate(rows.all)}
    projection = LinearProjection()
    if settings.projection == PCA:
        at = [position[int(r)] for r in rows.projection]
        projection = fit_pca_on(x[at], rows.n, settings.projection_params)
    reference = projection(x[[position[int(r)] for r in rows.reference]]).astype(np.float64)
    params = dict(settings.clustering_params)
    power = 1.0 if settings.clustering == dc.KNN else float(params.get("density_power", 0.0))
    radius = None
    if power > 0:
        radius = crowding(reference, params["k"], None).radius
    labels = np.empty(0, np.int64)
    if settings.clustering != dc.KNN:
        labels = dc.cluster_with(reference, settings.clustering, params)
        if settings.noise == NOISE_NEAREST:
            labels = dc.assign_noise(reference, labels)
    return LikelihoodFit(
        projection=projection,
        reference=reference,
        reference_labels=labels,
        sizes={},
        noise=settings.noise,
        density_power=power,
        radius=radius,
        max_count=None,
        far_distance=far_distance(reference),
        self_counted=len(rows.reference) == rows.n,
    )


@dataclass
class Tally:
    """What one partition contributes to the run's normalisation.

    Example::

        >>> t = Tally.of(np.array([0, 0, 1]), np.array([3, 5, 1]))
        >>> (t + Tally.of(np.array([1]), np.array([7]))).sizes
        Counter({0: 2, 1: 2})
    """

    sizes: Counter = field(default_factory=Counter)
    max_count: int = 0
    n: int = 0

    @classmethod
    def of(cls, labels: np.ndarray, counts: np.ndarray) -> Tally:
        """The tally of one partition's labels and crowding counts."""
        sizes = Counter(np.asarray(labels).tolist())
        return cls(sizes, int(np.max(counts, initial=0)), len(counts))

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.sizes + other.sizes, max(self.max_count, other.max_count), self.n + other.n
        )


def place(fit: LikelihoodFit, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, counts, points)`` of one partition's vectors under an unfinished fit.

    ``labels``: the nearest reference point's cluster (empty for ``"knn"``);
    ``counts``: reference points within the crowding radius (zeros without
    crowding); ``points``: the projected vectors.
    """
    points = fit.projection(vectors).astype(np.float64)
    radius = fit.radius if fit.radius is not None else 0.0
    counts, nearest = count_and_nearest(points, fit.reference, radius, None)
    if fit.radius is None:
        counts = np.zeros(len(points), np.int64)
    labels = fit.reference_labels[nearest] if len(fit.reference_labels) else np.empty(0, np.int64)
    return labels, counts, points


def finish(fit: LikelihoodFit, total: Tally) -> LikelihoodFit:
    """The run's fit: ``fit`` with the cluster sizes and largest count of every partition.

    It places new samples later, as a local run's fit does (:func:`dequity.update_dequity`).
    """
    fit.sizes = {
        label: size
        for label, size in total.sizes.items()
        if label >= 0 or fit.noise != NOISE_SINGLETON  # each noise point its own cluster
    }
    if len(fit.reference_labels) and not fit.sizes:
        raise DequityError("the clustering labelled every sample noise; lower min_cluster_size")
    fit.max_count = total.max_count if fit.radius is not None else None
    return fit


def likelihoods(fit: LikelihoodFit, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each sample's likelihood: its cluster's share times its crowding to the fit's power.

    Example::

        likelihoods(finish(fit, total), labels, counts)
    """
    shares = fit.shares(labels) if len(labels) else np.ones(len(counts))
    if fit.radius is None:
        return shares
    return shares * (np.asarray(counts) / fit.max_count) ** fit.density_power
