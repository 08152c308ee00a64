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
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.density import count_within
from dequity.pipeline.likelihood import NOISE_SINGLETON

#: share of new samples farther from every reference point than the fit's
#: own 99th-percentile nearest-neighbour distance above which a refit is advised
FAR_SHARE_WARNING = 0.10
#: reference points whose majority label a new sample takes (a vote of 5
#: agrees with a refit more often than the nearest point alone)
PLACE_NEIGHBOURS = 5
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
    #: the reference holds every fitted sample, so each counted itself
    self_counted: bool = False

    def place(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, counts, far)`` of new projected ``points``.

        The label is the most common among the :data:`PLACE_NEIGHBOURS` nearest
        reference points' (ties: the nearest's; ``-1`` with ``noise="singleton"``
        when that is noise); ``counts`` the reference points within the
        crowding radius (zeros without crowding); ``far`` marks points farther
        from every reference point than :attr:`far_distance`.
        """
        from sklearn.neighbors import NearestNeighbors

        x = np.asarray(points, dtype=np.float64)
        k = min(PLACE_NEIGHBOURS, len(self.reference))
        index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.reference)
        distance, nearest = index.kneighbors(x)
        labels = (
            _majority(self.reference_labels[nearest])
            if len(self.reference_labels)
            else (np.empty(0, np.int64))
        )
        counts = np.zeros(len(x), np.int64)
        if self.radius is not None:
            counts = count_within(x, self.reference, self.radius, None)
        return labels, counts, distance[:, 0] > self.far_distance

    def shares(self, labels: np.ndarray) -> np.ndarray:
        """Cluster share ``|C| / max |C|`` of each label (1 without clusters)."""
        if not len(labels):
            return np.ones(0)
        largest = max(self.sizes.values())
        labels = np.asarray(labels, dtype=np.int64)
        known = np.array(sorted(self.sizes), dtype=np.int64)
        at = np.clip(np.searchsorted(known, labels), 0, len(known) - 1)
        found = known[at] == labels
        sizes = np.where(found, np.array([self.sizes[k] for k in known], np.float64)[at], 1.0)
        if self.noise == NOISE_SINGLETON:
            sizes[np.asarray(labels) < 0] = 1
        return sizes / largest

    def extend(
        self, old_labels: np.ndarray, old_likelihoods: np.ndarray, new_points: np.ndarray
    ) -> Extension:
        """Place ``new_points`` and rescale the old samples' likelihoods; updates the fit.

        Old samples keep their labels; each old likelihood is multiplied by its
        cluster's change of share and by the change of the crowding scale (see
        the module doc). The fit's cluster sizes and count scale are updated in
        place.

        Example::

            ext = fit.extend(np.array(res.labels), np.array(res.likelihoods), new_points)
            ext.new_likelihoods, ext.old_likelihoods, ext.far_share
        """
        old_labels = np.asarray(old_labels, dtype=np.int64)
        labels, counts, far = self.place(new_points)
        old_share = self.shares(old_labels)
        old_max = self.max_count
        for label, added in Counter(labels.tolist()).items():
            if label >= 0 or self.noise != NOISE_SINGLETON:
                self.sizes[label] = self.sizes.get(label, 0) + added
        factor = self.shares(old_labels) / old_share if len(old_labels) else 1.0
        new = self.shares(labels) if len(labels) else np.ones(len(counts))
        if self.radius is not None:
            counts = counts + int(self.self_counted)
            self.max_count = max(self.max_count, int(counts.max(initial=0)))
            factor = factor * (old_max / self.max_count) ** self.density_power
            new = new * (counts / self.max_count) ** self.density_power
        old = np.asarray(old_likelihoods, dtype=np.float64)
        return Extension(
            labels=labels,
            new_likelihoods=new,
            old_likelihoods=old * factor,
            old_factors=np.broadcast_to(np.asarray(factor, np.float64), old.shape).copy(),
            far_share=float(far.mean()) if len(far) else 0.0,
            shift=_shift(old_labels, labels),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (arrays as base64 float32), stored with the run's results."""
        return {
            "mean": encode(self.projection.mean),
            "components": encode(self.projection.components),
            "reference": encode(self.reference),
            "reference_labels": self.reference_labels.astype(int).tolist(),
            "sizes": {str(k): int(v) for k, v in self.sizes.items()},
            "noise": self.noise,
            "density_power": float(self.density_power),
            "radius": self.radius,
            "max_count": self.max_count,
            "far_distance": float(self.far_distance),
            "self_counted": self.self_counted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LikelihoodFit:
        """The fit stored by :meth:`to_dict`."""
        return cls(
            projection=LinearProjection(decode(d["mean"]), decode(d["components"])),
            reference=decode(d["reference"]).astype(np.float64),
            reference_labels=np.asarray(d["reference_labels"], dtype=np.int64),
            sizes={int(k): int(v) for k, v in d["sizes"].items()},
            noise=d["noise"],
            density_power=float(d["density_power"]),
            radius=d["radius"],
            max_count=d["max_count"],
            far_distance=float(d["far_distance"]),
            self_counted=bool(d["self_counted"]),
        )


def _majority(labels: np.ndarray) -> np.ndarray:
    """Per row, the most common label; ties go to the label met first (the nearer)."""
    out = np.empty(len(labels), dtype=np.int64)
    for i, row in enumerate(labels):
        values, first, counts = np.unique(row, return_index=True, return_counts=True)
        best = counts == counts.max()
        out[i] = values[best][np.argmin(first[best])]
    return out


@dataclass(frozen=True)
class Extension:
    """What :meth:`LikelihoodFit.extend` computed for new and old samples."""

    labels: np.ndarray
    new_likelihoods: np.ndarray
    old_likelihoods: np.ndarray
    #: what each old likelihood was multiplied by (one value per cluster)
    old_factors: np.ndarray
    #: share of new samples farther from every reference point than the fit's usual spacing
    far_share: float
    #: total-variation distance between new and old cluster proportions (0 without clusters)
    shift: float

    def drift_warnings(self) -> list[str]:
        """Plain reasons to refit, when the new samples drift from the fit."""
        out = []
        if self.far_share > FAR_SHARE_WARNING:
            out.append(
                f"{self.far_share:.0%} of the new samples lie far from every fitted sample "
                f"(more than {FAR_SHARE_WARNING:.0%})"
            )
        if self.shift > SHIFT_WARNING:
            out.append(
                f"the new samples' cluster proportions differ from the fit's by "
                f"{self.shift:.2f} (total variation, more than {SHIFT_WARNING})"
            )
        return out


def _shift(old: np.ndarray, new: np.ndarray) -> float:
    """Total-variation distance between the label proportions of ``old`` and ``new``."""
    if not len(old) or not len(new):
        return 0.0
    labels = np.union1d(old, new)
    p = np.array([np.mean(old == v) for v in labels])
    q = np.array([np.mean(new == v) for v in labels])
    return float(0.5 * np.abs(p - q).sum())


def check_updatable(projection: str | None) -> None:
    """Raise :class:`DequityError` when a run's method cannot place new samples."""
    if projection not in ("pca", None):
        raise DequityError(
            f"a run projected with {projection!r} cannot place new samples: t-SNE has no "
            "transform for new points; recompute with compute_dequity(..., overwrite=True), "
            "or use projection='pca' for runs that grow"
        )


def encode(array: np.ndarray | None) -> dict | None:
    """A JSON-safe dict of ``array`` as base64 float32 (None stays None).

    Example::

        >>> decode(encode(np.arange(3.0))).tolist()
        [0.0, 1.0, 2.0]
    """
    if array is None:
        return None
    a = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode(d: dict | None) -> np.ndarray | None:
    """The float32 array that :func:`encode` stored."""
    if d is None:
        return None
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"])
