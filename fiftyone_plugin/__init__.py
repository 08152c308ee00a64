"""FiftyOne plugin ``@dequity/dequity``: compute, inspect and tune dequity in the App.

FiftyOne loads this file under a synthetic module name, so everything is
imported absolutely from the installed ``dequity`` and ``fiftyone_plugin``
packages.
"""

from fiftyone_plugin.operators import OPERATORS
from fiftyone_plugin.panel import DequityPanel


def register(p) -> None:  # noqa: ANN001 (FiftyOne's plugin context)
    """Register every operator and the panel with FiftyOne."""
    for operator in OPERATORS:
        p.register(operator)
    p.register(DequityPanel)
