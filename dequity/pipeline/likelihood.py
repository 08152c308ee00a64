"""Scaled cluster likelihood (eq. 3 of the DatasetEquity paper)."""

from __future__ import annotations

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.groups import distinct_groups_per_label

#: Each noise point is its own cluster of size 1: noise points are the
#: rarest samples, so they get the lowest likelihood and the highest weight.
NOISE_SINGLETON = "singleton"
#: The authors' code: all noise points (label -1) form one more cluster.
NOISE_CLUSTER = "cluster"
#: Each noise point joins the cluster of its nearest clustered sample in the
#: projected space (:func:`dequity.pipeline.clustering.assign_noise`), so every sample
#: counts in a cluster; the labels must be assigned before the likelihood.
NOISE_NEAREST = "nearest"
NOISE_POLICIES = (NOISE_SINGLETON, NOISE_CLUSTER, NOISE_NEAREST)


def validate_noise_policy(noise: str) -> None:
    """Raise :class:`DequityError` unless ``noise`` is a known policy."""
    if noise not in NOISE_POLICIES:
        raise DequityError(f"noise must be one of {NOISE_POLICIES}, got {noise!r}")


def cluster_sizes(
    labels: np.ndarray, noise: str = NOISE_SINGLETON, groups: np.ndarray | None = None
) -> np.ndarray:
    """Size of the cluster each sample belongs to, under a noise policy.

    With ``groups`` (one group id per sample, e.g. a scene), a cluster's size
    is the number of distinct groups among its members
    (:mod:`dequity.pipeline.groups`): forty frames of one scene count once.

    Example::

        >>> cluster_sizes(np.array([0, 0, 1, -1]))
        array([2, 2, 1, 1])
        >>> cluster_sizes(np.array([0, 0, 1, -1, -1, -1]), noise="cluster")
        array([2, 2, 1, 3, 3, 3])
        >>> cluster_sizes(np.array([0, 0, 0, 1]), groups=np.array([7, 7, 8, 9]))
        array([2, 2, 2, 1])
    """
    validate_noise_policy(noise)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DequityError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        raise DequityError("labels is empty: there are no samples to score")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DequityError(f"labels must be integers, got dtype {labels.dtype}")
    if noise == NOISE_NEAREST and (labels < 0).any():
        raise DequityError(
            "noise='nearest' needs labels without noise; assign noise points first "
            "with dequity.pipeline.clustering.assign_noise(points, labels)"
        )
    if groups is None:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        sizes = counts[inverse]
    else:
        sizes = distinct_groups_per_label(labels, groups)
    if noise == NOISE_SINGLETON:
        sizes = np.where(labels < 0, 1, sizes)
    return sizes


def scaled_likelihood(
    labels: np.ndarray, noise: str = NOISE_SINGLETON, groups: np.ndarray | None = None
) -> np.ndarray:
    """The paper's eq. 3: ``|C_i| / max_i |C_i|`` for every sample.

    ``labels`` are cluster ids as returned by DBSCAN/HDBSCAN, ``-1`` meaning
    noise. With ``noise="singleton"`` (the default) every noise point counts
    as a cluster of its own: it is unlike any other sample, hence as rare as
    a sample can be. ``noise="cluster"`` reproduces the authors' code, which
    counts all noise points as one more cluster; when noise is large this
    gives the rarest samples the *highest* likelihood and the lowest weight.
    ``groups`` counts distinct groups instead of samples (:func:`cluster_sizes`).

    Example::

        >>> scaled_likelihood(np.array([0, 0, 0, 0, 1, 1, -1]))
        array([1.  , 1.  , 1.  , 1.  , 0.5 , 0.5 , 0.25])
        >>> scaled_likelihood(np.array([0, 0, -1, -1, -1, -1]), noise="cluster")
        array([0.5, 0.5, 1. , 1. , 1. , 1. ])
    """
    sizes = cluster_sizes(labels, noise=noise, groups=groups)
    return sizes / sizes.max()
