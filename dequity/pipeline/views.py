"""Rare in any view: a sample is common only if both what it shows and how it looks are.

The default model's vector (:class:`dequity.sources.models.StagePooled`) is made of
unit-length blocks: the pooled stem and early stages, which describe how an
image looks (contrast, polarity, blur, noise), then the final features, which
describe what it shows. The run's likelihood on the whole vector finds rare
conditions; on long-tailed kinds the early blocks drown the final one. With
``views="auto"`` a run whose vectors have that layout also scores the final
block alone (its *content view*: k-NN crowding on PCA-20, see
:data:`CONTENT_PROJECTION` and :data:`CONTENT_CLUSTERING`), and each sample's
likelihood is the smaller of the two. ``rare_by`` says which view decided:
``"content"`` (rare for what it shows) or ``"appearance"`` (rare for how it
looks, the whole vector). Pure numpy: no FiftyOne, no database.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.estimate import estimate_with
from dequity.pipeline.fit import LikelihoodFit
from dequity.pipeline.projection import project_with, projection_params

#: ``views="auto"``: score the content view when the vectors have its layout
AUTO = "auto"
#: stored in a run's config once the content view was used
CONTENT = "content"
#: ``rare_by`` values
RARE_BY_CONTENT, RARE_BY_APPEARANCE = "content", "appearance"
#: widths of the unit-length blocks of EfficientNet-Lite0's every-stage vector:
#: stem, the six block stages before the last, the final features
LITE0_BLOCKS = (32, 16, 24, 40, 80, 112, 192, 1280)
#: the final-features block of every-stage vectors
CONTENT_COLUMNS = slice(-LITE0_BLOCKS[-1], None)
#: the content view's projection and likelihood (chosen on validation draws by
#: ``python -m benchmarks --only fidelity``)
CONTENT_PROJECTION = {"n_components": 20}
CONTENT_CLUSTERING = {"k": 30}
_CONTENT_PROJECTION_PARAMS = projection_params("pca", CONTENT_PROJECTION)
#: how far a block's length may stray from 1 (vectors stored as float16 included)
_UNIT_TOLERANCE = 0.02


def validate_views(views: object) -> None:
    """Raise :class:`DequityError` unless ``views`` is ``"auto"`` or None.

    Example::

        >>> validate_views("auto")
    """
    if not (views is None or (isinstance(views, str) and views == AUTO)):
        raise DequityError(
            f"views must be 'auto' (score the content view when the vectors are the default "
            f"model's) or None (the whole vector only), got {views!r}"
        )


def content_columns(vectors: np.ndarray) -> slice | None:
    """The final-features block of every-stage vectors, or None for any other layout.

    Example::

        >>> blocks = [np.eye(1, w)[0] for w in LITE0_BLOCKS]
        >>> content_columns(np.tile(np.concatenate(blocks), (3, 1)))
        slice(-1280, None, None)
        >>> content_columns(np.ones((3, 512))) is None
        True
    """
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != sum(LITE0_BLOCKS) or not len(x):
        return None
    edges = np.cumsum((0, *LITE0_BLOCKS))
    sample = x[: min(len(x), 1_000)].astype(np.float64)
    for start, stop in zip(edges[:-1], edges[1:]):
        norms = np.linalg.norm(sample[:, start:stop], axis=1)
        if np.abs(norms - 1).max() > _UNIT_TOLERANCE:
            return None
    return CONTENT_COLUMNS


def applies(vectors: np.ndarray) -> bool:
    """Whether ``views="auto"`` scores the content view of ``vectors``.

    It needs the default model's layout and more samples than the view's ``k``.

    Example::

        >>> applies(np.ones((100, 512)))
        False
    """
    return content_columns(vectors) is not None and len(vectors) > CONTENT_CLUSTERING["k"]


@dataclass
class ContentView:
    """The content view's likelihoods and the fit that places new samples in it."""

    likelihoods: np.ndarray
    fit: LikelihoodFit


def content_view(
    vectors: np.ndarray, fit_samples: int | None = None, groups: np.ndarray | None = None
) -> ContentView:
    """k-NN crowding (k 30) on PCA-20 of the final-features block of ``vectors``.

    ``fit_samples`` is the run's: above it, neighbours are counted among the
    same seeded subsample as the run's crowding; ``groups`` count distinct
    groups instead of samples, as in the run's own likelihood.

    Example::

        view = content_view(vectors)           # vectors: (n, 1776), default model
        p = np.minimum(run_likelihoods, view.likelihoods)
    """
    columns = content_columns(vectors)
    if columns is None:
        raise DequityError(
            "the content view needs the default model's every-stage vectors "
            f"({sum(LITE0_BLOCKS)} numbers in unit-length blocks); pass views=None"
        )
    x = np.asarray(vectors)[:, columns]
    points, transform = project_with(x, "pca", _CONTENT_PROJECTION_PARAMS)
    params = {**CONTENT_CLUSTERING, "fit_samples": fit_samples}
    result = estimate_with(points, "knn", "nearest", groups, params)
    result.fit.projection = transform
    return ContentView(result.likelihoods, result.fit)


def combine(image: np.ndarray, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(likelihood, rare_by)``: the smaller view's likelihood and which view that was.

    Example::

        >>> p, why = combine(np.array([0.2, 0.9]), np.array([0.5, 0.1]))
        >>> p.tolist(), why.tolist()
        ([0.2, 0.1], ['appearance', 'content'])
    """
    image, content = np.asarray(image, np.float64), np.asarray(content, np.float64)
    rare_by = np.where(content < image, RARE_BY_CONTENT, RARE_BY_APPEARANCE)
    return np.minimum(image, content), rare_by
