"""A run's fit: what places new samples in its clusters without refitting.

A run stores, with its results, the projection it learned (PCA's mean and
axes), a reference subsample of projected points with their cluster labels,
the crowding radius and count scale, and the number of samples in every
cluster. :func:`dequity.update_dequity` then gives a new sample the label of
its nearest reference point and its crowding among the reference points, and
rescales every old sample's likelihood by how its cluster's share and the
crowding scale changed: ``p = share(cluster) * (count / max_count) ** power``
moves by a factor per cluster, so old samples need no embedding again.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.likelihood import NOISE_SINGLETON

#: share of new samples farther from every reference point than the fit's
#: own 99th-percentile nearest-neighbour distance above which a refit is advised
FAR_SHARE_WARNING = 0.10
#: total-variation distance between the new samples' cluster proportions and
#: the fit's above which a refit is advised
SHIFT_WARNING = 0.25


@dataclass
class LinearProjection:
    """PCA's transform ``(x - mean) @ components.T``; the identity without components."""

    mean: np.ndarray | None = None
    components: np.ndarray | None = None

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if self.components is None:
            return x
        return ((x - self.mean) @ self.components.T).astype(np.float32)


@dataclass
class LikelihoodFit:
    """Everything :func:`dequity.update_dequity` needs from a run (see the module doc).

    Example::

        fit = LikelihoodFit.from_dict(results.fit)   # a stored run's fit
        labels, counts, far = fit.place(fit.projection(new_vectors))
    """

    projection: LinearProjection
    reference: np.ndarray
    reference_labels: np.ndarray
    sizes: dict[int, int]
    noise: str
    density_power: float
    radius: float | None = None
    max_count: int | None = None
    far_distance: float = float("inf")

    def place(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, counts, far)`` of new projected ``points``.

        The label is the nearest reference point's (``-1`` with ``noise="singleton"``
        when that point is noise); ``counts`` the reference points within the
        crowding radius (zeros without crowding); ``far`` marks points farther
        from every reference point than :attr:`far_distance`.
        """
        from sklearn.neighbors import NearestNeighbors

        x = np.asarray(points, dtype=np.float64)
        index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(self.reference)
        distance, nearest = index.kneighbors(x)
        labels = (
            self.reference_labels[nearest[:, 0]]
            if len(self.reference_labels)
            else np.empty(0, np.int64)
        )
        counts = np.zeros(len(x), np.int64)
        if self.radius is not None:
            from dequity.density import _counts

            counts = _counts(x, self.reference, self.radius, None)
        return labels, counts, distance[:, 0] > self.far_distance

    def shares(self, labels: np.ndarray) -> np.ndarray:
        """Cluster share ``|C| / max |C|`` of each label (1 without clusters)."""
        if not len(labels):
            return np.ones(0)
        largest = max(self.sizes.values())
        sizes = np.array([self.sizes.get(int(v), 1) for v in labels], dtype=np.float64)
        if self.noise == NOISE_SINGLETON:
            sizes[np.asarray(labels) < 0] = 1
        return sizes / largest

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (arrays as base64 float32), stored with the run's results."""
        return {
            "mean": _encode(self.projection.mean),
            "components": _encode(self.projection.components),
            "reference": _encode(self.reference),
            "reference_labels": self.reference_labels.astype(int).tolist(),
            "sizes": {str(k): int(v) for k, v in self.sizes.items()},
            "noise": self.noise,
            "density_power": float(self.density_power),
            "radius": self.radius,
            "max_count": self.max_count,
            "far_distance": float(self.far_distance),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LikelihoodFit:
        """The fit stored by :meth:`to_dict`."""
        return cls(
            projection=LinearProjection(_decode(d["mean"]), _decode(d["components"])),
            reference=_decode(d["reference"]).astype(np.float64),
            reference_labels=np.asarray(d["reference_labels"], dtype=np.int64),
            sizes={int(k): int(v) for k, v in d["sizes"].items()},
            noise=d["noise"],
            density_power=float(d["density_power"]),
            radius=d["radius"],
            max_count=d["max_count"],
            far_distance=float(d["far_distance"]),
        )


def check_updatable(projection: str | None) -> None:
    """Raise :class:`DequityError` when a run's method cannot place new samples."""
    if projection not in ("pca", None):
        raise DequityError(
            f"a run projected with {projection!r} cannot place new samples: t-SNE has no "
            "transform for new points; recompute with compute_dequity(..., overwrite=True), "
            "or use projection='pca' for runs that grow"
        )


def _encode(array: np.ndarray | None) -> dict | None:
    if array is None:
        return None
    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])
