"""The one exception type that dequity raises."""

from __future__ import annotations


class DequityError(ValueError):
    """Bad input or an impossible request; the message names the fix.

    Example::

        try:
            dequity.gfl_weight(0.5, eta=-1)
        except dequity.DequityError as e:
            print(e)
    """
