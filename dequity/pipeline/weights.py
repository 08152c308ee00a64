"""The Generalized Focal Loss weight (eq. 4 of the DatasetEquity paper)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.params import check_number

Likelihood = TypeVar("Likelihood")

#: The paper's default (KITTI, DD3D) parameters.
DEFAULT_ETA = 1.0
DEFAULT_GAMMA = 5.0


def validate_gfl_params(eta: float, gamma: float) -> None:
    """Raise :class:`DequityError` unless ``eta >= 0`` and ``gamma >= 0`` are real numbers."""
    check_number("eta", eta)
    check_number("gamma", gamma)
    if not np.isfinite(eta) or eta < 0:
        raise DequityError(
            f"eta must be a finite number >= 0, got {eta!r}; the paper uses "
            "values between 0.3 and 3.0 (eta=0 gives the focal-loss weight)"
        )
    if not np.isfinite(gamma) or gamma < 0:
        raise DequityError(
            f"gamma must be a finite number >= 0, got {gamma!r}; the paper uses 2.0 or 5.0"
        )


def _validate_likelihood(p) -> None:
    values = p.detach().cpu().numpy() if hasattr(p, "detach") else np.asarray(p)
    if values.size and not (
        np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1
    ):
        raise DequityError(
            "likelihoods must lie in [0, 1]; compute them with dequity.scaled_likelihood(labels)"
        )


def gfl_weight(p: Likelihood, eta: float = DEFAULT_ETA, gamma: float = DEFAULT_GAMMA) -> Likelihood:
    """Generalized Focal Loss weight ``(eta + (1 - p) ** gamma) / (eta + 1)``.

    Works on floats, numpy arrays and torch tensors (the result has the type
    of ``p``; tensors keep their device and autograd graph). Rare samples
    (``p`` near 0) get weights near 1; the most common (``p = 1``) get
    ``eta / (eta + 1)``.

    Example::

        >>> gfl_weight(0.5, eta=1.0, gamma=1.0)
        0.75
        >>> gfl_weight(np.array([0.0, 1.0]), eta=1.0, gamma=5.0)
        array([1. , 0.5])
    """
    validate_gfl_params(eta, gamma)
    _validate_likelihood(p)
    if isinstance(p, (int, float)):
        return float((eta + (1.0 - p) ** gamma) / (eta + 1.0))
    if not hasattr(p, "detach"):
        p = np.asarray(p, dtype=float)
    return (eta + (1 - p) ** gamma) / (eta + 1)
