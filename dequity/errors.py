"""The one exception type that dequity raises, and what turns a lost database into it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class DequityError(ValueError):
    """Bad input or an impossible request; the message names the fix.

    Example::

        try:
            dequity.gfl_weight(0.5, eta=-1)
        except dequity.DequityError as e:
            print(e)
    """


def rerun_if_disconnected(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a call that writes a run: a lost database becomes a ``DequityError``.

    When the database stays out of reach longer than the driver retries (a
    replica set without a primary, a server gone), the run's writes stop where
    they were; the claim and journal let the next call roll them back or finish
    them. The caller gets one error that says so instead of the driver's.

    Example::

        @rerun_if_disconnected
        def compute_dequity(samples, run_key="dequity", **kwargs): ...
    """

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        from pymongo.errors import ConnectionFailure

        try:
            return function(*args, **kwargs)
        except ConnectionFailure as e:
            raise DequityError(
                f"the database could not be reached mid-run ({type(e).__name__}: "
                f"{_first_clause(e)}); nothing half-written is kept: rerun "
                "once the database is back, and the next call finishes or rolls back "
                "this one"
            ) from e

    return call


def _first_clause(error: Exception) -> str:
    """The driver's message without its topology dump."""
    return str(error).split(", Topology Description")[0].splitlines()[0][:200]
