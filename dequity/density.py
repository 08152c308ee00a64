"""k-nearest-neighbour likelihood: neighbourhood counts in place of clusters."""

from __future__ import annotations

import numpy as np

from dequity.errors import DequityError
from dequity.validation import Integer

#: rows per radius query: bounds the memory of the neighbour lists
_ROWS = 4_096


def knn_likelihood(points: np.ndarray, k: int = 30, fit_samples: int | None = None) -> np.ndarray:
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
    from sklearn.metrics.pairwise import euclidean_distances
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
    reference = x
    if fit_samples is not None and n > fit_samples:
        rng = np.random.default_rng(51)
        reference = x[np.sort(rng.choice(n, fit_samples, replace=False))]
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(reference)
    # query the fitted points themselves: column 0 is each point (or a duplicate)
    radius = float(np.median(index.kneighbors(reference)[0][:, k]))
    counts = np.concatenate(
        [
            (
                euclidean_distances(x[start : start + _ROWS], reference, squared=True) <= radius**2
            ).sum(axis=1)
            for start in range(0, n, _ROWS)
        ]
    )
    return counts / counts.max()
