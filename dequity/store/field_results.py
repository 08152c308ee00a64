"""A run record that keeps its per-sample values in the samples' fields only.

A run on Ray (``likelihood_backend="ray"``) may score more samples than one
process can hold. Its record stores the fit, the cluster sizes and the ids
of the samples without a vector, a size that does not grow with the
dataset; the ids, clusters and likelihoods are read from the run's fields
when asked, and it has no 2-D points. Everything else reads it as any
:class:`~dequity.store.runs.DequityResults`.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.runs as focr

from dequity.pipeline import clustering as dc
from dequity.store import compat as fc
from dequity.store.runs import DequityResults


class FieldBackedResults(DequityResults):
    """Results whose ``sample_ids``, ``labels`` and ``likelihoods`` live in the run's fields.

    Example::

        res = dequity.load_dequity_results(dataset, "big")   # a run on Ray
        res.cluster_sizes()     # from the record: no field is read
        res.likelihoods[:5]     # reads the run's fields once, then keeps them
    """

    def __init__(
        self,
        samples: Any,
        config: Any,
        key: str,
        fit: dict | None = None,
        sizes: dict[int, int] | None = None,
        missing_ids: list[str] | None = None,
        backend: Any = None,
        values: tuple[list[str], list[int], list[float]] | None = None,
    ) -> None:
        focr.RunResults.__init__(self, samples, config, key, backend=backend)
        self.fit = fit
        #: samples per cluster id (``-1``: noise), as the run counted them
        self.sizes = {int(k): int(v) for k, v in (sizes or {}).items()}
        self.missing_ids = list(missing_ids or [])
        self.object_ids: list[str] = []
        self.views = None
        self.points: list = []
        self._values = values

    @property
    def sample_ids(self) -> list[str]:
        """The ids of the samples the run scored, read from its fields."""
        return self._read()[0]

    @property
    def labels(self) -> list[int]:
        """Each sample's cluster, read from the run's field (empty for ``"knn"``)."""
        return self._read()[1]

    @property
    def likelihoods(self) -> list[float]:
        """Each sample's likelihood, read from the run's field."""
        return self._read()[2]

    def attributes(self) -> list[str]:
        return ["cls", "fit", "sizes", "missing_ids"]

    def serialize(self, reflective: bool = False) -> dict:
        """The stored form: no per-sample array but the ids without a vector."""
        d = self._prepare_serial_dict(reflective)
        d.update(
            cls=self.cls,
            fit=self.fit,
            sizes={str(k): v for k, v in self.sizes.items()},
            missing_ids=self.missing_ids,
        )
        return d

    @classmethod
    def _from_dict(cls, d: dict, samples: Any, config: Any, key: str) -> FieldBackedResults:
        return cls(samples, config, key, d.get("fit"), d.get("sizes"), d.get("missing_ids"))

    def cluster_sizes(self) -> dict[int, int]:
        """Samples per cluster id, most common first; ``-1`` is noise."""
        return dict(sorted(self.sizes.items(), key=lambda item: -item[1]))

    @property
    def num_clusters(self) -> int:
        """Number of clusters found, noise excluded."""
        return len(set(self.sizes) - {-1})

    @property
    def noise_fraction(self) -> float:
        """Share of samples the clustering labelled noise."""
        total = sum(self.sizes.values())
        return self.sizes.get(-1, 0) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        """As :meth:`DequityResults.summary`, counted in the database."""
        dataset = fc.root_dataset(self.samples)
        config = self.config
        scored = dataset.exists(config.likelihood_field)
        sizes: dict[int, int] = {}
        if config.clustering != dc.KNN:
            counts = scored.count_values(config.cluster_field)
            sizes = {int(k): v for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
        num_samples = len(scored)
        low, high = scored.bounds(config.weight_field)
        missing = len(dataset.select(self.missing_ids)) if self.missing_ids else 0
        return {
            "run_key": self.key,
            "num_samples": num_samples,
            "num_missing": missing,
            "num_deleted": sum(self.sizes.values()) - num_samples + len(self.missing_ids) - missing,
            "num_clusters": len(set(sizes) - {-1}),
            "noise_fraction": sizes.get(-1, 0) / num_samples if num_samples else 0.0,
            "cluster_sizes": sizes,
            "eta": config.eta,
            "gamma": config.gamma,
            "min_weight": low,
            "max_weight": high,
        }

    def _read(self) -> tuple[list[str], list[int], list[float]]:
        if self._values is None:
            config = self.config
            scored = fc.root_dataset(self.samples).exists(config.likelihood_field)
            ids, labels, likelihoods = scored.values(
                ["id", config.cluster_field, config.likelihood_field]
            )
            if config.clustering == dc.KNN:
                labels = []
            self._values = (ids, labels, likelihoods)
        return self._values
