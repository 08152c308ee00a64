"""A run's config, checked and resolved once per call into what every stage reads.

:func:`resolve` takes the :class:`~dequity.store.runs.DequityRunConfig` that a
run stores, checks every value (the estimators behind the projection and the
clustering check their own parameters, with scikit-learn's description of
what is accepted), writes the full parameters back into it, defaults
included, and returns the frozen :class:`~dequity.pipeline.score.Settings`
that the array stages read. Nothing resolves parameters again after it.
"""

from __future__ import annotations

from typing import Any

from dequity.defaults import DEFAULT_VIEWS
from dequity.errors import DequityError
from dequity.pipeline import clustering as dc
from dequity.pipeline import groups as dg
from dequity.pipeline import projection as dp
from dequity.pipeline import views as dv
from dequity.pipeline.clustering import PARAMETERS as CLUSTERING_PARAMETERS
from dequity.pipeline.likelihood import validate_noise_policy
from dequity.pipeline.projection import PARAMETERS as PROJECTION_PARAMETERS
from dequity.pipeline.score import Settings
from dequity.pipeline.weights import validate_gfl_params


def resolve(config: Any, num_samples: int) -> Settings:
    """Check ``config`` for a run on ``num_samples`` samples; fill it in; its stage settings.

    Raises :class:`DequityError` naming the first bad value. Afterwards the
    config holds the full projection and clustering parameters, defaults
    included, as they are stored with the run.

    Example::

        config = DequityRunConfig(clustering="dbscan", clustering_kwargs={"eps": 1.5})
        settings = resolve(config, len(dataset))
        config.clustering_kwargs   # {'eps': 1.5, 'min_samples': 10}
    """
    validate_noise_policy(config.noise)
    dv.validate_views(config.views)
    validate_gfl_params(config.eta, config.gamma)
    config.eta, config.gamma = float(config.eta), float(config.gamma)
    for name in ("projection_kwargs", "clustering_kwargs"):
        kwargs = getattr(config, name)
        if not isinstance(kwargs, dict):
            raise DequityError(f"{name} must be a dict, got {kwargs!r}")
    config.projection_kwargs = dp.projection_params(config.projection, config.projection_kwargs)
    config.clustering_kwargs = dc.clustering_params(config.clustering, config.clustering_kwargs)
    check_estimators(
        config.projection, config.projection_kwargs, config.clustering, config.clustering_kwargs
    )
    dg.check_grouping(config.group_field, config.collapse_near_duplicates)
    dc.check_enough_samples(num_samples, config.clustering, config.clustering_kwargs)
    return Settings(
        projection=config.projection,
        projection_params=dict(config.projection_kwargs),
        clustering=config.clustering,
        clustering_params=dict(config.clustering_kwargs),
        noise=config.noise,
        views=DEFAULT_VIEWS if config.views == dv.AUTO else config.views,
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

    estimators = {
        "pca": PCA,
        "tsne": TSNE,
        "hdbscan": HDBSCAN,
        "hdbscan_knn": HDBSCAN,  # and a k-NN crowding: its parameters are not HDBSCAN's
        "dbscan": DBSCAN,
    }
    for what, method, params, tables in (
        ("projection_kwargs", projection, projection_params, PROJECTION_PARAMETERS),
        ("clustering_kwargs", clustering, clustering_params, CLUSTERING_PARAMETERS),
    ):
        if method not in estimators:
            continue
        table = tables[method]
        passed = {k: v for k, v in params.items() if table[k].estimator}
        try:
            estimators[method](**passed)._validate_params()
        except (TypeError, ValueError) as e:
            raise DequityError(f"{what} for {method!r}: {e}") from None
