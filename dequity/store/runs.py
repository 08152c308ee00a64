"""The dequity run: its config, its fields and its results on a FiftyOne dataset.

A run is recorded with FiftyOne's runs API (``dataset.list_runs()``,
``get_run_info``, ``load_run_results``, ``rename_run``, ``delete_run``), so the
App's run management and plain FiftyOne code see it like any other run.
"""

from __future__ import annotations

from collections import Counter
from copy import deepcopy
from typing import Any

import fiftyone.core.runs as focr
import numpy as np

from dequity.defaults import (
    DEFAULT_CLUSTERING,
    DEFAULT_ETA,
    DEFAULT_GAMMA,
    DEFAULT_NOISE,
    DEFAULT_PROJECTION,
    DEFAULT_RUN_KEY,
)
from dequity.errors import DequityError
from dequity.pipeline.views import MODES, combine
from dequity.pipeline.weights import gfl_weight, validate_gfl_params
from dequity.store import compat as fc
from dequity.store.columns import object_columns, run_columns
from dequity.store.dataset import Store, rerun_if_disconnected
from dequity.store.names import METHOD, field_names, stamp_field
from dequity.store.packing import pack_array, pack_ids, unpack_array, unpack_ids


class DequityRunConfig(focr.RunConfig):
    """Everything needed to reproduce a dequity run; stored with the run.

    Values are kept as given; :func:`dequity.config.resolve` checks
    them and fills in the full projection and clustering parameters.

    Example::

        config = DequityRunConfig("paper", embeddings_field="embedding",
                                  projection="tsne", clustering="dbscan")
        config.weight_field   # 'paper_weight'
    """

    def __init__(
        self,
        run_key: str = DEFAULT_RUN_KEY,
        embeddings_field: str | None = None,
        model: str | None = None,
        projection: str | None = DEFAULT_PROJECTION,
        projection_kwargs: dict | None = None,
        clustering: str = DEFAULT_CLUSTERING,
        clustering_kwargs: dict | None = None,
        noise: str = DEFAULT_NOISE,
        eta: float = DEFAULT_ETA,
        gamma: float = DEFAULT_GAMMA,
        cluster_field: str | None = None,
        likelihood_field: str | None = None,
        weight_field: str | None = None,
        group_field: str | None = None,
        collapse_near_duplicates: float | None = None,
        patches_field: str | None = None,
        views: str | None = None,
        rare_by_field: str | None = None,
        updated_by_field: str | None = None,
        method: str = METHOD,
        **kwargs: Any,
    ) -> None:
        fields = field_names(run_key)
        self.embeddings_field = embeddings_field
        self.model = model
        self.projection = projection
        self.projection_kwargs = {} if projection_kwargs is None else projection_kwargs
        self.clustering = clustering
        self.clustering_kwargs = {} if clustering_kwargs is None else clustering_kwargs
        self.noise = noise
        self.eta = eta
        self.gamma = gamma
        self.cluster_field = cluster_field or fields["cluster"]
        self.likelihood_field = likelihood_field or fields["likelihood"]
        self.weight_field = weight_field or fields["weight"]
        self.group_field = group_field
        self.collapse_near_duplicates = collapse_near_duplicates
        #: an object run scores the ``Detections`` of this field (None: images)
        self.patches_field = patches_field
        #: as asked (``"auto"`` or a mode); once a run scored its views, their mode
        #: (``"content"`` or ``"ranked"``, :mod:`dequity.pipeline.views`); None: the
        #: whole vector only
        self.views = views
        self.rare_by_field = rare_by_field or fields["rare_by"]
        #: where updates stamp the samples they rescale (None until the run's first update)
        self.updated_by_field = updated_by_field
        super().__init__(method=method, **kwargs)

    @property
    def uses_views(self) -> bool:
        """Whether the run scored its views and owns ``rare_by_field``."""
        return getattr(self, "views", None) in MODES

    @property
    def object_paths(self) -> list[str]:
        """An object run's Detection attributes as field paths; empty for an image run."""
        if self.patches_field is None:
            return []
        names = (self.cluster_field, self.likelihood_field, self.weight_field)
        return [f"{self.patches_field}.detections.{name}" for name in names]

    @property
    def fields(self) -> list[str]:
        """The fields this run owns (deleted with it).

        An object run owns the sample weight field (each sample's largest
        object weight) and its three Detection attributes.
        """
        if self.patches_field is not None:
            return [self.weight_field, *self.object_paths]
        fields = [self.cluster_field, self.likelihood_field, self.weight_field]
        if self.uses_views:
            fields.append(self.rare_by_field)
        if getattr(self, "updated_by_field", None):
            fields.append(self.updated_by_field)
        return fields

    def field_renames(self, new_key: str) -> dict[str, str]:
        """Each owned field's new path when the run is renamed to ``new_key``."""
        stamped = getattr(self, "updated_by_field", None)
        renamed = DequityRunConfig(
            new_key,
            patches_field=self.patches_field,
            views=getattr(self, "views", None),
            updated_by_field=stamp_field(new_key) if stamped else None,
        )
        return dict(zip(self.fields, renamed.fields))


class DequityRun(focr.Run):
    """Bookkeeping of a dequity run: which fields it owns and their cleanup."""

    def get_fields(self, samples: Any, key: str) -> list[str]:
        fields = list(self.config.fields)
        embeddings = self.config.embeddings_field
        if embeddings and getattr(self.config, "patches_field", None):
            fields.append(f"{self.config.patches_field}.detections.{embeddings}")
        elif embeddings:
            fields.append(embeddings)
        return fields

    def cleanup(self, samples: Any, key: str) -> None:
        dataset = fc.root_dataset(samples)
        present = [f for f in self.config.fields if dataset.has_sample_field(f)]
        if present:
            dataset.delete_sample_fields(present)

    def rename(self, samples: Any, key: str, new_key: str) -> None:
        """Rename the run's fields along with its key (``<key>_weight`` ...)."""
        dataset = fc.root_dataset(samples)
        mapping = self.config.field_renames(new_key)
        new = field_names(new_key)
        taken = [f for f in mapping.values() if dataset.has_sample_field(f)]
        if taken:
            raise ValueError(f"cannot rename run to {new_key!r}: fields {taken} exist")
        for old_path, new_path in mapping.items():
            if dataset.has_sample_field(old_path):
                dataset.rename_sample_field(old_path, new_path)
        cached = fc.results_cache(dataset).get(key)
        for config in (self.config, getattr(cached, "config", None)):
            if config is not None:
                config.cluster_field = new["cluster"]
                config.likelihood_field = new["likelihood"]
                config.weight_field = new["weight"]
                config.rare_by_field = new["rare_by"]
                if getattr(config, "updated_by_field", None):
                    config.updated_by_field = stamp_field(new_key)
        self.update_run_config(samples, key, self.config)


class DequityResults(focr.RunResults):
    """Results of a dequity run: cluster labels, likelihoods and weights.

    ``labels`` is empty for a ``clustering="knn"`` run, which forms no clusters.
    In an object run (``config.patches_field`` set) the values are per
    object: ``object_ids[i]`` is the id of the ``Detection`` that
    ``labels[i]``, ``likelihoods[i]`` and ``weights[i]`` belong to, and
    ``sample_ids[i]`` the id of its sample.

    Get them from :func:`dequity.compute_dequity` or
    :func:`dequity.load_dequity_results`.

    Example::

        res = dequity.load_dequity_results(dataset, "dequity")
        res.cluster_sizes()          # {cluster id: size}, largest first
        res.reweight(eta=0.5, gamma=2.0)
    """

    def __init__(
        self,
        samples: Any,
        config: DequityRunConfig,
        key: str,
        sample_ids: list[str] | None = None,
        labels: list[int] | None = None,
        likelihoods: list[float] | None = None,
        points: list[list[float]] | None = None,
        missing_ids: list[str] | None = None,
        fit: dict | None = None,
        object_ids: list[str] | None = None,
        views: dict[str, list[float]] | None = None,
        backend: Any = None,
    ) -> None:
        super().__init__(samples, config, key, backend=backend)
        self.sample_ids = list(sample_ids or [])
        self.labels = _plain_list(labels, np.int64)
        self.likelihoods = _plain_list(likelihoods, np.float64)
        self.points = _plain_list(points, np.float64)
        self.missing_ids = list(missing_ids or [])
        #: what places new samples without refitting (:class:`dequity.pipeline.fit.LikelihoodFit`
        #: as a dict); None for runs that cannot be updated (t-SNE, groups)
        self.fit = fit
        #: an object run's Detection ids, aligned with ``sample_ids``
        self.object_ids = list(object_ids or [])
        #: with views (:mod:`dequity.pipeline.views`): each view's values, e.g.
        #: ``{"image": [...], "content": [...], "off_domain": [...]}``; ``likelihoods``
        #: is their minimum
        self.views = views

    @property
    def rare_by(self) -> list[str]:
        """Per sample, the view that made it rare (empty without views).

        Example::

            res.rare_by[:3]   # ['appearance', 'content', 'off-domain']
        """
        if not self.views:
            return []
        return combine(self.views)[1].tolist()

    def attributes(self) -> list[str]:
        return [
            "cls",
            "sample_ids",
            "labels",
            "likelihoods",
            "points",
            "missing_ids",
            "fit",
            "object_ids",
            "views",
        ]

    @property
    def is_object_run(self) -> bool:
        """Whether the values are per object (``config.patches_field``) rather than per image."""
        return getattr(self.config, "patches_field", None) is not None

    def serialize(self, reflective: bool = False) -> dict:
        """The stored form: per-sample arrays packed as binary (:mod:`dequity.store.packing`)."""
        d = self._prepare_serial_dict(reflective)
        views = self.views
        d.update(
            cls=self.cls,
            sample_ids=pack_ids(self.sample_ids),
            labels=pack_array(self.labels, "int32"),
            likelihoods=pack_array(self.likelihoods, "float64"),
            points=pack_array(self.points, "float32"),
            missing_ids=pack_ids(self.missing_ids),
            fit=self.fit,
            object_ids=pack_ids(self.object_ids),
            views=None
            if views is None
            else {k: pack_array(v, "float64") for k, v in views.items()},
        )
        return d

    @classmethod
    def _from_dict(cls, d: dict, samples: Any, config: Any, key: str) -> DequityResults:
        views = d.get("views")
        return cls(
            samples,
            config,
            key,
            sample_ids=unpack_ids(d.get("sample_ids")),
            labels=unpack_array(d.get("labels")),
            likelihoods=unpack_array(d.get("likelihoods")),
            points=unpack_array(d.get("points")),
            missing_ids=unpack_ids(d.get("missing_ids")),
            fit=d.get("fit"),
            object_ids=unpack_ids(d.get("object_ids")),
            views=None
            if views is None
            else {k: unpack_array(v).tolist() for k, v in views.items()},
        )

    @property
    def weights(self) -> np.ndarray:
        """Each sample's GFL weight under the run's current eta and gamma."""
        return gfl_weight(np.asarray(self.likelihoods), self.config.eta, self.config.gamma)

    def cluster_sizes(self) -> dict[int, int]:
        """Samples per cluster id, most common first; ``-1`` is noise."""
        return dict(Counter(self.labels).most_common())

    @property
    def num_clusters(self) -> int:
        """Number of clusters found, noise excluded."""
        return len({label for label in self.labels if label >= 0})

    @property
    def noise_fraction(self) -> float:
        """Share of samples the clustering labelled noise."""
        return float(np.mean(np.asarray(self.labels) < 0)) if self.labels else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts and ranges worth printing or showing in the App.

        Counts only the samples that still exist: samples deleted from the
        dataset since the run are reported as ``num_deleted``.
        """
        existing = set(fc.root_dataset(self.samples).values("id"))
        present = np.array([i in existing for i in self.sample_ids], dtype=bool)
        labels = [label for label, kept in zip(self.labels, present) if kept]
        sizes = Counter(labels)
        weights = self.weights[present] if len(present) else self.weights
        missing = sum(i in existing for i in self.missing_ids)
        num_samples = int(present.sum())
        extra: dict[str, Any] = {}
        if self.is_object_run:
            num_samples = len({i for i in self.sample_ids if i in existing})
            extra = {"patches_field": self.config.patches_field, "num_objects": int(present.sum())}
        return {
            "run_key": self.key,
            "num_samples": num_samples,
            **extra,
            "num_missing": missing,
            "num_deleted": int((~present).sum()) + len(self.missing_ids) - missing,
            "num_clusters": len(set(sizes) - {-1}),
            "noise_fraction": sizes[-1] / len(labels) if labels else 0.0,
            "cluster_sizes": dict(sizes.most_common()),
            "eta": self.config.eta,
            "gamma": self.config.gamma,
            "min_weight": float(weights.min()) if len(weights) else None,
            "max_weight": float(weights.max()) if len(weights) else None,
        }

    @rerun_if_disconnected
    def reweight(self, eta: float, gamma: float, progress: Any = None) -> np.ndarray:
        """Recompute weights with new ``eta``/``gamma``; only the weight field changes.

        Clusters and likelihoods stay as they are; the run config records the
        new parameters. Returns the new weights.

        Example::

            res.reweight(eta=0.5, gamma=2.0)
            dataset.sort_by("dequity_weight", reverse=True)
        """
        validate_gfl_params(eta, gamma)
        config = deepcopy(self.config)
        config.eta, config.gamma = float(eta), float(gamma)
        weights = gfl_weight(np.asarray(self.likelihoods), config.eta, config.gamma)
        if self.is_object_run:
            ids, columns, objects = object_columns(config, self)
        else:
            ids, columns, objects = (
                self.sample_ids,
                run_columns(config, {"weight": weights.tolist()}),
                None,
            )
        store = Store(self.samples)
        with store.writing(self.key) as writer:
            if self.key not in store.runs():
                raise DequityError(f"run {self.key!r} no longer exists")
            writer.commit(config, self, ids, columns, progress=progress, objects=objects)
        self.config.eta, self.config.gamma = config.eta, config.gamma
        return weights


def _plain_list(values: Any, dtype: type) -> list:
    """``values`` as a list of Python numbers (rows of an array as lists)."""
    if values is None:
        return []
    if isinstance(values, np.ndarray):
        return values.astype(dtype).tolist()
    if len(values) and _numpy_item(values):
        return np.asarray(values, dtype).tolist()
    return list(values)


def _numpy_item(values: Any) -> bool:
    """Whether a list holds numpy values, which JSON and FiftyOne fields do not take."""
    first = values[0]
    return isinstance(first, np.generic | np.ndarray) or (
        isinstance(first, list) and len(first) > 0 and isinstance(first[0], np.generic)
    )
