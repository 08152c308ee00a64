"""Projection of embeddings to a low-dimensional space before clustering."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.fit import LinearProjection
from dequity.pipeline.params import Integer, Param, Real, resolve_params
from dequity.pipeline.subsample import SEED

logger = logging.getLogger(__name__)
_CHUNK_ROWS = 65_536
#: rows above which PCA is fitted on a seeded draw of this many (see :func:`pca_rows`)
PCA_FIT_SAMPLES = 100_000

#: Principal components (default): fast, linear, keeps cluster sizes intact.
PCA = "pca"
#: The paper: scikit-learn t-SNE to 3-D, PCA init, perplexity 30.
TSNE = "tsne"
#: openTSNE (FFT-accelerated) after PCA to 50-D; scales to 100k+ points.
OPENTSNE = "opentsne"
PROJECTIONS = (PCA, TSNE, OPENTSNE, None)
#: how the command line and the App name ``projection=None``: the embeddings
#: are clustered as they are
NO_PROJECTION = "none"
#: ``backend`` (a key of projection/clustering kwargs): scikit-learn & co.
#: (default), RAPIDS cuML on the GPU, or cuML when importable with a GPU.
BACKENDS = ("sklearn", "cuml", "auto")


def _check_backend(name: str, value: Any) -> None:
    validate_backend(value)


#: ``backend``: where the projection runs, :data:`BACKENDS`
BACKEND = Param(check=_check_backend, estimator=False)
_SEED = Param(SEED)
#: the parameters of each projection, with dequity's defaults
PARAMETERS: dict[str | None, dict[str, Param]] = {
    PCA: {
        "n_components": Param(50, check=Integer(1)),
        "random_state": _SEED,
        "whiten": Param(flag=True),
        "backend": BACKEND,
    },
    TSNE: {
        "n_components": Param(3, check=Integer(1)),
        "init": Param("pca"),
        "perplexity": Param(30.0),
        "random_state": _SEED,
        "early_exaggeration": Param(),
        "learning_rate": Param(),
        "max_iter": Param(),
        "metric": Param(),
        "backend": BACKEND,
    },
    OPENTSNE: {
        "n_components": Param(2, check=Integer(1)),
        "perplexity": Param(30.0, check=Real(1)),
        "pca_components": Param(50, check=Integer(1), estimator=False),
        "random_state": _SEED,
        "metric": Param(),
        "n_jobs": Param(),
        "early_exaggeration": Param(),
        "n_iter": Param(check=Integer(1)),
        "backend": BACKEND,
    },
    None: {"backend": BACKEND},
}


def validate_projection(method: str | None) -> None:
    """Raise :class:`DequityError` unless ``method`` is a known projection."""
    if method not in PROJECTIONS:
        raise DequityError(f"projection must be one of {PROJECTIONS}, got {method!r}")


def projection_params(method: str | None, kwargs: dict | None = None) -> dict:
    """The full parameters of a projection: defaults updated by ``kwargs``.

    Example::

        >>> projection_params("tsne", {"perplexity": 50})["n_components"]
        3
    """
    validate_projection(method)
    params = resolve_params(PARAMETERS[method], kwargs, "projection_kwargs", method)
    if "backend" in params:
        if params["backend"] == "cuml" and method == OPENTSNE:
            raise DequityError(
                "projection 'opentsne' has no cuML version; use projection='tsne' or "
                "'pca' with backend='cuml', or backend='sklearn'"
            )
        if params["backend"] == "cuml" and method == TSNE and params["n_components"] != 2:
            raise DequityError(
                f"cuML's t-SNE makes 2 components, not {params['n_components']}; pass "
                "n_components=2 or backend='sklearn'"
            )
    return params


def validate_backend(backend: str) -> None:
    """Raise :class:`DequityError` for an unknown backend, or ``"cuml"`` without cuML."""
    if backend not in BACKENDS:
        raise DequityError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuml" and not cuml_available():
        raise DequityError(
            "backend='cuml' needs RAPIDS cuML and an NVIDIA GPU: pip install cuml-cu12 "
            "(see https://docs.rapids.ai/install), or use backend='auto' to fall "
            "back to the CPU"
        )


def cuml_available() -> bool:
    """Whether RAPIDS cuML imports and sees a GPU."""
    try:
        import cuml  # noqa: F401
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a CUDA error without a usable GPU
        return False


def use_cuml(backend: str, supported: bool = True) -> bool:
    """Whether to run on cuML: ``"cuml"``, or ``"auto"`` with cuML present.

    ``supported=False`` (parameters cuML lacks) sends ``"auto"`` to the CPU.

    Example::

        >>> use_cuml("sklearn")
        False
    """
    validate_backend(backend)
    if backend == "sklearn":
        return False
    if backend == "auto":
        return supported and cuml_available()
    return True


def project(
    embeddings: np.ndarray,
    method: str | None = PCA,
    **kwargs: Any,
) -> np.ndarray:
    """Project ``(n, d)`` embeddings to ``(n, k)`` points with ``method``.

    Component counts and the t-SNE perplexity are capped to what ``n``
    samples allow, so small datasets work with the defaults. ``backend`` (a
    key of ``kwargs``, see :data:`BACKENDS`) runs PCA and t-SNE on RAPIDS
    cuML: ``"cuml"`` requires it, ``"auto"`` uses it when installed with a GPU
    (and t-SNE has 2 components) and the CPU otherwise.

    Example::

        >>> x = np.random.default_rng(0).normal(size=(200, 64))
        >>> project(x, "pca", n_components=10).shape
        (200, 10)
    """
    return fit_projection(embeddings, method, **kwargs)[0]


def fit_projection(
    embeddings: np.ndarray, method: str | None = PCA, **kwargs: Any
) -> tuple[np.ndarray, LinearProjection | None]:
    """:func:`project`, with the linear map that projects new embeddings the same way.

    The map is None for t-SNE, which has no transform for new points.

    Example::

        >>> x = np.random.default_rng(0).normal(size=(200, 64))
        >>> points, transform = fit_projection(x, "pca", n_components=10)
        >>> bool(np.allclose(transform(x[:5]), points[:5], atol=1e-4))
        True
    """
    return project_with(embeddings, method, projection_params(method, kwargs))


def project_with(
    embeddings: np.ndarray, method: str | None, params: Mapping[str, Any]
) -> tuple[np.ndarray, LinearProjection | None]:
    """:func:`fit_projection` with parameters already resolved by :func:`projection_params`.

    Example::

        >>> x = np.random.default_rng(0).normal(size=(50, 8))
        >>> project_with(x, "pca", projection_params("pca", {"n_components": 2}))[0].shape
        (50, 2)
    """
    params = dict(params)
    backend = params.pop("backend", "sklearn")
    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if method is None:
        return x, LinearProjection()
    if method == PCA:
        return _pca(x, params.pop("n_components"), gpu=use_cuml(backend), **params)
    if method == TSNE:
        params["perplexity"] = _cap_perplexity(params["perplexity"], n)
        if use_cuml(backend, supported=params["n_components"] == 2):
            return _cuml_tsne(x, params), None
        from sklearn.manifold import TSNE as SklearnTSNE

        return SklearnTSNE(**params).fit_transform(x).astype(np.float32), None
    return _opentsne(x, **params), None


def _cuml_tsne(x: np.ndarray, params: dict) -> np.ndarray:
    """cuML's t-SNE (Barnes-Hut/FFT on the GPU); it chooses its own init and iterations."""
    from cuml.manifold import TSNE as CumlTSNE

    keep = {"n_components", "perplexity", "random_state", "early_exaggeration", "learning_rate"}
    tsne = CumlTSNE(**{k: v for k, v in params.items() if k in keep}, output_type="numpy")
    return np.asarray(tsne.fit_transform(x), dtype=np.float32)


def _pca(
    x: np.ndarray,
    n_components: int,
    fit_samples: int = PCA_FIT_SAMPLES,
    gpu: bool = False,
    **params: Any,
) -> tuple[np.ndarray, LinearProjection]:
    """PCA fitted on at most ``fit_samples`` rows, applied chunk by chunk; and its map.

    The principal axes of 100k random rows match those of all rows closely,
    and neither step copies the full matrix (it may be a memory-mapped file).
    ``gpu=True`` fits and applies cuML's PCA instead of scikit-learn's.
    """
    if min(int(n_components), x.shape[0]) >= x.shape[1]:
        return x, LinearProjection()
    rows = pca_rows(len(x), fit_samples, params.get("random_state"))
    pca = _fit_pca(x[rows], n_components, len(x), gpu, **params)
    out = np.empty((len(x), pca.n_components_), dtype=np.float32)
    for i in range(0, len(x), _CHUNK_ROWS):
        out[i : i + _CHUNK_ROWS] = pca.transform(x[i : i + _CHUNK_ROWS])
    return out, _linear_map(pca, params)


def pca_rows(n: int, fit_samples: int = PCA_FIT_SAMPLES, random_state: Any = None) -> np.ndarray:
    """The rows of ``n`` that ``projection="pca"`` fits on: a seeded draw of ``fit_samples``.

    Example::

        >>> pca_rows(5).tolist()
        [0, 1, 2, 3, 4]
        >>> len(pca_rows(200_000, random_state=51))
        100000
    """
    if n <= fit_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, fit_samples, False))


def fit_pca_on(rows: np.ndarray, n: int, params: Mapping[str, Any]) -> LinearProjection:
    """The map of ``projection="pca"`` fitted on ``rows``, the vectors at :func:`pca_rows`.

    Gives what :func:`project_with` gives for all ``n`` vectors, without needing them.

    Example::

        >>> x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
        >>> params = projection_params("pca", {"n_components": 2})
        >>> np.allclose(fit_pca_on(x, 60, params)(x), project_with(x, "pca", params)[0], atol=1e-4)
        True
    """
    params = dict(params)
    backend = params.pop("backend", "sklearn")
    n_components = params.pop("n_components")
    params.pop("fit_samples", None)
    if min(int(n_components), n) >= rows.shape[1]:
        return LinearProjection()
    pca = _fit_pca(np.asarray(rows, np.float32), n_components, n, use_cuml(backend), **params)
    return _linear_map(pca, params)


def _fit_pca(rows: np.ndarray, n_components: int, n: int, gpu: bool, **params: Any) -> Any:
    if gpu:
        from cuml.decomposition import PCA as PCAClass

        params["output_type"] = "numpy"
    else:
        from sklearn.decomposition import PCA as PCAClass

    k = min(int(n_components), n, rows.shape[1])
    return PCAClass(n_components=k, **params).fit(rows)


def _linear_map(pca: Any, params: Mapping[str, Any]) -> LinearProjection:
    axes = np.asarray(pca.components_, dtype=np.float32)
    if params.get("whiten"):
        axes = axes / np.sqrt(np.asarray(pca.explained_variance_, dtype=np.float32))[:, None]
    return LinearProjection(np.asarray(pca.mean_, dtype=np.float32), axes)


def _cap_perplexity(perplexity: float, n: int) -> float:
    cap = max(1.0, (n - 1) / 3.0)
    if perplexity > cap:
        logger.warning("perplexity %s is too large for %d samples; using %.1f", perplexity, n, cap)
        return cap
    return perplexity


def _opentsne(x: np.ndarray, pca_components: int, random_state: int, **params: Any) -> np.ndarray:
    from openTSNE import TSNE as OpenTSNE

    x = _pca(x, pca_components, random_state=random_state)[0]
    params["perplexity"] = _cap_perplexity(params["perplexity"], x.shape[0])
    params.setdefault("n_jobs", -1)
    tsne = OpenTSNE(random_state=random_state, verbose=False, **params)
    return np.asarray(tsne.fit(x), dtype=np.float32)
