"""Where runs stored before the classes moved to :mod:`dequity.store.runs` find them.

A stored run names its config and results classes by full path
(``dequity.runs.DequityRunConfig``); these names keep such runs loadable.

Example::

    from dequity.runs import DequityRunConfig   # the same class as dequity.DequityRunConfig
"""

from dequity.store.runs import DequityResults, DequityRun, DequityRunConfig

__all__ = ["DequityResults", "DequityRun", "DequityRunConfig"]
