"""Continuous k-nearest-neighbour likelihood: a density score without clusters."""

from __future__ import annotations

import numpy as np

from dequity.errors import DequityError


def knn_likelihood(points: np.ndarray, k: int = 10) -> np.ndarray:
    """Likelihood of each sample from its distance to its ``k``-th neighbour.

    ``p_i = r_min / r_i`` where ``r_i`` is the distance from sample ``i`` to
    its ``k``-th nearest other sample and ``r_min`` the smallest such
    distance: the densest sample gets 1, sparser samples less, all in
    ``(0, 1]``. ``1 / r_k`` is a monotone function of the k-NN density
    estimate ``k / (n * V_d * r_k ** d)``, so rankings agree with it, while
    the values stay usable as likelihoods in high dimension (``r ** d``
    would underflow). Duplicate points (``r_i = 0``) get 1, like the densest
    distinct sample.

    Local density is not frequency: a tight rare group is denser than a
    spread-out common one, so this score can rank them the wrong way round;
    cluster-size likelihoods (:func:`dequity.scaled_likelihood`) measure
    frequency.

    Args:
        points: ``(n, d)`` array, usually projected embeddings (e.g. PCA-50).
        k: neighbours counted, ``1 <= k < n``.

    Returns:
        float64 array of shape ``(n,)`` with values in ``(0, 1]``.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> pts = np.concatenate([rng.normal(0, 0.1, (50, 2)),
        ...                       rng.normal(5, 1.0, (50, 2))])
        >>> p = knn_likelihood(pts, k=5)
        >>> float(p.max()), bool(p[:50].mean() > p[50:].mean())
        (1.0, True)
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise DequityError(f"points must have shape (num_samples, dim), got {x.shape}")
    if not np.isfinite(x).all():
        raise DequityError("points contain NaN or inf; recompute or drop those samples")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DequityError(f"k must be an integer >= 1, got {k!r}")
    n = x.shape[0]
    if n <= k:
        raise DequityError(f"{n} samples are too few for k={k}; need more than k samples")
    # query the fitted points themselves: column 0 is each point (or a duplicate)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    r = dist[:, k]
    positive = r[r > 0]
    if positive.size == 0:
        return np.ones(n)
    r = np.maximum(r, positive.min())
    return positive.min() / r
