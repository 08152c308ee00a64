"""Named points in the write path where a test can make the process die.

Setting ``DEQUITY_FAULT_POINT`` to one of :data:`POINTS` (a run's writes),
:data:`DELETE_POINTS` or :data:`RENAME_POINTS` makes the process
exit at once (``os._exit``, no clean-up, like ``SIGKILL``) when it gets there.
Fault-injection tests use it to check that a run killed at any point leaves
the dataset consistent.
"""

from __future__ import annotations

import os

ENV = "DEQUITY_FAULT_POINT"
EXIT_CODE = 86
POINTS = (
    "claimed",  # the run key is claimed, nothing computed yet
    "staged",  # new values are in the staging collection
    "run_saved",  # the new run record is saved but not linked to the dataset
    "linked",  # the dataset points at the new run (the commit point)
    "fields_declared",  # the run's fields are in the dataset schema
    "values_merged",  # the new values are in the samples
    "old_run_deleted",  # the replaced run record is gone
    "done",  # everything but releasing the claim
)
DELETE_POINTS = ("run_unlinked",)  # delete: the record is unlinked, the fields remain
RENAME_POINTS = ("fields_renamed",)  # rename: the fields have their new names, the run not


def fault_point(name: str) -> None:
    """Exit the process at once if ``DEQUITY_FAULT_POINT`` names this point.

    Example::

        fault_point("staged")   # DEQUITY_FAULT_POINT=staged: the process dies here
    """
    if os.environ.get(ENV) == name:
        os._exit(EXIT_CODE)
