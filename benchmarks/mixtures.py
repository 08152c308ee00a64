"""Gaussian mixtures with known power-law component sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixtureSpec:
    """Parameters of a Gaussian mixture with power-law component sizes.

    ``centre_std``: std of the component centres; ``spread``: range of the
    per-dimension std of each component; ``alpha``: size of the component of
    rank ``r`` is proportional to ``r ** -alpha``.
    """

    n: int = 10_000
    dim: int = 512
    components: int = 30
    centre_std: float = 0.6
    spread: tuple[float, float] = (0.3, 1.5)
    alpha: float = 1.0
    seed: int = 0

    def label(self) -> str:
        lo, hi = self.spread
        return f"d={self.dim}, K={self.components}, spread {lo}-{hi}"


#: GUIDE's harder case: overlapping components, close to real embeddings.
HARD = MixtureSpec()


def component_sizes(n: int, components: int, alpha: float) -> np.ndarray:
    """Power-law sizes summing to ``n``, each at least 1 (largest first).

    Example::

        >>> component_sizes(100, 3, 1.0).tolist()
        [55, 27, 18]
    """
    share = np.arange(1, components + 1, dtype=float) ** -alpha
    sizes = np.maximum(1, np.floor(n * share / share.sum())).astype(np.int64)
    sizes[0] += n - sizes.sum()
    return sizes


def make_mixture(spec: MixtureSpec, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``(x, component)``: float32 points and each point's component.

    Generated in chunks so that 1M x 512 needs little more than the 2 GB of
    the result. Samples are shuffled.
    """
    rng = np.random.default_rng(spec.seed)
    k, d = spec.components, spec.dim
    centres = rng.normal(0.0, spec.centre_std, size=(k, d)).astype(np.float32)
    stds = rng.uniform(*spec.spread, size=(k, d)).astype(np.float32)
    sizes = component_sizes(spec.n, k, spec.alpha)
    comp = rng.permutation(np.repeat(np.arange(k), sizes))
    x = np.empty((spec.n, d), dtype=np.float32)
    for start in range(0, spec.n, chunk):
        c = comp[start : start + chunk]
        noise = rng.standard_normal(size=(len(c), d), dtype=np.float32)
        x[start : start + chunk] = centres[c] + noise * stds[c]
    return x, comp


def true_frequency(comp: np.ndarray) -> np.ndarray:
    """Each sample's component size over the largest component size."""
    counts = np.bincount(comp)
    return counts[comp] / counts.max()
