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

import lazy_loader

from dequity.errors import DequityError

__version__ = "0.1.0"

# submodule -> the public names it defines
_EXPORTS = {
    "api.compute": ["compute_dequity", "validate_run_key"],
    "api.manage": [
        "delete_dequity_run",
        "list_dequity_runs",
        "load_dequity_results",
        "rename_dequity_run",
    ],
    "api.update": ["list_updatable_runs", "update_dequity"],
    "export": ["export_weights"],
    "pipeline.clustering": ["cluster"],
    "pipeline.likelihood": ["scaled_likelihood"],
    "pipeline.projection": ["project"],
    "pipeline.weights": ["gfl_weight"],
    "sources.models": ["load_model"],
    "store.runs": ["DequityResults", "DequityRunConfig"],
}

__getattr__, _, _lazy_names = lazy_loader.attach(__name__, submod_attrs=_EXPORTS)
__all__ = ["DequityError", *_lazy_names]

if TYPE_CHECKING:  # for type checkers; at run time names resolve on first use
    from dequity.api.compute import compute_dequity as compute_dequity
    from dequity.api.compute import validate_run_key as validate_run_key
    from dequity.api.manage import delete_dequity_run as delete_dequity_run
    from dequity.api.manage import list_dequity_runs as list_dequity_runs
    from dequity.api.manage import load_dequity_results as load_dequity_results
    from dequity.api.manage import rename_dequity_run as rename_dequity_run
    from dequity.api.update import list_updatable_runs as list_updatable_runs
    from dequity.api.update import update_dequity as update_dequity
    from dequity.export import export_weights as export_weights
    from dequity.pipeline.clustering import cluster as cluster
    from dequity.pipeline.likelihood import scaled_likelihood as scaled_likelihood
    from dequity.pipeline.projection import project as project
    from dequity.pipeline.weights import gfl_weight as gfl_weight
    from dequity.sources.models import load_model as load_model
    from dequity.store.runs import DequityResults as DequityResults
    from dequity.store.runs import DequityRunConfig as DequityRunConfig


def __dir__() -> list[str]:
    # lazy_loader's own __dir__ lists only the lazy names
    return sorted({*globals(), *__all__})
