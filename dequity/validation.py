"""Checks at the door: numbers, names and estimator parameters, before any work.

Projection and clustering parameters are checked by building the
scikit-learn estimator that takes them and letting it validate them
(``_validate_params``), so a bad value fails before any image is embedded,
with scikit-learn's own description of what is accepted.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from dequity.errors import DequityError

# parameters that are flags, not numbers
_FLAGS = {"whiten", "allow_single_cluster"}
# our own parameters, checked by the modules that use them
_OURS = {"backend", "fit_samples", "pca_components"}


def check_number(
    name: str, value: Any, *, minimum: float | None = None, integer: bool = False
) -> None:
    """Raise :class:`DequityError` unless ``value`` is a real (or integer) number >= ``minimum``.

    Rejects bool, str, None, complex and arrays, which numpy would otherwise
    accept or turn into confusing errors later.

    Example::

        >>> check_number("batch_size", 32, minimum=1, integer=True)
        >>> check_number("eta", True)
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: eta must be a number, got True (bool)
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise DequityError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if not np.isfinite(float(value)) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise DequityError(f"{name} must be a finite number{bound}, got {value!r}")


def check_field_name(name: str, value: Any) -> None:
    """Raise unless ``value`` can name a top-level FiftyOne field.

    Example::

        >>> check_field_name("embeddings_field", "a.b")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: embeddings_field must be a Python identifier ...
    """
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise DequityError(
            f"{name} must be a Python identifier not starting with '_' (a top-level "
            f"field name), got {value!r}"
        )


def check_estimators(
    projection: str | None, projection_params: dict, clustering: str, clustering_params: dict
) -> None:
    """Let the estimators behind ``projection`` and ``clustering`` check their parameters.

    Example::

        >>> check_estimators("pca", {"n_components": -1}, "hdbscan", {})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: projection_kwargs for 'pca': The 'n_components' ...
    """
    from sklearn.cluster import DBSCAN, HDBSCAN
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from dequity.clustering import DENSITY_KEYS

    estimators = {
        "pca": PCA,
        "tsne": TSNE,
        "hdbscan": HDBSCAN,
        "hdbscan_knn": HDBSCAN,  # and a k-NN crowding: DENSITY_KEYS
        "dbscan": DBSCAN,
    }
    for what, method, params in (
        ("projection_kwargs", projection, projection_params),
        ("clustering_kwargs", clustering, clustering_params),
    ):
        for key, value in params.items():
            if key not in _FLAGS and isinstance(value, (bool, np.bool_)):
                raise DequityError(f"{what} for {method!r}: {key} must not be a bool, got {value}")
        for key in ("n_components", "pca_components", "perplexity", "n_iter"):
            if method == "opentsne" and key in params:
                check_number(f"{what} {key}", params[key], minimum=1, integer=key != "perplexity")
        if method not in estimators:
            continue
        ours = _OURS | (set(DENSITY_KEYS) if method == "hdbscan_knn" else set())
        passed = {k: v for k, v in params.items() if k not in ours}
        try:
            estimators[method](**passed)._validate_params()
        except (TypeError, ValueError) as e:
            raise DequityError(f"{what} for {method!r}: {e}") from None
