"""The one seeded subsample that a run's clustering, crowding and fit share.

Above :data:`FIT_SAMPLES` points, HDBSCAN is fitted on a subsample, k-NN
crowding counts neighbours in it, and the run's fit keeps it as the reference
that places new samples. All three must be the same rows, so they come from
here.
"""

from __future__ import annotations

import numpy as np

#: the seed of every subsample a run draws
SEED = 51
#: points above which a run fits on a subsample of this many
FIT_SAMPLES = 5_000


def subsample_rows(n: int, size: int | None) -> np.ndarray:
    """The sorted rows of the seeded subsample of ``size`` of ``n`` points (all if fewer).

    Example::

        >>> subsample_rows(5, None).tolist()
        [0, 1, 2, 3, 4]
        >>> len(subsample_rows(10_000, 5_000))
        5000
        >>> subsample_rows(9, 3).tolist() == subsample_rows(9, 3).tolist()
        True
    """
    if size is None or n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, size, replace=False))
