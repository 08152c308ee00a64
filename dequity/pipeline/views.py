"""Rare in any view: a sample is common only if what it shows and how it looks are.

The default model's vector (:class:`dequity.sources.models.StagePooled`) is made of
unit-length blocks: the pooled stem and early stages, which describe how an
image looks (contrast, polarity, blur, noise), then the final features, which
describe what it shows. The run's likelihood on the whole vector finds rare
conditions; on long-tailed kinds the early blocks drown the final one. A run
whose vectors have that layout also scores other views of them, and each
sample's likelihood is the smallest of its views':

* ``views="content"``: the final block alone (its *content view*: k-NN
  crowding on PCA-20, see :data:`CONTENT_PROJECTION` and
  :data:`CONTENT_CLUSTERING`), as its likelihood;
* ``views="ranked"``: the content view and the *off-domain view* (the final
  block's distance from its 10 main PCA axes, :data:`OFF_DOMAIN_COMPONENTS`),
  each as its rank: the share of the fitted samples at most as likely
  (:class:`RankScale`). Ranks put both views on one scale, which spreads the
  weights of rare kinds; the whole vector's likelihood stays as it is, so the
  very small likelihoods of rare conditions still win the minimum.

``views="auto"`` is the default's mode (:data:`dequity.defaults.DEFAULT_VIEWS`).
``rare_by`` says which view decided: ``"appearance"`` (how it looks, the whole
vector), ``"content"`` (what it shows) or ``"off-domain"`` (unlike the set's
kinds altogether). Pure numpy: no FiftyOne, no database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.estimate import estimate_with
from dequity.pipeline.fit import LikelihoodFit, LinearProjection, decode, encode
from dequity.pipeline.projection import project_with, projection_params
from dequity.pipeline.subsample import FIT_SAMPLES, SEED, subsample_rows

#: ``views="auto"``: the default's mode, where the vectors have the default model's layout
AUTO = "auto"
#: the modes, stored in a run's config once its views were scored
CONTENT, RANKED = "content", "ranked"
MODES = (CONTENT, RANKED)
#: the views, as named in a run's ``views`` results
IMAGE, OFF_DOMAIN = "image", "off_domain"
#: ``rare_by`` values
RARE_BY_CONTENT, RARE_BY_APPEARANCE, RARE_BY_OFF_DOMAIN = "content", "appearance", "off-domain"
_RARE_BY = {IMAGE: RARE_BY_APPEARANCE, CONTENT: RARE_BY_CONTENT, OFF_DOMAIN: RARE_BY_OFF_DOMAIN}
#: the view that each ``rare_by`` value names
VIEW_OF = {value: view for view, value in _RARE_BY.items()}
#: the main axes of the final features that the off-domain view measures distance from
OFF_DOMAIN_COMPONENTS = 10
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
    """Raise :class:`DequityError` unless ``views`` is ``"auto"``, a mode or None.

    Example::

        >>> validate_views("ranked")
    """
    if not (views is None or (isinstance(views, str) and views in (AUTO, *MODES))):
        raise DequityError(
            f"views must be 'auto' (the default's mode), 'content' (the content view's "
            f"likelihood), 'ranked' (the content and off-domain views' ranks) or None (the "
            f"whole vector only), got {views!r}"
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
    """Whether a run with views scores the views of ``vectors`` (else the whole vector only).

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


def combine(views: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(likelihood, rare_by)``: the smallest view's value and which view that was.

    Ties go to the view named first.

    Example::

        >>> p, why = combine({"image": [0.2, 0.9, 0.5], "content": [0.5, 0.1, 0.6],
        ...                   "off_domain": [0.3, 0.4, 0.05]})
        >>> p.tolist(), why.tolist()
        ([0.2, 0.1, 0.05], ['appearance', 'content', 'off-domain'])
    """
    names = list(views)
    values = np.array([np.asarray(views[n], np.float64) for n in names])
    which = values.argmin(axis=0)
    return values.min(axis=0), np.array([_RARE_BY[n] for n in names])[which]


#: how :func:`describe_split` names each ``rare_by`` value
_SPLIT_WORDS = {
    RARE_BY_CONTENT: "by content (what they show)",
    RARE_BY_APPEARANCE: "by appearance (how they look)",
    RARE_BY_OFF_DOMAIN: "off-domain (unlike the set's kinds)",
}


def describe_split(rare_by: Sequence[str]) -> str:
    """How many samples each view made rare, in words.

    Example::

        >>> describe_split(["content", "appearance", "content"])[:56]
        '2 by content (what they show), 1 by appearance (how they'
    """
    counts = Counter(rare_by)
    return ", ".join(f"{counts[value]} {words}" for value, words in _SPLIT_WORDS.items())


@dataclass
class RankScale:
    """Ranks against a fitted reference: the share of reference values at most ``v``.

    The reference is the fitted samples' values (a seeded subsample above
    ``fit_samples``), kept sorted, so that new samples get their rank on the
    same scale without moving the old ones'. Ranks lie in ``[1 / m, 1]``.

    Example::

        >>> scale = RankScale.fit(np.array([0.1, 0.4, 0.2, 0.4]))
        >>> scale.rank(np.array([0.1, 0.4, 0.3, 0.0])).tolist()
        [0.25, 1.0, 0.5, 0.25]
    """

    reference: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, fit_samples: int | None = None) -> RankScale:
        rows = subsample_rows(len(values), fit_samples or FIT_SAMPLES)
        return cls(np.sort(np.asarray(values, np.float32)[rows]))

    def rank(self, values: np.ndarray) -> np.ndarray:
        at_most = np.searchsorted(self.reference, np.asarray(values, np.float32), side="right")
        return np.maximum(at_most, 1) / len(self.reference)

    def to_dict(self) -> dict[str, Any]:
        return encode(self.reference)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankScale:
        return cls(decode(d))


@dataclass
class OffDomain:
    """The off-domain view's fit: the main PCA axes of each half of the fitted samples.

    Closeness to the axes' subspace is measured out of sample: a fitted
    sample's from the axes of the half it is not in, any other sample's (new
    ones included) from the first half's. In-sample distances are smaller, so
    without this, new samples would look off-domain for being new.
    """

    axes: tuple[LinearProjection, LinearProjection]
    scale: RankScale

    @classmethod
    def fit(
        cls, content: np.ndarray, fit_samples: int | None = None
    ) -> tuple[OffDomain, np.ndarray]:
        """The fit on ``content`` (a seeded subsample above ``fit_samples``), every row's rank."""
        rows = subsample_rows(len(content), fit_samples or FIT_SAMPLES)
        halves = np.array_split(np.random.default_rng(SEED).permutation(rows), 2)
        first, second = (_main_axes(content[np.sort(half)]) for half in halves)
        closeness = _closeness(first, content)
        closeness[halves[0]] = _closeness(second, content[halves[0]])
        scale = RankScale.fit(closeness, fit_samples)  # the same seeded rows
        return cls((first, second), scale), scale.rank(closeness)

    def ranks(self, content: np.ndarray) -> np.ndarray:
        """The ranks of new rows (small: far off the subspace of the set's main axes)."""
        return self.scale.rank(_closeness(self.axes[0], content))

    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": [
                {"mean": encode(a.mean), "components": encode(a.components)} for a in self.axes
            ],
            "reference": self.scale.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OffDomain:
        first, second = (
            LinearProjection(decode(a["mean"]), decode(a["components"])) for a in d["axes"]
        )
        return cls((first, second), RankScale.from_dict(d["reference"]))


def _main_axes(content: np.ndarray) -> LinearProjection:
    """The mean and :data:`OFF_DOMAIN_COMPONENTS` main PCA axes of ``content``."""
    from sklearn.decomposition import PCA

    n_components = min(OFF_DOMAIN_COMPONENTS, len(content) - 1, content.shape[1])
    pca = PCA(n_components, random_state=SEED).fit(content)
    return LinearProjection(pca.mean_.astype(np.float32), pca.components_.astype(np.float32))


def _closeness(axes: LinearProjection, content: np.ndarray) -> np.ndarray:
    """Minus each row's distance from the subspace of ``axes`` (higher: more common)."""
    centred = np.asarray(content, np.float32) - axes.mean
    inside = (centred @ axes.components.T) @ axes.components
    return -np.linalg.norm(centred - inside, axis=1)


@dataclass
class Views:
    """Each view's values (their minimum is the likelihood) and the fits that extend them."""

    values: dict[str, np.ndarray]
    fits: dict[str, dict[str, Any]]
    #: after :func:`extend_views`: what each rescaled view's old values were multiplied
    #: by (views not listed kept the old samples' values)
    old_factors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def likelihoods(self) -> np.ndarray:
        return combine(self.values)[0]


def score_views(
    vectors: np.ndarray,
    image: np.ndarray,
    mode: str,
    fit_samples: int | None = None,
    groups: np.ndarray | None = None,
) -> Views:
    """The views of the default model's ``vectors`` in ``mode``, beside the whole vector's.

    ``image`` is the whole vector's likelihood; ``fit_samples`` and ``groups``
    are the run's (see :func:`content_view`).

    Example::

        views = score_views(vectors, whole_vector_likelihoods, "ranked")
        views.likelihoods      # the smallest view's value per sample
    """
    content = content_view(vectors, fit_samples, groups)
    values = {IMAGE: np.asarray(image, np.float64)}
    fits = {CONTENT: content.fit.to_dict()}
    if mode == CONTENT:
        values[CONTENT] = content.likelihoods
        return Views(values, fits)
    final = np.asarray(vectors)[:, CONTENT_COLUMNS]
    scale = RankScale.fit(content.likelihoods, fit_samples)
    values[CONTENT] = scale.rank(content.likelihoods)
    off_domain, values[OFF_DOMAIN] = OffDomain.fit(final, fit_samples)
    fits[RANKED] = {"content": scale.to_dict(), OFF_DOMAIN: off_domain.to_dict()}
    return Views(values, fits)


def extend_views(
    views: Mapping[str, Sequence[float]],
    fits: Mapping[str, Any],
    image: np.ndarray,
    new_vectors: np.ndarray,
) -> Views:
    """A run's views with new samples appended: old then new, each view as the run scored it.

    ``image`` is every sample's whole-vector likelihood, old then new, as
    :meth:`~dequity.pipeline.fit.LikelihoodFit.extend` rescaled and placed them;
    ``fits`` is the run's stored fit. In ``"content"`` mode the old content
    likelihoods are rescaled the same way; ranked views keep the old samples'
    ranks and give the new ones theirs on the fitted scale.

    Example::

        views = extend_views(results.views, results.fit, image, new_vectors)
    """
    content_fit = LikelihoodFit.from_dict(fits[CONTENT])
    points = content_fit.projection(np.asarray(new_vectors)[:, CONTENT_COLUMNS])
    old = {name: np.asarray(v, np.float64) for name, v in views.items()}
    values = {IMAGE: np.asarray(image, np.float64)}
    if RANKED not in fits:
        content = content_fit.extend(np.empty(0, np.int64), old[CONTENT], points)
        values[CONTENT] = np.concatenate([content.old_likelihoods, content.new_likelihoods])
        return Views(values, {CONTENT: content_fit.to_dict()}, {CONTENT: content.old_factors})
    ranked = fits[RANKED]
    _, counts, _ = content_fit.place(points)
    likelihood = (counts + int(content_fit.self_counted)) / content_fit.max_count
    new_content = RankScale.from_dict(ranked["content"]).rank(likelihood)
    final = np.asarray(new_vectors)[:, CONTENT_COLUMNS]
    new_off = OffDomain.from_dict(ranked[OFF_DOMAIN]).ranks(final)
    values[CONTENT] = np.concatenate([old[CONTENT], new_content])
    values[OFF_DOMAIN] = np.concatenate([old[OFF_DOMAIN], new_off])
    return Views(values, {CONTENT: fits[CONTENT], RANKED: ranked})
