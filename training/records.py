"""Training runs recorded on the dataset through FiftyOne's runs API.

A run is listed by ``dataset.list_runs()``; its results hold the config, the
per-epoch metrics, the evaluation and the run folder. Deleting it with
``dataset.delete_run(key)`` also deletes its predictions and evaluation.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.runs as focr

from dequity.errors import DequityError
from dequity.store import compat as fc

__all__ = [
    "METHOD",
    "TrainingRun",
    "TrainingRunConfig",
    "TrainingRunResults",
    "load_training_run",
    "record_training_run",
]

METHOD = "dequity_train"


class TrainingRunConfig(focr.RunConfig):
    """The settings of a training run (JSON values).

    Example::

        config = TrainingRunConfig(detector="fcos_efficientnet_lite0", weight_field=None)
    """

    def __init__(self, method: str = METHOD, **kwargs: Any) -> None:
        super().__init__(method=method, **kwargs)


class TrainingRun(focr.Run):
    """A training run on a dataset; owns its predictions field and evaluation (from its config)."""

    def get_fields(self, samples: Any, key: str) -> list[str]:
        field = getattr(self.config, "predictions_field", None)
        return [field] if field else []

    def cleanup(self, samples: Any, key: str) -> None:
        dataset = fc.root_dataset(samples)
        eval_key = getattr(self.config, "eval_key", None)
        if eval_key and eval_key in dataset.list_evaluations():
            dataset.delete_evaluation(eval_key)
        for field in self.get_fields(samples, key):
            if dataset.has_sample_field(field):
                dataset.delete_sample_field(field)


class TrainingRunResults(focr.RunResults):
    """The results of a training run: ``metrics``, ``evaluation``, ``run_dir`` (JSON)."""


def record_training_run(
    dataset: Any, key: str, config: dict[str, Any], results: dict[str, Any]
) -> TrainingRunResults:
    """Registers (or replaces) training run ``key`` on ``dataset`` with its results.

    Example::

        record_training_run(dataset, "baseline", {"lr": 1e-4}, {"evaluation": {...}})
    """
    run_config = TrainingRunConfig(**config)
    run = run_config.build()
    existing = dataset.list_runs()
    if key in existing:
        info = dataset.get_run_info(key)
        if getattr(info.config, "method", None) != METHOD:
            raise DequityError(
                f"run key {key!r} is taken by another kind of run; pick another train key"
            )
        # keep the new predictions: replace the record without cleanup
        run.delete_run(dataset, key, cleanup=False)
    run.register_run(dataset, key, overwrite=True, cleanup=False)
    run_results = TrainingRunResults(dataset, run_config, key, backend=run, **results)
    run.save_run_results(dataset, key, run_results, overwrite=True)
    return run_results


def load_training_run(dataset: Any, key: str) -> TrainingRunResults:
    """The recorded results of training run ``key`` on ``dataset``.

    Example::

        res = load_training_run(dataset, "baseline")
        res.evaluation["per_class_ap"]
    """
    if key not in dataset.list_runs(method=METHOD):
        raise DequityError(
            f"dataset {dataset.name!r} has no training run {key!r}; its training runs are "
            f"{dataset.list_runs(method=METHOD)}; train one with `dequity train`"
        )
    return dataset.load_run_results(key)
