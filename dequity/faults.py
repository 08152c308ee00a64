"""Named points in the write path where a test can make the process die or wait.

Setting ``DEQUITY_FAULT_POINT`` to one of :data:`POINTS` (a run's writes),
:data:`UPDATE_POINTS`, :data:`DELETE_POINTS` or :data:`RENAME_POINTS` makes the process
exit at once (``os._exit``, no clean-up, like ``SIGKILL``) when it gets there.
Fault-injection tests use it to check that a run killed at any point leaves
the dataset consistent. With ``DEQUITY_FAULT_PAUSE`` set to a folder, the
process waits there instead: it creates ``reached`` in the folder and goes on
once ``resume`` appears, so that a test can fail the database over meanwhile.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "DEQUITY_FAULT_POINT"
PAUSE_ENV = "DEQUITY_FAULT_PAUSE"
#: seconds a paused process waits for ``resume`` before it dies
PAUSE_LIMIT = 600
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
UPDATE_POINTS = ("rescaled_one",)  # update: one group of old samples rescaled, not the rest
DELETE_POINTS = ("run_unlinked",)  # delete: the record is unlinked, the fields remain
RENAME_POINTS = ("fields_renamed",)  # rename: the fields have their new names, the run not


def fault_point(name: str) -> None:
    """Exit the process at once (or pause it) if ``DEQUITY_FAULT_POINT`` names this point.

    Example::

        fault_point("staged")   # DEQUITY_FAULT_POINT=staged: the process dies here
    """
    if os.environ.get(ENV) != name:
        return
    folder = os.environ.get(PAUSE_ENV)
    if not folder:
        os._exit(EXIT_CODE)
    (Path(folder) / "reached").touch()
    deadline = time.monotonic() + PAUSE_LIMIT
    while not (Path(folder) / "resume").exists():
        if time.monotonic() > deadline:
            os._exit(EXIT_CODE)
        time.sleep(0.05)
