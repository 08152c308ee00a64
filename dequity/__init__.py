"""dequity: find visually rare images and weight them up in training.

An implementation of DatasetEquity (Shrivastava et al., ICCV 2023 workshops)
for FiftyOne datasets.

Example::

    import fiftyone as fo, dequity
    ds = fo.load_dataset("kitti")
    res = dequity.compute_dequity(ds, "dequity")
    ds.sort_by("dequity_weight", reverse=True)   # rarest images first
"""

from dequity.clustering import cluster
from dequity.core import (
    compute_dequity,
    delete_dequity_run,
    list_dequity_runs,
    load_dequity_results,
    rename_dequity_run,
    validate_run_key,
)
from dequity.errors import DequityError
from dequity.export import export_weights
from dequity.likelihood import scaled_likelihood
from dequity.models import load_model
from dequity.projection import project
from dequity.runs import DequityResults, DequityRunConfig
from dequity.weights import gfl_weight

__version__ = "0.1.0"

__all__ = [
    "DequityError",
    "DequityResults",
    "DequityRunConfig",
    "cluster",
    "compute_dequity",
    "delete_dequity_run",
    "export_weights",
    "gfl_weight",
    "list_dequity_runs",
    "load_dequity_results",
    "load_model",
    "project",
    "rename_dequity_run",
    "scaled_likelihood",
    "validate_run_key",
]
