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
    "DequityResults": "dequity.runs",
    "DequityRunConfig": "dequity.runs",
    "cluster": "dequity.clustering",
    "compute_dequity": "dequity.core",
    "delete_dequity_run": "dequity.core",
    "export_weights": "dequity.export",
    "gfl_weight": "dequity.weights",
    "list_dequity_runs": "dequity.core",
    "load_dequity_results": "dequity.core",
    "load_model": "dequity.models",
    "project": "dequity.projection",
    "rename_dequity_run": "dequity.core",
    "scaled_likelihood": "dequity.likelihood",
    "update_dequity": "dequity.update",
    "validate_run_key": "dequity.core",
}

__all__ = ["DequityError", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers; at run time names resolve on first use
    from dequity.clustering import cluster as cluster
    from dequity.core import compute_dequity as compute_dequity
    from dequity.core import delete_dequity_run as delete_dequity_run
    from dequity.core import list_dequity_runs as list_dequity_runs
    from dequity.core import load_dequity_results as load_dequity_results
    from dequity.core import rename_dequity_run as rename_dequity_run
    from dequity.core import validate_run_key as validate_run_key
    from dequity.export import export_weights as export_weights
    from dequity.likelihood import scaled_likelihood as scaled_likelihood
    from dequity.models import load_model as load_model
    from dequity.projection import project as project
    from dequity.runs import DequityResults as DequityResults
    from dequity.runs import DequityRunConfig as DequityRunConfig
    from dequity.update import update_dequity as update_dequity
    from dequity.weights import gfl_weight as gfl_weight


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
