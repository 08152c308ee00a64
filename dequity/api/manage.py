"""Runs already on a dataset: load, list, rename and delete them.

Each call recovers what dead writers left once (:meth:`dequity.store.dataset.Store.recover`)
and writes only while it holds the run key.
"""

from __future__ import annotations

from typing import Any

from dequity import defaults
from dequity.errors import DequityError
from dequity.pipeline.params import check_field_name
from dequity.store.dataset import Store, rerun_if_disconnected
from dequity.store.names import field_names
from dequity.store.runs import DequityResults


def load_dequity_results(samples: Any, run_key: str = defaults.DEFAULT_RUN_KEY) -> DequityResults:
    """Load the results of dequity run ``run_key`` from ``samples``' dataset.

    Example::

        res = dequity.load_dequity_results(fo.load_dataset("kitti"), "dequity")
        print(res.summary())
    """
    store = Store.open(samples)
    return store.results(run_key)


def list_dequity_runs(samples: Any) -> list[str]:
    """Keys of the dequity runs on ``samples``' dataset.

    Example::

        dequity.list_dequity_runs(dataset)   # ['dequity', 'paper']
    """
    store = Store.open(samples)
    return store.runs()


@rerun_if_disconnected
def delete_dequity_run(samples: Any, run_key: str) -> None:
    """Delete dequity run ``run_key`` and the fields it wrote.

    Example::

        dequity.delete_dequity_run(dataset, "paper")
    """
    store = Store.open(samples)
    store.results(run_key)
    with store.writing(run_key) as writer:
        store.results(run_key)
        writer.delete()


@rerun_if_disconnected
def rename_dequity_run(samples: Any, run_key: str, new_run_key: str) -> None:
    """Rename dequity run ``run_key``; its fields are renamed to match.

    Example::

        dequity.rename_dequity_run(dataset, "dequity", "dequity_clip")
        # fields are now dequity_clip_cluster/_likelihood/_weight
    """
    store = Store.open(samples)
    store.results(run_key)
    check_field_name("new run key", new_run_key)
    _check_key_free(store, new_run_key)
    with store.writing(run_key, new_run_key) as writer:
        store.results(run_key)
        _check_key_free(store, new_run_key)
        store.check_fields_free(
            dict.fromkeys(field_names(new_run_key).values(), object), new_run_key
        )
        writer.rename(new_run_key)


def _check_key_free(store: Store, run_key: str) -> None:
    if store.has_run(run_key):
        raise DequityError(f"a run {run_key!r} already exists; choose another key")
