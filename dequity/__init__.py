"""dequity: find visually rare images and weight them up in training.

An implementation of DatasetEquity (Shrivastava et al., ICCV 2023 workshops)
for FiftyOne datasets.

Example::

    import fiftyone as fo, dequity
    ds = fo.load_dataset("kitti")
    res = dequity.compute_dequity(ds, "dequity")
    ds.sort_by("dequity_weight", reverse=True)   # rarest images first

The public names are imported on first use (PEP 562), so ``import dequity``
and the command line start without loading FiftyOne or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dequity.errors import DequityError
from dequity.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "DequityResults": "dequity.store.runs",
    "DequityRunConfig": "dequity.store.runs",
    "cluster": "dequity.pipeline.clustering",
    "compute_dequity": "dequity.api.compute",
    "delete_dequity_run": "dequity.api.manage",
    "export_weights": "dequity.export",
    "gfl_weight": "dequity.pipeline.weights",
    "list_dequity_runs": "dequity.api.manage",
    "load_dequity_results": "dequity.api.manage",
    "load_model": "dequity.sources.models",
    "project": "dequity.pipeline.projection",
    "rename_dequity_run": "dequity.api.manage",
    "scaled_likelihood": "dequity.pipeline.likelihood",
    "update_dequity": "dequity.api.update",
    "validate_run_key": "dequity.api.compute",
}

__all__ = ["DequityError", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers; at run time names resolve on first use
    from dequity.api.compute import compute_dequity as compute_dequity
    from dequity.api.compute import validate_run_key as validate_run_key
    from dequity.api.manage import delete_dequity_run as delete_dequity_run
    from dequity.api.manage import list_dequity_runs as list_dequity_runs
    from dequity.api.manage import load_dequity_results as load_dequity_results
    from dequity.api.manage import rename_dequity_run as rename_dequity_run
    from dequity.api.update import update_dequity as update_dequity
    from dequity.export import export_weights as export_weights
    from dequity.pipeline.clustering import cluster as cluster
    from dequity.pipeline.likelihood import scaled_likelihood as scaled_likelihood
    from dequity.pipeline.projection import project as project
    from dequity.pipeline.weights import gfl_weight as gfl_weight
    from dequity.sources.models import load_model as load_model
    from dequity.store.runs import DequityResults as DequityResults
    from dequity.store.runs import DequityRunConfig as DequityRunConfig


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
