"""The brain visualization that shows a dequity run in the App's Embeddings panel."""

from __future__ import annotations

from typing import Any

import fiftyone.brain as fob
import numpy as np

import dequity
from fiftyone_plugin.common import viz_key


def store_visualization(results: dequity.DequityResults, overwrite: bool = True) -> str:
    """Store the run's 2-D points as brain visualization ``<run_key>_viz``.

    The points are attached to the run's samples in the results' order, so the
    Embeddings panel can colour them by ``<run_key>_cluster``. Returns the key.
    """
    key = viz_key(results.key)
    samples = results.samples
    dataset = samples._root_dataset
    if key in dataset.list_brain_runs():
        if not overwrite:
            raise dequity.DequityError(f"a brain run {key!r} already exists")
        dataset.delete_brain_run(key)
    ordered = dataset.select(results.sample_ids, ordered=True)
    fob.compute_visualization(ordered, points=np.asarray(results.points), brain_key=key)
    return key


def delete_visualization(samples: Any, run_key: str) -> bool:
    """Delete the visualization of run ``run_key`` if there is one."""
    dataset = samples._root_dataset
    key = viz_key(run_key)
    if key in dataset.list_brain_runs(type=fob.Visualization):
        dataset.delete_brain_run(key)
        return True
    return False


def rename_visualization(samples: Any, run_key: str, new_run_key: str) -> bool:
    """Rename the visualization of run ``run_key`` to follow its new key."""
    dataset = samples._root_dataset
    key, new_key = viz_key(run_key), viz_key(new_run_key)
    if key in dataset.list_brain_runs(type=fob.Visualization) and not dataset.has_brain_run(
        new_key
    ):
        dataset.rename_brain_run(key, new_key)
        return True
    return False
