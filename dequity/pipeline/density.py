"""k-nearest-neighbour likelihood: neighbourhood counts in place of clusters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.params import Integer
from dequity.pipeline.subsample import subsample_rows

#: rows per chunk of the crowding scan: its products (256 x 5,000 float32) stay in the cache
_ROWS = 256


def knn_likelihood(
    points: np.ndarray,
    k: int = 30,
    fit_samples: int | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Likelihood of each sample from how many samples lie near it.

    ``p_i = n_i / max_j n_j``, where ``n_i`` counts the samples (itself
    included) within radius ``R`` of sample ``i`` and ``R`` is the median,
    over all samples, of the distance to the ``k``-th nearest other sample.
    This is the paper's eq. 3 with each sample's ``R``-neighbourhood as its
    cluster: a relative frequency of samples like it, measured at the scale
    where a typical sample has ``k`` neighbours. The most crowded sample gets
    1, an isolated one ``1 / max_j n_j``.

    Crowding is not group size: a tight rare group can be more crowded than
    a spread-out common one, so this score can rank them the wrong way round;
    cluster-size likelihoods (:func:`dequity.scaled_likelihood`) measure the
    size of well-separated groups.

    Args:
        points: ``(n, d)`` array, usually projected embeddings (e.g. PCA-50).
        k: neighbours of a typical sample, ``1 <= k < n``.
        fit_samples: above this many points, neighbours are counted among a
            random reference subsample of this size (as HDBSCAN is fitted on
            one), so the cost grows linearly with ``n``; the scale is then
            the one where a typical sample has ``k`` reference neighbours.
        groups: one group id per sample (e.g. a scene): ``n_i`` then counts the
            distinct groups within ``R`` rather than samples, so the frames of
            one scene crowd each other no more than a single frame would.

    Returns:
        float64 array of shape ``(n,)`` with values in ``(0, 1]``.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> pts = np.concatenate([rng.normal(0, 1, (80, 2)),
        ...                       rng.normal(9, 1, (20, 2))])
        >>> p = knn_likelihood(pts, k=5)
        >>> float(p.max()), bool(p[:80].mean() > 2 * p[80:].mean())
        (1.0, True)
    """
    return crowding(points, k, fit_samples, groups).likelihood()


@dataclass(frozen=True)
class Crowding:
    """Neighbour counts of every sample, and the reference they were counted in.

    ``counts[i]`` is the number of ``reference`` points (or of their distinct
    groups) within ``radius`` of sample ``i``; ``reference_rows`` are the
    reference points' rows in the samples. New samples are counted the same
    way by :meth:`dequity.pipeline.fit.LikelihoodFit.place`, without refitting.
    """

    counts: np.ndarray
    reference_rows: np.ndarray
    radius: float
    #: per sample, the row of its nearest reference point (when asked for)
    nearest_rows: np.ndarray | None = None

    def likelihood(self) -> np.ndarray:
        """``counts / max(counts)``: the crowding likelihood."""
        return self.counts / self.counts.max()


def crowding(
    points: np.ndarray,
    k: int = 30,
    fit_samples: int | None = None,
    groups: np.ndarray | None = None,
    nearest: bool = False,
) -> Crowding:
    """The neighbour counts behind :func:`knn_likelihood` (same arguments).

    With ``nearest=True`` the same pass also finds each sample's nearest
    reference point (``Crowding.nearest_rows``), which subsampled clustering
    needs too: at 1M samples that pass is the stage's largest cost.

    Example::

        >>> c = crowding(np.random.default_rng(0).normal(size=(100, 2)), k=5)
        >>> int(c.counts.min()) >= 1, len(c.reference_rows)
        (True, 100)
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DequityError(f"points must have shape (num_samples, dim), got {x.shape}")
    if not np.isfinite(x).all():
        raise DequityError("points contain NaN or inf; recompute or drop those samples")
    Integer(1)("k", k)
    n = x.shape[0]
    if n <= k:
        raise DequityError(f"{n} samples are too few for k={k}; need more than k samples")
    if fit_samples is not None and (isinstance(fit_samples, bool) or fit_samples <= k):
        raise DequityError(f"fit_samples must be None or an integer > k={k}, got {fit_samples!r}")
    if groups is not None and len(groups) != n:
        raise DequityError(f"{len(groups)} group ids for {n} samples; give one per sample")
    rows = subsample_rows(n, fit_samples)
    reference = x[rows]
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(reference)
    # query the fitted points themselves: column 0 is each point (or a duplicate)
    radius = float(np.median(index.kneighbors(reference)[0][:, k]))
    membership = None if groups is None else _one_hot(np.asarray(groups)[rows])
    if not nearest:
        return Crowding(count_within(x, reference, radius, membership), rows, radius)
    counts, closest = count_and_nearest(x, reference, radius, membership)
    return Crowding(counts, rows, radius, rows[closest])


def count_within(
    x: np.ndarray, reference: np.ndarray, radius: float, membership: Any
) -> np.ndarray:
    """Per row of ``x``: reference points within ``radius``, or their distinct groups.

    One float32 matrix product per chunk of rows: ``|a - b|^2 <= r^2`` is tested as
    ``a.b - |b|^2 / 2 >= (|a|^2 - r^2) / 2`` on points centred at the reference's
    mean. Measured at 200k x 5,000 x 50 on 2 cores, this takes 3.6 s where
    scikit-learn's ``euclidean_distances`` (float64) takes 8.2 s; at 1M samples it
    was most of the default's time. Kept over ``pairwise_distances_chunked``: at
    100k x 5,000 x 50 (2 busy cores) it took 6.8 s and 1.15 GiB peak (9.4 s at 181 MiB with
    ``working_memory=160``) vs 3.3 s and 159 MiB here; float32 moves 20 in 100k counts by
    one for points within rounding of the radius. Chunks of 256 rows and the
    product with ``|b|^2 / 2`` folded in took 3.1 s where chunks of 4,096 took
    4.8 s (200k x 5,000 x 50, counts and nearest points, 2 cores).

    Example::

        >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
        >>> count_within(np.array([[0.2, 0.0], [5.0, 4.0]]), ref, 1.5, None).tolist()
        [2, 1]
    """
    return _scan(x, reference, radius, membership, nearest=False)[0]


def count_and_nearest(
    x: np.ndarray, reference: np.ndarray, radius: float, membership: Any
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`count_within`, and the index of each row's nearest reference point.

    Both come from the same matrix product: the nearest point is the one
    with the largest ``a.b - |b|^2 / 2``.

    Example::

        >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
        >>> counts, nearest = count_and_nearest(np.array([[0.8, 0.0], [5.0, 4.0]]), ref, 1.5, None)
        >>> counts.tolist(), nearest.tolist()
        ([2, 1], [1, 2])
    """
    counts, nearest = _scan(x, reference, radius, membership, nearest=True)
    return counts, nearest


def _scan(
    x: np.ndarray, reference: np.ndarray, radius: float, membership: Any, nearest: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    reference = np.asarray(reference, np.float64)
    centre = reference.mean(axis=0)
    ref = (reference - centre).astype(np.float32)
    half_norms = np.einsum("ij,ij->i", ref, ref) / 2
    # one more column makes the product itself a.b - |b|^2 / 2: no pass to subtract it
    weights = np.ascontiguousarray(np.concatenate([ref, half_norms[:, None]], axis=1).T)
    parts, closest = [], []
    for start in range(0, len(x), _ROWS):
        rows = np.asarray(x[start : start + _ROWS], np.float64)
        chunk = np.empty((len(rows), ref.shape[1] + 1), np.float32)
        chunk[:, :-1] = rows - centre
        chunk[:, -1] = -1.0
        dots = chunk @ weights
        bound = (np.einsum("ij,ij->i", chunk[:, :-1], chunk[:, :-1]) - np.float32(radius) ** 2) / 2
        parts.append(_count(dots >= bound[:, None], membership))
        if nearest:
            closest.append(dots.argmax(axis=1))
    counts = np.concatenate(parts).astype(np.int64)
    return counts, np.concatenate(closest) if nearest else None


def _one_hot(groups: np.ndarray) -> Any:
    """Sparse ``(m, G)`` matrix: row ``i`` marks the group of reference point ``i``."""
    from scipy import sparse

    _, codes = np.unique(groups, return_inverse=True)
    ones = np.ones(len(codes), dtype=np.float32)
    return sparse.csr_matrix((ones, (np.arange(len(codes)), codes)))


def _count(near: np.ndarray, membership: Any) -> np.ndarray:
    """Per row of ``near``: reference points within the radius, or their distinct groups."""
    if membership is None:
        return near.sum(axis=1)
    from scipy import sparse

    return np.asarray(((sparse.csr_matrix(near, dtype=np.float32) @ membership) > 0).sum(1)).ravel()
