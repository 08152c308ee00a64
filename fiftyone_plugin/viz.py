"""The brain visualization that shows a dequity run in the App's Embeddings panel.

The visualization of run ``<key>`` is the brain run ``<key>_viz``; its config
records ``dequity_run=<key>``. Only visualizations carrying that mark are
replaced, renamed or deleted: a user's own brain run of the same name is left
alone.
"""

from __future__ import annotations

import logging
from typing import Any

import fiftyone.brain as fob
import numpy as np

import dequity
from dequity.store import compat as fc
from dequity.store.claims import dataset_lock
from fiftyone_plugin.common import viz_key

logger = logging.getLogger(__name__)

OWNER_ATTR = "dequity_run"


def owned_visualization(samples: Any, run_key: str) -> bool:
    """Whether ``<run_key>_viz`` is a visualization stored for dequity run ``run_key``.

    Example::

        owned_visualization(dataset, "dequity")   # False for a user's own "dequity_viz"
    """
    dataset = fc.root_dataset(samples)
    key = viz_key(run_key)
    if key not in dataset.list_brain_runs(type=fob.Visualization):
        return False
    config = dataset.get_brain_info(key).config
    return config.method == "manual" and getattr(config, OWNER_ATTR, None) == run_key


def store_visualization(results: dequity.DequityResults) -> str | None:
    """Store the run's 2-D points as brain visualization ``<run_key>_viz``.

    The points are attached to the run's samples in the results' order (an
    object run's to its boxes), so the Embeddings panel can colour them by
    ``<run_key>_cluster``. Replaces an
    earlier visualization of the run; if another brain run holds the key, or
    the run has no points (a run on Ray), stores nothing, logs why and
    returns None. Returns the key.

    Example::

        store_visualization(dequity.load_dequity_results(dataset, "dequity"))
    """
    key = viz_key(results.key)
    if not results.points:  # a run on Ray keeps no 2-D points
        logger.info("run %r has no 2-D points; no visualization stored", results.key)
        return None
    dataset = fc.root_dataset(results.samples)
    with dataset_lock(dataset):
        if dataset.has_brain_run(key):
            if not owned_visualization(dataset, results.key):
                logger.warning(
                    "brain run %r was not created for dequity run %r; left as it is, and "
                    "no visualization stored (rename or delete it to get one)",
                    key,
                    results.key,
                )
                return None
            dataset.delete_brain_run(key)
        ordered = dataset.select(list(dict.fromkeys(results.sample_ids)), ordered=True)
        patches: dict[str, Any] = {}
        if results.is_object_run:  # one point per box, in the run's (collection) order
            field = results.config.patches_field
            ordered = ordered.select_labels(ids=results.object_ids, fields=field)
            patches = {"patches_field": field}
        fob.compute_visualization(
            ordered,
            points=np.asarray(results.points),
            method="manual",
            brain_key=key,
            **patches,
            **{OWNER_ATTR: results.key},
        )
    return key


def delete_visualization(samples: Any, run_key: str) -> bool:
    """Delete the visualization of run ``run_key`` if there is one.

    Example::

        delete_visualization(dataset, "dequity")
    """
    dataset = fc.root_dataset(samples)
    with dataset_lock(dataset):
        if not owned_visualization(dataset, run_key):
            return False
        dataset.delete_brain_run(viz_key(run_key))
    return True


def rename_visualization(samples: Any, run_key: str, new_run_key: str) -> bool:
    """Rename the visualization of run ``run_key`` to follow its new key.

    Example::

        rename_visualization(dataset, "dequity", "dequity_clip")
    """
    dataset = fc.root_dataset(samples)
    new_key = viz_key(new_run_key)
    with dataset_lock(dataset):
        if not owned_visualization(dataset, run_key) or dataset.has_brain_run(new_key):
            return False
        dataset.rename_brain_run(viz_key(run_key), new_key)
        config = dataset.get_brain_info(new_key).config
        setattr(config, OWNER_ATTR, new_run_key)
        fob.Visualization.update_run_config(dataset, new_key, config)
    return True
